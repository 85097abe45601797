"""``mailseal keys migrate``: copy every key, its state and its history from one store to another.

Used to move a single host's SQLite store into the fleet's PostgreSQL
database (and back). Keys are matched by domain and selector, so running it
again changes nothing, and a run interrupted half-way is finished by the next
one: each key is copied in its own transaction. The rotation lock of both
stores is held, so no tick moves a key while it is being copied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mailseal.errors import KeyStoreError
from mailseal.keys.store import KeyState, KeyStore

__all__ = ["MigrationReport", "migrate"]


@dataclass
class MigrationReport:
    """What a migration did, key by key (``name``, ``added``/``updated``/``same``)."""

    outcomes: list[tuple[str, str]] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        """How many keys had this outcome."""
        return sum(1 for _, o in self.outcomes if o == outcome)


def migrate(source: KeyStore, target: KeyStore) -> MigrationReport:
    """Copy every key of ``source`` (removed ones as history, without a private key) into ``target``."""
    report = MigrationReport()
    with source.exclusive(), target.exclusive():
        for entry in source.entries():
            pem: bytes | None = None
            if entry.state is not KeyState.REMOVED:
                try:
                    pem = source.private_key(entry.id).to_pem()
                except KeyStoreError as exc:
                    raise KeyStoreError(f"cannot copy {entry.name}: {exc}") from None
            outcome = target.import_key(entry, pem, source.history(entry.id))
            report.outcomes.append((entry.name, outcome))
    return report
