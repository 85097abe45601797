"""The ``mailseal`` command line (application code, not a library API)."""
