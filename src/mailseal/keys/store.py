"""The key store: what it holds per key (KeyEntry, KeyState) and the KeyStore Protocol backends implement.

A key moves through ``generated -> published -> active -> retiring -> revoked
-> removed`` (the legal moves are the table in :mod:`mailseal.keys.rotation`).
Each entry carries, besides its state, the exact TXT text mailseal publishes
for it and the text it publishes once revoked: that exact text is how
mailseal recognises its own records in DNS and never touches anybody else's.

Backends: :class:`mailseal.keys.sqlite_store.SqliteKeyStore` (the embedded
default) and :class:`mailseal.keys.pg_store.PgKeyStore` (PostgreSQL, for a
fleet of hosts); :mod:`mailseal.keys.backends` opens either from a location.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Protocol, runtime_checkable

from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import PrivateKey
from mailseal.errors import KeyStoreError

__all__ = [
    "KEY_COLUMNS",
    "MUTABLE_COLUMNS",
    "Change",
    "KeyEntry",
    "KeyState",
    "KeyStore",
    "KeyStoreBusyError",
    "KeyStoreUnavailableError",
    "NewKey",
    "SealedStore",
    "SigningKey",
    "Transition",
    "entry_from_row",
    "fold_name",
    "mutable_values",
    "transition_time",
]


class KeyState(StrEnum):
    """Where a key is in its life; the order below is the only order a key moves in."""

    GENERATED = "generated"  # key pair exists; nothing in DNS
    PUBLISHED = "published"  # record sent to DNS (or handed to the operator); not signing yet
    ACTIVE = "active"  # every authoritative server serves it: mail is signed with it
    RETIRING = "retiring"  # a successor signs; still published so mail in flight verifies
    REVOKED = "revoked"  # published with an empty p= (RFC 6376 §3.6.1: the key is revoked)
    REMOVED = "removed"  # record deleted, private key destroyed; kept as history


STATE_ORDER: Final = tuple(KeyState)


class KeyStoreBusyError(KeyStoreError):
    """Another process holds the store's tick lock (e.g. an overlapping cron run)."""


class KeyStoreUnavailableError(KeyStoreError):
    """The store cannot be reached now (a database down or unreachable); keep what you have and retry."""

    temporary = True


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One key as the store records it (never the private half: ask the store for that).

    Times are UTC seconds since the epoch. ``confirmed_at`` is when every
    authoritative server was last seen serving what the current state
    publishes (``None`` until then; every state change clears it);
    ``visible_at`` is when the published key was first confirmed everywhere,
    the precondition for ever signing with it.
    """

    id: int
    domain: str
    selector: str
    key_type: KeyType
    bits: int
    state: KeyState
    record_text: str
    revoked_text: str
    created_at: int
    published_at: int | None = None
    visible_at: int | None = None
    activated_at: int | None = None
    retired_at: int | None = None
    revoked_at: int | None = None
    removed_at: int | None = None
    confirmed_at: int | None = None
    last_error: str | None = None

    @property
    def name(self) -> str:
        """The DNS name of the key record (RFC 6376 §3.6.2.1), without the trailing dot."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def lineage(self) -> tuple[str, KeyType]:
        """Keys that succeed one another: one domain, one key type (RSA and Ed25519 rotate apart)."""
        return (self.domain, self.key_type)

    @property
    def wanted_text(self) -> str | None:
        """The TXT text DNS must serve at :attr:`name` in this state (``None``: nothing of ours)."""
        if self.state in (KeyState.PUBLISHED, KeyState.ACTIVE, KeyState.RETIRING):
            return self.record_text
        if self.state is KeyState.REVOKED:
            return self.revoked_text
        return None

    @property
    def unwanted_texts(self) -> tuple[str, ...]:
        """Our TXT texts that must be gone from :attr:`name` in this state."""
        if self.state is KeyState.REVOKED:
            return (self.record_text,)
        if self.state is KeyState.REMOVED:
            return (self.record_text, self.revoked_text)
        return ()

    def __str__(self) -> str:
        return f"{self.name} ({self.key_type}, {self.state})"


KEY_COLUMNS: Final = tuple(f.name for f in dataclasses.fields(KeyEntry))
"""The key table's columns in :class:`KeyEntry`'s field order: what both SQL stores select."""
MUTABLE_COLUMNS: Final = (
    "state",
    "published_at",
    "visible_at",
    "activated_at",
    "retired_at",
    "revoked_at",
    "removed_at",
    "confirmed_at",
    "last_error",
)
"""The columns a transition may change; every other column is fixed when the key is added."""


def mutable_values(entry: KeyEntry) -> list[object]:
    """``entry``'s :data:`MUTABLE_COLUMNS` as SQL parameters, in that order."""
    return [str(entry.state) if c == "state" else getattr(entry, c) for c in MUTABLE_COLUMNS]


def entry_from_row(row: Sequence[Any]) -> KeyEntry:
    """A :class:`KeyEntry` from a row selected as :data:`KEY_COLUMNS` (either SQL store)."""
    return KeyEntry(
        id=int(row[0]),
        domain=row[1],
        selector=row[2],
        key_type=KeyType(row[3]),
        bits=int(row[4]),
        state=KeyState(row[5]),
        record_text=row[6],
        revoked_text=row[7],
        created_at=int(row[8]),
        published_at=_int(row[9]),
        visible_at=_int(row[10]),
        activated_at=_int(row[11]),
        retired_at=_int(row[12]),
        revoked_at=_int(row[13]),
        removed_at=_int(row[14]),
        confirmed_at=_int(row[15]),
        last_error=row[16],
    )


