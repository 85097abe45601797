"""The mail filter: ``mailseal milter`` beside Postfix or Sendmail (application code, not a library API).

``codec`` speaks the milter protocol, ``session`` runs one connection without
I/O, ``server`` owns sockets, worker processes and signals; ``config`` reads
the TOML file, ``signing_table`` and ``routing`` decide, ``actions`` holds the
failure policy.
"""
