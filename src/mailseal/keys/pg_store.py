"""The fleet key store: PostgreSQL through psycopg 3; the only importer of psycopg.

Several hosts share one store: every milter signs with the same keys and one
``keys tick`` at a time rotates them. Behaviour is the SQLite store's
(:mod:`mailseal.keys.sqlite_store`): the same states, history and exact TXT
texts, every write one transaction, compare-and-set on the key's state (the
row is read ``FOR UPDATE``, so two hosts cannot both move a key).

What differs, and why:

* Private keys are sealed with the host's key-encryption key
  (:mod:`mailseal.core.keywrap`): reading the table gives no key.
* The tick lock is a session advisory lock held on the connection that does
  the writes: PostgreSQL drops it the moment the holder's connection ends,
  however the holder died, and a leader that lost its connection cannot write
  through another one (this store never reconnects while it leads).
* The schema lives in the ``mailseal`` schema with its version in
  ``mailseal.meta``; :data:`MIGRATIONS` upgrades it step by step under a
  transaction-scoped advisory lock, so hosts starting together do not race.

psycopg 3 is the maintained PostgreSQL driver (libpq underneath, so a
``service=NAME`` from pg_service.conf, ``.pgpass`` and TLS settings work as
everywhere else in PostgreSQL).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import psycopg
import psycopg.errors

from mailseal.core.keymaterial import PrivateKey, load_private_key
from mailseal.core.keywrap import KekRing, unseal
from mailseal.errors import KeyStoreError
from mailseal.keys.backends import describe
from mailseal.keys.kek import read_kek_file, seal_new
from mailseal.keys.store import (
    KEY_COLUMNS,
    MUTABLE_COLUMNS,
    Change,
    KeyEntry,
    KeyState,
    KeyStoreBusyError,
    KeyStoreUnavailableError,
    NewKey,
    SigningKey,
    Transition,
    entry_from_row,
    fold_name,
    mutable_values,
    transition_time,
)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "TICK_LOCK", "PgKeyStore"]

TICK_LOCK: Final = 0x6D61696C  # "mail": the rotation leader's session advisory lock
_MIGRATE_LOCK: Final = 0x6D736D67  # "msmg": held (per transaction) while the schema is created or upgraded

_STATES: Final = ", ".join(f"'{s}'" for s in KeyState)
MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        "CREATE SCHEMA IF NOT EXISTS mailseal",
        """CREATE TABLE mailseal.meta (
            one      boolean PRIMARY KEY DEFAULT true CHECK (one),
            version  integer NOT NULL
        )""",
        f"""CREATE TABLE mailseal.keys (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            domain          text NOT NULL,
            selector        text NOT NULL,
            key_type        text NOT NULL,
            bits            integer NOT NULL,
            state           text NOT NULL CHECK (state IN ({_STATES})),
            kek_id          text,            -- which key-encryption key sealed private_sealed
            private_sealed  bytea,           -- mailseal.core.keywrap output; NULL once removed
            record_text     text NOT NULL,   -- the exact TXT text we publish: how we know our record
            revoked_text    text NOT NULL,   -- the exact TXT text we publish once revoked (empty p=)
            created_at      bigint NOT NULL,
            published_at    bigint,
            visible_at      bigint,
            activated_at    bigint,
            retired_at      bigint,
            revoked_at      bigint,
            removed_at      bigint,
            confirmed_at    bigint,
            last_error      text,
            UNIQUE (domain, selector),
            CHECK ((kek_id IS NULL) = (private_sealed IS NULL))
        )""",
        "CREATE INDEX keys_by_state ON mailseal.keys (domain, state)",
        """CREATE TABLE mailseal.transitions (
            seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            key_id      bigint NOT NULL REFERENCES mailseal.keys (id),
            at          bigint NOT NULL,
            from_state  text,
            to_state    text NOT NULL
        )""",
        "CREATE INDEX transitions_by_key ON mailseal.transitions (key_id, seq)",
    ),
}
SCHEMA_VERSION: Final = max(MIGRATIONS)

_COLUMNS: Final = ", ".join(KEY_COLUMNS)
_SELECT_KEYS: Final = f"SELECT {_COLUMNS} FROM mailseal.keys"  # noqa: S608 - constant column list
_UPDATE_KEY: Final = (
    "UPDATE mailseal.keys SET state = %s, published_at = %s, visible_at = %s, activated_at = %s, "
    "retired_at = %s, revoked_at = %s, removed_at = %s, confirmed_at = %s, last_error = %s, "
    "kek_id = CASE WHEN %s THEN NULL ELSE kek_id END, "
    "private_sealed = CASE WHEN %s THEN NULL ELSE private_sealed END WHERE id = %s"
)
_INSERT_KEY: Final = (
    "INSERT INTO mailseal.keys (domain, selector, key_type, bits, state, kek_id, "
    "private_sealed, record_text, revoked_text, created_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id"
)
_SIGNING: Final = (
    "SELECT id, domain, selector, activated_at, kek_id, private_sealed FROM mailseal.keys "
    "WHERE domain = ANY(%s) AND state = 'active' AND visible_at IS NOT NULL AND private_sealed IS NOT NULL "
    "ORDER BY domain, activated_at DESC, id DESC"
)


class PgKeyStore:
    """A :class:`~mailseal.keys.store.KeyStore` in a PostgreSQL database shared by a fleet.

    One connection per store object (a lock serialises threads); each process
    opens its own. ``kek_file`` is needed to add keys and to read private
    keys; ``readonly=True`` (the milter) never creates or migrates the schema.
    """

    def __init__(
        self,
        dsn: str,
        *,
        kek_file: Path | None = None,
        readonly: bool = False,
        timeout: float = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        """Connect, then check (``readonly``) or create/upgrade the schema; :class:`KeyStoreError` on failure.

        ``timeout`` bounds every statement and lock wait (seconds);
        ``connect_timeout`` bounds connecting.
        """
        self.dsn = dsn
        self.where = describe(dsn)
        self.kek_file = kek_file
        self.readonly = readonly
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._lock = threading.RLock()
        self._loaded: dict[int, PrivateKey] = {}
        self._leading = False
        self._db: psycopg.Connection[Any] | None = None
        self._connect()
        try:
            if readonly:
                self._check_schema()
            else:
                self._migrate()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"PgKeyStore({self.where!r}, readonly={self.readonly})"

    # -- connection ----------------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        ms = max(1, round(self.timeout * 1000))
        try:
            db = psycopg.connect(
                self.dsn,
                autocommit=True,
                connect_timeout=max(1, round(self.connect_timeout)),
                application_name=f"mailseal {socket.gethostname()[:40]} pid {os.getpid()}",
            )
        except psycopg.Error as exc:
            # libpq's words, without the Python "[Errno N] " psycopg leaves in resolver errors
            why = re.sub(r"\[Errno -?\d+\] ", "", _first_line(exc))
            if isinstance(exc, psycopg.ProgrammingError):  # a malformed connection string: libpq quotes it
                why = "the connection string is malformed (" + _QUOTED.sub('"..."', why) + ")"
                raise KeyStoreError(f"cannot connect to the key store {self.where}: {why}") from None
            # Down, unreachable or refusing now: temporary (exit 75, so cron and the MTA retry).
            raise KeyStoreUnavailableError(f"cannot connect to the key store {self.where}: {why}") from None
        try:
            db.execute(f"SET statement_timeout = {ms}")
            db.execute(f"SET lock_timeout = {ms}")
            db.execute("SET idle_in_transaction_session_timeout = 60000")
        except psycopg.Error as exc:
            db.close()
            raise KeyStoreError(f"key store {self.where}: {_first_line(exc)}") from None
        self._db = db
        return db

    def _conn(self) -> psycopg.Connection[Any]:
        """The live connection; a broken one is replaced, except while leading (the lock went with it)."""
        db = self._db
        if db is not None and not db.closed and not db.broken:
            return db
        if self._leading:
            raise KeyStoreError(
                f"lost the connection to the key store {self.where} while holding the rotation lock; "
                "stopped (another host may lead now)"
            )
        if db is not None:
            db.close()
        return self._connect()

    def _failed(self, exc: psycopg.Error) -> KeyStoreError:
        if isinstance(exc, psycopg.OperationalError) and self._db is not None and self._db.broken:
            self._db.close()
        return KeyStoreError(f"key store {self.where}: {_first_line(exc)}")

    def forget(self) -> None:
        """In a forked child: drop the parent's connection without ending the parent's session.

        Closing would send libpq's goodbye on the socket both processes
        share; the child's copy of the socket is pointed at /dev/null first.
        """
        db, self._db = self._db, None
        if db is None or db.closed:
            return
        with contextlib.suppress(OSError, psycopg.Error):
            null = os.open(os.devnull, os.O_RDWR)
            try:
                os.dup2(null, db.fileno())
            finally:
                os.close(null)
        with contextlib.suppress(psycopg.Error):
            db.close()

    def close(self) -> None:
        """Close the connection (which also releases the rotation lock if held)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- schema --------------------------------------------------------------------------------

    def _version(self, db: psycopg.Connection[Any]) -> int:
        (exists,) = _one(db.execute("SELECT to_regclass('mailseal.meta') IS NOT NULL"))
        if not exists:
            return 0
        row = db.execute("SELECT version FROM mailseal.meta").fetchone()
        return 0 if row is None else int(row[0])

    def _check_schema(self) -> None:
        with self._lock:
            try:
                version = self._version(self._conn())
            except psycopg.Error as exc:
                raise self._failed(exc) from None
        if version != SCHEMA_VERSION:
            what = "has no mailseal schema" if version == 0 else f"has schema version {version}"
            raise KeyStoreError(
                f"key store {self.where} {what}; this mailseal knows {SCHEMA_VERSION} "
                "(run any `mailseal keys` command against it once, as the role that owns the schema)"
            )

    def _migrate(self) -> None:
        with self._lock:
            db = self._conn()
            try:
                with db.transaction():
                    db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
                    version = self._version(db)
                    if version > SCHEMA_VERSION:
                        raise KeyStoreError(
                            f"key store {self.where} has schema version {version}; "
                            f"this mailseal knows {SCHEMA_VERSION} (upgrade mailseal)"
                        )
                    for step in range(version + 1, SCHEMA_VERSION + 1):
                        for statement in MIGRATIONS[step]:
                            db.execute(statement)
                        db.execute(
                            "INSERT INTO mailseal.meta (one, version) VALUES (true, %s) "
                            "ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
                            (step,),
                        )
            except psycopg.Error as exc:
                raise self._failed(exc) from None

    def schema_version(self) -> int:
        """The schema version recorded in the database."""
        with self._lock:
            try:
                return self._version(self._conn())
            except psycopg.Error as exc:
                raise self._failed(exc) from None

    # -- reading -------------------------------------------------------------------------------

    def _select(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._conn().execute(sql, parameters).fetchall()
            except psycopg.Error as exc:
                raise self._failed(exc) from None

    def entries(self, domain: str | None = None) -> list[KeyEntry]:
        """Every key, removed ones included, oldest first; only ``domain``'s when given."""
        if domain is None:
            rows = self._select(_SELECT_KEYS + " ORDER BY created_at, id")
        else:
            rows = self._select(
                _SELECT_KEYS + " WHERE domain = %s ORDER BY created_at, id", (fold_name(domain),)
            )
        return [entry_from_row(row) for row in rows]

    def entry(self, domain: str, selector: str) -> KeyEntry | None:
        """The key at ``selector`` of ``domain``, or ``None``."""
        rows = self._select(
            _SELECT_KEYS + " WHERE domain = %s AND selector = %s", (fold_name(domain), fold_name(selector))
        )
        return entry_from_row(rows[0]) if rows else None

    def history(self, key_id: int) -> list[Transition]:
        """The key's state changes, oldest first."""
        rows = self._select(
            "SELECT key_id, at, from_state, to_state FROM mailseal.transitions WHERE key_id = %s ORDER BY seq",
            (key_id,),
        )
        return [
            Transition(int(k), int(at), None if old is None else KeyState(old), KeyState(new))
            for k, at, old, new in rows
        ]

    def _ring(self) -> KekRing:
        if self.kek_file is None:
            raise KeyStoreError(
                f"the key store {self.where} keeps private keys sealed: set kek_file in [keys] "
                "(the key-encryption key file of this host)"
            )
        return read_kek_file(self.kek_file)

    def _open_sealed(
        self, ring: KekRing, kek_id: str, sealed: bytes, domain: str, selector: str
    ) -> PrivateKey:
        return load_private_key(unseal(ring, kek_id, bytes(sealed), domain=domain, selector=selector))

    def private_key(self, key_id: int) -> PrivateKey:
        """Unseal the private key of ``key_id``; :class:`KeyStoreError` once destroyed, or without the KEK."""
        with self._lock:
            cached = self._loaded.get(key_id)
        if cached is not None:
            return cached
        rows = self._select(
            "SELECT kek_id, private_sealed, domain, selector FROM mailseal.keys WHERE id = %s", (key_id,)
        )
        if not rows:
            raise KeyStoreError(f"no key with id {key_id} in {self.where}")
        kek_id, sealed, domain, selector = rows[0]
        if sealed is None:
            raise KeyStoreError(f"the private key of {selector}._domainkey.{domain} was destroyed on removal")
        key = self._open_sealed(self._ring(), kek_id, sealed, domain, selector)
        with self._lock:
            self._loaded[key_id] = key
        return key

    def signing_keys(self, domain: str) -> list[SigningKey]:
        """Active keys confirmed visible in DNS, newest activation first (one query; keys unsealed once)."""
        return self.signing_keys_of([domain]).get(fold_name(domain), [])

    def signing_keys_of(self, domains: Sequence[str]) -> dict[str, list[SigningKey]]:
        """:meth:`signing_keys` for several domains in one query (what a milter's reload asks)."""
        rows = self._select(_SIGNING, ([fold_name(d) for d in domains],))
        found: dict[str, list[SigningKey]] = {}
        ring: KekRing | None = None
        for key_id, row_domain, selector, activated_at, kek_id, sealed in rows:
            with self._lock:
                key = self._loaded.get(key_id)
            if key is None:
                ring = ring or self._ring()
                key = self._open_sealed(ring, kek_id, sealed, row_domain, selector)
                with self._lock:
                    self._loaded[key_id] = key
            found.setdefault(row_domain, []).append(
                SigningKey(row_domain, selector, key, int(key_id), int(activated_at or 0))
            )
        return found

    def signing_marks(self, domains: Sequence[str]) -> tuple[tuple[str, int, str, int], ...]:
        """``(domain, id, selector, activated_at)`` of every signing key of ``domains``: one cheap query.

        What a milter polls every ``key_check_interval``: it changes exactly
        when :meth:`signing_keys_of` would answer differently, and reads no
        private key.
        """
        rows = self._select(
            "SELECT domain, id, selector, activated_at FROM mailseal.keys WHERE domain = ANY(%s) "
            "AND state = 'active' AND visible_at IS NOT NULL AND private_sealed IS NOT NULL "
            "ORDER BY domain, activated_at DESC, id DESC",
            ([fold_name(d) for d in domains],),
        )
        return tuple((d, int(i), s, int(a or 0)) for d, i, s, a in rows)

    def sealed_rows(self, key_ids: Sequence[int]) -> dict[int, tuple[str, bytes]]:
        """``{id: (kek_id, sealed private key)}`` of these keys, as stored (for a milter's local cache)."""
        rows = self._select(
            "SELECT id, kek_id, private_sealed FROM mailseal.keys WHERE id = ANY(%s) AND private_sealed IS NOT NULL",
            (list(key_ids),),
        )
        return {int(i): (str(k), bytes(b)) for i, k, b in rows}

    def signing_domains(self) -> list[str]:
        """Domains with at least one signing key."""
        rows = self._select(
            "SELECT DISTINCT domain FROM mailseal.keys WHERE state = 'active' AND visible_at IS NOT NULL "
            "ORDER BY domain"
        )
        return [domain for (domain,) in rows]

    # -- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _write(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction: committed on success, rolled back on any error."""
        if self.readonly:
            raise KeyStoreError(f"key store {self.where} was opened read-only")
        with self._lock:
            db = self._conn()
            try:
                with db.transaction():
                    yield db
            except psycopg.Error as exc:
                raise self._failed(exc) from None

    def add(self, new: NewKey) -> KeyEntry:
        """Insert ``new`` in state ``generated`` with its sealed private key, in one transaction."""
        domain, selector = fold_name(new.domain), fold_name(new.selector)
        kek_id, sealed = seal_new(self._ring(), new.private_pem, domain=domain, selector=selector)
        try:
            with self._write() as db:
                taken = db.execute(
                    "SELECT 1 FROM mailseal.keys WHERE domain = %s AND selector = %s", (domain, selector)
                )
                if taken.fetchone() is not None:
                    raise _SelectorTaken
                (key_id,) = _one(
                    db.execute(
                        _INSERT_KEY,
                        (
                            domain,
                            selector,
                            str(new.key_type),
                            new.bits,
                            str(KeyState.GENERATED),
                            kek_id,
                            sealed,
                            new.record_text,
                            new.revoked_text,
                            new.created_at,
                        ),
                    )
                )
                db.execute(
                    "INSERT INTO mailseal.transitions (key_id, at, from_state, to_state) VALUES (%s, %s, NULL, %s)",
                    (key_id, new.created_at, str(KeyState.GENERATED)),
                )
                entry = entry_from_row(_one(db.execute(_SELECT_KEYS + " WHERE id = %s", (key_id,))))
        except (_SelectorTaken, psycopg.errors.UniqueViolation):
            raise KeyStoreError(
                f"selector {selector} of {domain} is already in the key store; selectors are never reused"
            ) from None
        return entry

    def apply(self, changes: Sequence[Change]) -> list[KeyEntry]:
        """Write every change or none; a key whose stored state is not ``before.state`` aborts all."""
        written: list[KeyEntry] = []
        with self._write() as db:
            for change in changes:
                row = db.execute(_SELECT_KEYS + " WHERE id = %s FOR UPDATE", (change.before.id,)).fetchone()
                if row is None:
                    raise KeyStoreError(f"key {change.before} is not in the store")
                current = entry_from_row(row)
                if current.state is not change.before.state:
                    raise KeyStoreError(
                        f"{current.name} is {current.state}, not {change.before.state}: "
                        "another process changed it; run the command again"
                    )
                after = change.after
                values = mutable_values(after)
                removed = after.state is KeyState.REMOVED  # a removed key's private half is destroyed
                db.execute(_UPDATE_KEY, (*values, removed, removed, after.id))
                if after.state is not current.state:
                    db.execute(
                        "INSERT INTO mailseal.transitions (key_id, at, from_state, to_state) "
                        "VALUES (%s, %s, %s, %s)",
                        (after.id, transition_time(after), str(current.state), str(after.state)),
                    )
                written.append(entry_from_row(_one(db.execute(_SELECT_KEYS + " WHERE id = %s", (after.id,)))))
        with self._lock:
            for change in changes:
                if change.after.state is not KeyState.ACTIVE:
                    self._loaded.pop(change.after.id, None)
        return written

    def note_error(self, key_id: int, message: str | None) -> None:
        """Remember the last problem acting on ``key_id`` (``None`` clears it)."""
        with self._write() as db:
            db.execute("UPDATE mailseal.keys SET last_error = %s WHERE id = %s", (message, key_id))

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Lead: the session advisory lock :data:`TICK_LOCK`; :class:`KeyStoreBusyError` when another host has it."""
        with self._lock:
            if self._leading:
                raise KeyStoreBusyError(f"this process already holds the rotation lock of {self.where}")
            try:
                db = self._conn()
                (got,) = _one(db.execute("SELECT pg_try_advisory_lock(%s)", (TICK_LOCK,)))
            except psycopg.Error as exc:
                raise self._failed(exc) from None
            if not got:
                raise KeyStoreBusyError(
                    f"another host is rotating the keys in {self.where} ({self._holder(db)}); "
                    "it does the work, nothing done here"
                )
            self._leading = True
        try:
            yield
        finally:
            with self._lock:
                self._leading = False
                try:
                    db.execute("SELECT pg_advisory_unlock(%s)", (TICK_LOCK,))
                except psycopg.Error:
                    db.close()  # closing the session releases the lock for sure

    def _holder(self, db: psycopg.Connection[Any]) -> str:
        """Who holds the rotation lock, as far as this role may see."""
        try:
            row = db.execute(
                "SELECT a.application_name FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = %s",
                (TICK_LOCK,),
            ).fetchone()
        except psycopg.Error:
            return "holder not visible to this role"
        if row is None or not row[0]:
            return "holder not visible to this role"
        return f"held by {row[0]}"

    # -- fleet operations ----------------------------------------------------------------------

    def reseal(self) -> int:
        """Seal every private key with the KEK file's first key (KEK rotation); the count re-sealed."""
        ring = self._ring()
        count = 0
        with self._write() as db:
            rows = db.execute(
                "SELECT id, domain, selector, kek_id, private_sealed FROM mailseal.keys "
                "WHERE private_sealed IS NOT NULL AND kek_id <> %s FOR UPDATE",
                (ring.current.id,),
            ).fetchall()
            for key_id, domain, selector, kek_id, sealed in rows:
                pem = unseal(ring, kek_id, bytes(sealed), domain=domain, selector=selector)
                new_id, new_sealed = seal_new(ring, pem, domain=domain, selector=selector)
                db.execute(
                    "UPDATE mailseal.keys SET kek_id = %s, private_sealed = %s WHERE id = %s",
                    (new_id, new_sealed, key_id),
                )
                count += 1
        return count

    def kek_ids(self) -> dict[str, int]:
        """How many private keys each KEK sealed (to see when an old KEK can go)."""
        rows = self._select(
            "SELECT kek_id, count(*) FROM mailseal.keys WHERE private_sealed IS NOT NULL GROUP BY kek_id"
        )
        return {str(k): int(n) for k, n in rows}

    def import_key(self, entry: KeyEntry, private_pem: bytes | None, history: Sequence[Transition]) -> str:
        """Make ``entry`` (from another store) present here with its history: ``added``, ``updated`` or ``same``.

        Keys are matched by domain and selector. A key already here with other
        TXT texts is a different key under a reused selector: refused.
        """
        domain, selector = fold_name(entry.domain), fold_name(entry.selector)
        sealed: tuple[str, bytes] | tuple[None, None] = (None, None)
        if private_pem is not None:
            sealed = seal_new(self._ring(), private_pem, domain=domain, selector=selector)
        with self._write() as db:
            row = db.execute(
                _SELECT_KEYS + " WHERE domain = %s AND selector = %s FOR UPDATE", (domain, selector)
            ).fetchone()
            values = mutable_values(entry)
            wanted = [(t.at, t.from_state and str(t.from_state), str(t.to_state)) for t in history]
            if row is None:
                (key_id,) = _one(
                    db.execute(
                        _INSERT_KEY,
                        (
                            domain,
                            selector,
                            str(entry.key_type),
                            entry.bits,
                            str(entry.state),
                            sealed[0],
                            sealed[1],
                            entry.record_text,
                            entry.revoked_text,
                            entry.created_at,
                        ),
                    )
                )
                outcome = "added"
            else:
                here = entry_from_row(row)
                if (here.record_text, here.revoked_text, here.key_type) != (
                    entry.record_text,
                    entry.revoked_text,
                    entry.key_type,
                ):
                    raise KeyStoreError(
                        f"{entry.name} is already in {self.where} as a different key; selectors are never reused"
                    )
                key_id = here.id
                have = [
                    (int(a), f, t)
                    for a, f, t in db.execute(
                        "SELECT at, from_state, to_state FROM mailseal.transitions WHERE key_id = %s ORDER BY seq",
                        (key_id,),
                    ).fetchall()
                ]
                if _comparable(here) == _comparable(entry) and have == wanted:
                    return "same"
                outcome = "updated"
            removed = entry.state is KeyState.REMOVED or private_pem is None
            db.execute(_UPDATE_KEY, (*values, removed, removed, key_id))
            if not removed and row is not None:
                db.execute(
                    "UPDATE mailseal.keys SET kek_id = %s, private_sealed = %s WHERE id = %s",
                    (sealed[0], sealed[1], key_id),
                )
            db.execute("DELETE FROM mailseal.transitions WHERE key_id = %s", (key_id,))
            for at, old, new in wanted:
                db.execute(
                    "INSERT INTO mailseal.transitions (key_id, at, from_state, to_state) VALUES (%s, %s, %s, %s)",
                    (key_id, at, old, new),
                )
        with self._lock:
            self._loaded.pop(int(key_id), None)
        return outcome


class _SelectorTaken(Exception):
    """Internal: the selector is in use (turned into a KeyStoreError after the rollback)."""


def _comparable(entry: KeyEntry) -> tuple[object, ...]:
    return tuple(getattr(entry, c) for c in (*MUTABLE_COLUMNS, "bits", "created_at"))


def _one(cursor: psycopg.Cursor[Any]) -> Any:
    row = cursor.fetchone()
    if row is None:  # pragma: no cover - every caller's query returns a row
        raise KeyStoreError("the key store returned no row")
    return row


_QUOTED = re.compile(r'"[^"]*"?')
"""libpq quotes the piece of the connection string it could not read, a password included."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
