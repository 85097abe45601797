"""Run one ``keys tick`` and SIGKILL this very process at its Nth step point (crash-safety tests).

Usage: ``python -m support.crashtick CONFIG NOW KILL_AT [commit]``. The hook is the
lifecycle's own (called before a step commits, after it commits, and after its
DNS work); SIGKILL allows no cleanup, no ``finally`` and no rollback other than
SQLite's journal or PostgreSQL's rollback of the dead session, as a real crash. When the tick has fewer than KILL_AT points
it finishes and prints ``completed N`` (N: the points it passed).

With ``commit``, the points are the store's COMMITs instead, and the kill
comes right before one with the transaction's pages already in the file (see
:mod:`support.crashcommit`): the tick dies mid-commit and leaves a hot journal.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from mailseal.keys.backends import open_store
from mailseal.keys.config import load_config
from mailseal.keys.lifecycle import lifecycle_from_config
from mailseal.keys.rotation import Step
from mailseal.keys.sqlite_store import SqliteKeyStore
from support.crashcommit import kill_before_commit


def main(argv: list[str]) -> int:
    config_path, now, kill_at = Path(argv[0]), int(argv[1]), int(argv[2])
    config = load_config(config_path)
    store = open_store(config.store, kek_file=config.kek_file)
    passed = 0
    if argv[3:] == ["commit"]:
        assert isinstance(store, SqliteKeyStore), "commit kills are for the SQLite store (its journal)"
        kill_before_commit(store, kill_at)
        kill_at = 0  # the hook below never kills

    def hook(point: str, step: Step) -> None:
        nonlocal passed
        passed += 1
        if passed == kill_at:
            print(f"killing at {point}: {step}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    lifecycle = lifecycle_from_config(config, store, clock=lambda: now, out=sys.stdout, hook=hook)
    report = lifecycle.tick()
    print(f"completed {passed}", flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
