"""Run ``mailseal reports ingest`` and SIGKILL this very process at a chosen point of a batch.

Usage: ``python -m support.crashingest STORE KILL_AT WHEN FILE|DIR ...`` where
WHEN is ``release`` (die right before the KILL_AT-th report's savepoint is
released: mid-batch, earlier reports of the batch already written) or
``commit`` (die right before the KILL_AT-th batch COMMIT). Batches are made
small (``BATCH_REPORTS = 3``, no time bound) so a run has several, of 3 reports each. The page cache is one page,
so the batch's changes have reached the WAL file when the process dies.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

import mailseal.reports.ingest
from mailseal.cli.main import main as cli_main
from mailseal.reports.sqlite_store import SqliteReportStore
from support.clock import FIXED_NOW

BATCH = 3


class _KillAt:
    """Stands in for the store's connection; dies with SIGKILL when the chosen statement is due."""

    def __init__(self, db: Any, statement: str, kill_at: int) -> None:
        self._db = db
        self._statement = statement
        self._left = kill_at

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == self._statement:
            self._left -= 1
            if self._left == 0:
                print(f"killing before {sql}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def main(argv: list[str]) -> int:
    store_path, kill_at, when, *inputs = argv
    statement = {"release": "RELEASE report", "commit": "COMMIT"}[when]
    setattr(mailseal.reports.ingest, "BATCH_REPORTS", BATCH)  # noqa: B010 - a Final, small for this run
    setattr(mailseal.reports.ingest, "BATCH_SECONDS", 3600.0)  # noqa: B010 - batches of exactly BATCH, however slow the machine
    opened = SqliteReportStore.__init__

    def init(self: SqliteReportStore, *args: Any, **kwargs: Any) -> None:
        opened(self, *args, **kwargs)
        self._db.execute("PRAGMA cache_size = 1")
        self._db = _KillAt(self._db, statement, int(kill_at))  # type: ignore[assignment]

    SqliteReportStore.__init__ = init  # type: ignore[method-assign]
    return cli_main(["reports", "ingest", "--store", store_path, "--now", str(FIXED_NOW), *inputs])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
