"""One exit-status rule for every ``mailseal`` command, printed at the end of each ``--help``.

The rule: 0 the job is done and the answer is yes; 1 the job is done and the
answer is no (or the operation was refused); 2 the job could not start because
of something you gave it (options, a missing, unreadable or unusable file,
key or configuration); 75 nothing is wrong with what you gave, try again later.
For ``verify`` a message's content never gives 2 (but for a header block over
8 MiB, refused unread): an empty or broken message is a verdict (``sign`` exits 2 for a message it cannot sign, e.g. one without From).
"""

from __future__ import annotations

from typing import Final

OK: Final = 0
NO: Final = 1
INPUT: Final = 2
WARN: Final = 3
TRY_LATER: Final = 75
INTERRUPTED: Final = 130

TABLE: Final = """\
exit status (every mailseal command):
  0   done: every message passed, every check passed, the command did its job
  1   done, and the answer is no: a message did not verify, a check failed,
      a DNS UPDATE or store operation was refused
  2   not done: a usage error, or a file, key or configuration you named is
      missing, unreadable or unusable (the one-line error says which and why)
  3   keys check only: no failure, but warnings
  75  not done yet: a temporary problem (DNS timeout or SERVFAIL, the key store
      busy with another tick, a key database unreachable); try again later
  70  a bug in mailseal (the line says what happened; please report it)
  130 interrupted (Ctrl-C)
With several files, mailseal verify reports every file and exits with the
worst status (2, then 1, then 75, then 0)."""

_SEVERITY: Final = {OK: 0, TRY_LATER: 1, NO: 2, INPUT: 3}


def worst(statuses: list[int]) -> int:
    """The status that decides when several messages were checked (2 > 1 > 75 > 0)."""
    return max(statuses, key=lambda status: _SEVERITY.get(status, 4), default=OK)
