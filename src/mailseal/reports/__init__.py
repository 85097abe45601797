"""DMARC aggregate reports: what the world's receivers say about our DKIM signatures.

Not a library API: the ``mailseal reports`` commands are the interface.
One module per job:

- ``model``: the typed values (Report, Record, DkimAuth, ...) and ``Unreadable``.
- ``xmlparse``: bytes -> Report with a hardened, streaming XML parser (the only
  importer of lxml); RFC 7489, DMARCbis (RFC 9990) and the old drafts.
- ``xmlfast``: the same values for the plain shape most reports have, with regular
  expressions; declines anything else, which ``xmlparse`` then reads.
- ``unpack``: what arrives (e-mail, Maildir, mbox, zip, gzip, XML) -> report
  documents, with size caps on every decompression.
- ``store`` / ``sqlite_store``: the ReportStore Protocol and its SQLite backend
  (schema version, migrations, retention, per-day rollups).
- ``ingest``: inputs -> stored, duplicate or quarantined (with the reason), in batched transactions.
- ``summary``: per domain, selector and receiver, joined with the key store.
- ``fetch``: IMAP over TLS, processed mail moved to a folder.
- ``feedback``: what the reports say about a selector (rotation gate, keys check).
- ``metrics`` / ``serve``: Prometheus text and the read-only web page.
"""