def _int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class NewKey:
    """What ``keys generate`` hands the store: a key pair and the texts it will publish."""

    domain: str
    selector: str
    key_type: KeyType
    bits: int
    private_pem: bytes = field(repr=False)
    record_text: str
    revoked_text: str
    created_at: int


@dataclass(frozen=True, slots=True)
class Change:
    """Replace ``before`` by ``after`` in the store, only if the stored key is still in ``before.state``.

    The check is a compare-and-set: two processes acting on one key cannot
    both move it.
    """

    before: KeyEntry
    after: KeyEntry

    def __post_init__(self) -> None:
        if self.before.id != self.after.id:
            raise KeyStoreError("a Change must keep the key id")

    @classmethod
    def to(cls, entry: KeyEntry, **fields: object) -> Change:
        """A change of ``entry``'s mutable fields (state, times, last_error)."""
        return cls(entry, dataclasses.replace(entry, **fields))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A key the signer may use now: active and confirmed visible in DNS."""

    domain: str
    selector: str
    key: PrivateKey = field(repr=False)
    key_id: int
    activated_at: int


@dataclass(frozen=True, slots=True)
class Transition:
    """One line of a key's history: when it moved from one state to another."""

    key_id: int
    at: int
    from_state: KeyState | None
    to_state: KeyState


class KeyStore(Protocol):
    """What the CLI, the rotation driver and the milter need from a key store.

    Implementations must make :meth:`add` and :meth:`apply` atomic and
    durable before returning (the rotation relies on "state recorded before
    acting"), destroy the private key when a key reaches ``removed``, and
    return from :meth:`signing_keys` only keys in state ``active`` whose
    ``visible_at`` is set.
    """

    def entries(self, domain: str | None = None) -> list[KeyEntry]:
        """Every key (removed ones too, as history), oldest first; only ``domain``'s when given."""
        ...

    def entry(self, domain: str, selector: str) -> KeyEntry | None:
        """The key at ``selector`` of ``domain``, or ``None``."""
        ...

    def add(self, new: NewKey) -> KeyEntry:
        """Insert a key in state ``generated``; :class:`KeyStoreError` if the selector is taken."""
        ...

    def apply(self, changes: Sequence[Change]) -> list[KeyEntry]:
        """Write all ``changes`` in one transaction, or none (:class:`KeyStoreError` on a lost race)."""
        ...

    def note_error(self, key_id: int, message: str | None) -> None:
        """Remember (or clear, with ``None``) the last problem acting on a key, for ``keys list``."""
        ...

    def private_key(self, key_id: int) -> PrivateKey:
        """The private key; :class:`KeyStoreError` once the key was removed."""
        ...

    def signing_keys(self, domain: str) -> list[SigningKey]:
        """The keys to sign ``domain``'s mail with now, newest activation first.

        Only keys in state ``active`` that were confirmed visible at every
        authoritative server. Cheap enough to call per message: it reflects
        changes made by other processes at once (no restart, no reload).
        """
        ...

    def signing_domains(self) -> list[str]:
        """Domains that have at least one key :meth:`signing_keys` would return."""
        ...

    def history(self, key_id: int) -> list[Transition]:
        """The key's state changes, oldest first."""
        ...

    def import_key(self, entry: KeyEntry, private_pem: bytes | None, history: Sequence[Transition]) -> str:
        """Make ``entry`` from another store present here, history included (``keys migrate``).

        Matched by domain and selector; returns ``added``, ``updated`` or
        ``same`` (so a second run changes nothing). :class:`KeyStoreError`
        when the selector holds a different key here.
        """
        ...

    def exclusive(self) -> AbstractContextManager[None]:
        """Hold the tick lock: one rotation driver at a time (:class:`KeyStoreBusyError` if held)."""
        ...

    def close(self) -> None:
        """Release the backend's resources."""
        ...


@runtime_checkable
class SealedStore(Protocol):
    """A store whose private keys are sealed with a host's key-encryption key (the PostgreSQL store)."""

    def reseal(self) -> int:
        """Seal every private key with the KEK file's first key; how many were re-sealed."""
        ...

    def kek_ids(self) -> dict[str, int]:
        """How many private keys each KEK sealed."""
        ...


def fold_name(name: str) -> str:
    """A domain or selector as every store keys it: lower case, no trailing dot."""
    return name.lower().removesuffix(".")


def transition_time(entry: KeyEntry) -> int:
    """The time stamp that goes with the entry's state (the history's ``at``)."""
    stamp = {
        KeyState.GENERATED: entry.created_at,
        KeyState.PUBLISHED: entry.published_at,
        KeyState.ACTIVE: entry.activated_at,
        KeyState.RETIRING: entry.retired_at,
        KeyState.REVOKED: entry.revoked_at,
        KeyState.REMOVED: entry.removed_at,
    }[entry.state]
    return entry.created_at if stamp is None else stamp
