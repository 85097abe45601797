"""The mail filter: ``mailseal milter`` beside Postfix or Sendmail (application code, not a library API).

One file, one job (one reason to change):

* ``codec`` -- the milter wire protocol, bytes to events and replies to bytes.
* ``session`` -- one connection's decisions, without I/O.
* ``config`` -- reading and checking the TOML file; ``signing_table``,
  ``routing`` and ``actions`` -- what to sign with, which way mail goes, the
  failure policy.
* ``loading`` -- a checked configuration plus its loaded keys (``Loaded``),
  the runtime and resolver built from them.
* ``server`` -- the lifecycle of one event loop: accept, reload, key watch,
  graceful stop.
* ``connection`` -- one MTA connection: reading, back-pressure, deadlines,
  replies.
* ``logline`` -- the per-message log line and the escaping of what it quotes.
* ``sockets`` -- binding the listening sockets, the privilege drop.
* ``supervisor`` -- the parent of forked workers: signals, replacing dead
  workers.
* ``metrics`` / ``metrics_http`` -- the counters, and the HTTP endpoint that
  serves them.
* ``process`` -- ``mailseal milter`` itself: bind, drop privileges, load, serve.
"""
