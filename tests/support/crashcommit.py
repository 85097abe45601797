"""Write to a key store and SIGKILL this very process right before its Nth COMMIT (hot-journal tests).

Usage: ``python -m support.crashcommit STORE KILL_AT``. The connection's page
cache is shrunk to one page, so the changes of the transaction are already in
the database file, with the original pages in the journal, when the process
dies: the state a writer killed mid-commit (or a power loss) leaves behind,
a *hot journal*. :func:`write_sequence` is the writes, one commit each, so
a test can replay them in-process to know the state before every commit.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import generate_private_key
from mailseal.keys.lifecycle import records_for
from mailseal.keys.rotation import Event, move
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import NewKey
from support.clock import FIXED_NOW

DOMAIN = "example.test"
COMMITS = 6


def write_sequence(store: SqliteKeyStore, after_commit: Callable[[], object] = lambda: None) -> None:
    """A new key taken to active (superseding the store's first key), then an error note: one commit each."""
    key = generate_private_key(KeyType.ED25519)
    record, revoked = records_for(key.key_type, key.public_key_b64())
    entry = store.add(
        NewKey(DOMAIN, "second", key.key_type, key.bits, key.to_pem(), record, revoked, FIXED_NOW)
    )
    after_commit()
    for event in (Event.PUBLISH, Event.DNS_SYNCED):
        (entry,) = store.apply(move(entry, event, FIXED_NOW).changes)
        after_commit()
    first = store.entry(DOMAIN, "first")
    assert first is not None
    step = move(entry, Event.PROPAGATED, FIXED_NOW + 3600)
    superseded = move(first, Event.SUPERSEDED, FIXED_NOW + 3600).changes
    entry = store.apply(step.changes + superseded)[0]
    after_commit()
    store.note_error(entry.id, "a problem noted")
    after_commit()
    store.note_error(entry.id, None)
    after_commit()


class _KillBeforeCommit:
    """Stands in for the store's connection; dies with SIGKILL when the Nth COMMIT is due."""

    def __init__(self, db: Any, kill_at: int) -> None:
        self._db = db
        self._left = kill_at

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT":
            self._left -= 1
            if self._left == 0:
                print("killing before COMMIT", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def kill_before_commit(store: SqliteKeyStore, kill_at: int) -> None:
    """Make ``store`` SIGKILL this process right before its ``kill_at``-th COMMIT, pages already written."""
    store._db.execute("PRAGMA cache_size = 1")  # changes reach the file (and the journal) before COMMIT
    store._db = _KillBeforeCommit(store._db, kill_at)  # type: ignore[assignment]


def main(argv: list[str]) -> int:
    store = SqliteKeyStore(argv[0])
    kill_before_commit(store, int(argv[1]))
    write_sequence(store)
    print("completed", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
