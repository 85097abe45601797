"""The embedded key store: one SQLite file (mode 0600) in the data folder; the only importer of sqlite3.

Private keys live in the database, not in separate files: a key and its state
are written in one transaction (a crash can leave neither an orphan key file
nor a row without its key), the milter needs read access to the store anyway
(so a separate key file would not keep the key from any process that can
sign), and a shared SQL backend for a fleet then distributes keys with their
state. The file is created 0600 (0640 is accepted, for a milter in the store's
group) and refused, with the fix, when others can read it.

The file is also refused when another user owns it or its folder, or when
others may write the folder (they could swap the file, or plant a journal
that SQLite would "roll back" into it).

The rollback journal (not WAL) is kept: ``synchronous=FULL`` makes each
commit durable before the DNS step that follows it, and WAL would need a
reader to create ``-wal``/``-shm`` files, which a milter reading the store
through its group (mode 0640, folder 0750) cannot. A writer killed
mid-commit leaves a *hot journal*, and SQLite refuses every read-only
connection until someone rolls it back ("attempt to write a readonly
database"). A read-only store therefore recovers by itself
(:meth:`SqliteKeyStore._read`): a reader that may write the file rolls the
journal back, exactly as the next writer would; one that may not reads a
private snapshot (the file and its journal copied to a 0700 folder in memory
when ``/dev/shm`` exists, rolled back there, and deleted), retried if a
writer touches the journal meanwhile.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from mailseal.core.keymaterial import PrivateKey, load_private_key
from mailseal.errors import InsecureKeyFileError, KeyStoreError
from mailseal.keys.store import (
    KEY_COLUMNS,
    MUTABLE_COLUMNS,
    Change,
    KeyEntry,
    KeyState,
    KeyStoreBusyError,
    NewKey,
    SigningKey,
    Transition,
    entry_from_row,
    mutable_values,
)
from mailseal.keys.store import fold_name as _fold
from mailseal.keys.store import transition_time as _time_of

__all__ = ["SCHEMA_VERSION", "SqliteKeyStore"]

SCHEMA_VERSION: Final = 1

_log = logging.getLogger(__name__)

_SNAPSHOT_ATTEMPTS: Final = 5
# Memory, so a copy of private keys never reaches a disk; mkdtemp makes a fresh 0700 folder there.
_SNAPSHOT_FOLDER: Final = Path("/dev/shm")  # noqa: S108 - only a parent for mkdtemp

_SCHEMA: Final = (
    """
CREATE TABLE keys (
    id            INTEGER PRIMARY KEY,
    domain        TEXT NOT NULL,
    selector      TEXT NOT NULL,
    key_type      TEXT NOT NULL,
    bits          INTEGER NOT NULL,
    state         TEXT NOT NULL,
    private_pem   BLOB,              -- PKCS#8 PEM, NULL once removed
    record_text   TEXT NOT NULL,     -- the exact TXT text we publish: how we know our record
    revoked_text  TEXT NOT NULL,     -- the exact TXT text we publish once revoked (empty p=)
    created_at    INTEGER NOT NULL,
    published_at  INTEGER,
    visible_at    INTEGER,
    activated_at  INTEGER,
    retired_at    INTEGER,
    revoked_at    INTEGER,
    removed_at    INTEGER,
    confirmed_at  INTEGER,
    last_error    TEXT,
    UNIQUE (domain, selector)
)""",
    "CREATE INDEX keys_by_state ON keys (domain, state)",
    """
CREATE TABLE transitions (
    key_id      INTEGER NOT NULL REFERENCES keys (id),
    at          INTEGER NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL
)""",
)

_SELECT_KEYS: Final = f"SELECT {', '.join(KEY_COLUMNS)} FROM keys"  # noqa: S608 - constant column list
_ALL_KEYS: Final = _SELECT_KEYS + " ORDER BY created_at, id"
_DOMAIN_KEYS: Final = _SELECT_KEYS + " WHERE domain = ? ORDER BY created_at, id"
_ONE_KEY: Final = _SELECT_KEYS + " WHERE domain = ? AND selector = ?"
_KEY_BY_ID: Final = _SELECT_KEYS + " WHERE id = ?"
_UPDATE_KEY: Final = (
    "UPDATE keys SET state = ?, published_at = ?, visible_at = ?, activated_at = ?, retired_at = ?, "
    "revoked_at = ?, removed_at = ?, confirmed_at = ?, last_error = ?, "
    "private_pem = CASE WHEN ? THEN NULL ELSE private_pem END WHERE id = ?"
)


class SqliteKeyStore:
    """A :class:`~mailseal.keys.store.KeyStore` in one SQLite file.

    Safe to share between threads of one process (a lock serialises use of
    the connection); each process, including each forked milter worker,
    opens its own. ``readonly=True`` is for processes that only sign.
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False, timeout: float = 5.0) -> None:
        """Open (and with ``readonly=False`` create) the store at ``path``.

        ``timeout`` is how many seconds a statement waits for another
        process's lock before failing with "database is locked".
        Raises :class:`InsecureKeyFileError` when others may read or write the
        file, and :class:`KeyStoreError` when it cannot be opened.
        """
        self.path = Path(path)
        self.readonly = readonly
        self._timeout_ms = max(0, round(timeout * 1000))
        self._lock = threading.RLock()
        self._loaded: dict[int, PrivateKey] = {}
        if not readonly:
            self._create_file()
        self._check_mode()
        uri = f"{self.path.resolve().as_uri()}?mode={'ro' if readonly else 'rw'}"
        try:
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise KeyStoreError(f"cannot open key store {self.path}: {exc}") from None
        try:
            self._db.execute(f"PRAGMA busy_timeout = {self._timeout_ms}")
            if readonly:  # (a writer's settings only; a reader's first read may meet a hot journal)
                self._check_schema()
            else:
                self._db.execute("PRAGMA synchronous = FULL")
                # A destroyed key's bytes are zeroed, not left behind in free pages.
                self._db.execute("PRAGMA secure_delete = ON")
                self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise KeyStoreError(f"cannot open key store {self.path}: {exc}") from None
        except KeyStoreError:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"SqliteKeyStore({str(self.path)!r}, readonly={self.readonly})"

    def _create_file(self) -> None:
        folder = self.path.parent
        try:
            if not folder.exists():
                folder.mkdir(mode=0o750, parents=True)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except OSError as exc:  # a file where a folder should be, no permission, read-only file system
            where = f"{exc.filename}: " if exc.filename and str(exc.filename) != str(self.path) else ""
            raise KeyStoreError(f"cannot create key store {self.path}: {where}{exc.strerror}") from None

    def _check_mode(self) -> None:
        """Refuse a store others may read, or swap: its mode, its owner, its folder (each with the fix)."""
        try:
            real = self.path.resolve()
            info = real.stat()
            folder = real.parent.stat()
        except OSError as exc:
            raise KeyStoreError(f"cannot open key store {self.path}: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            raise KeyStoreError(f"key store {self.path} is not a regular file")
        if info.st_mode & (stat.S_IRWXO | stat.S_IWGRP | stat.S_IXGRP):
            # Group read (0640) is allowed: a milter running in the store's group reads it to sign.
            raise InsecureKeyFileError(
                f"key store {self.path} holds private keys and others may read or write it "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); fix with: chmod 600 {self.path}"
            )
        me = os.geteuid()
        if not self._trusted_owner(info):
            raise InsecureKeyFileError(
                f"key store {self.path} belongs to uid {info.st_uid}, not to root or to us (uid {me}): "
                f"its owner could replace the keys we sign with; fix with: chown {me} {self.path}"
                + (
                    " (or run as its owner, e.g. [milter] user; or, mode 0640, in its group)"
                    if self.readonly
                    else " (or run this command as its owner)"
                )
            )
        where = real.parent
        if folder.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise InsecureKeyFileError(
                f"the folder {where} of key store {self.path} is writable by "
                f"{'others' if folder.st_mode & stat.S_IWOTH else 'its group'} "
                f"(mode {stat.S_IMODE(folder.st_mode):04o}): they could replace the store or plant a "
                f"journal that rewrites it; fix with: chmod go-w {where} (or move the store to a private folder)"
            )
        if folder.st_uid not in (0, me, info.st_uid):
            raise InsecureKeyFileError(
                f"the folder {where} of key store {self.path} belongs to uid {folder.st_uid}, who could "
                f"replace the store; fix with: chown {info.st_uid} {where} (or move the store)"
            )

    def _trusted_owner(self, info: os.stat_result) -> bool:
        """Root or us; for a reader also the documented group setup (mode 0640, we are in the file's group)."""
        if info.st_uid in (0, os.geteuid()):
            return True
        return self.readonly and info.st_gid in {os.getegid(), *os.getgroups()}

    def _check_schema(self) -> None:
        """A read-only opener cannot create the tables: say so now rather than at the first query."""
        ((version,),) = self._read("PRAGMA user_version")
        if version != SCHEMA_VERSION:
            what = "is empty or not a mailseal key store" if version == 0 else f"has schema version {version}"
            raise KeyStoreError(f"key store {self.path} {what}; this mailseal knows {SCHEMA_VERSION}")
        self._check_tables()

    def _check_tables(self) -> None:
        """Another program's SQLite file (a report store, say) can carry the same user_version."""
        if not self._read("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'keys'"):
            raise KeyStoreError(f"{self.path} is an SQLite file but not a mailseal key store")

    def _migrate(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            self._check_tables()
            return
        if version != 0:
            raise KeyStoreError(
                f"key store {self.path} has schema version {version}; this mailseal knows {SCHEMA_VERSION}"
            )
        self._db.execute("BEGIN IMMEDIATE")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: committed (durably) on success, rolled back on any error."""
        if self.readonly:
            raise KeyStoreError(f"key store {self.path} was opened read-only")
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise KeyStoreError(f"key store {self.path}: {exc}") from None
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise KeyStoreError(f"key store {self.path}: cannot commit: {exc}") from None

    def _select(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._read(sql, parameters)
            except sqlite3.Error as exc:
                raise KeyStoreError(f"key store {self.path}: {exc}") from None

    # -- reading a store a writer left mid-commit ------------------------------------------

    def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        """Run a read; a read-only store that meets a hot journal recovers instead of failing.

        A writer opens read-write and rolls a hot journal back itself; only
        ``mode=ro`` connections fail on one (SQLITE_READONLY_ROLLBACK).
        """
        try:
            return self._db.execute(sql, parameters).fetchall()
        except sqlite3.OperationalError as exc:
            if not (self.readonly and _hot_journal(exc)):
                raise
        if self._roll_back_journal():
            try:
                return self._db.execute(sql, parameters).fetchall()
            except sqlite3.OperationalError as exc:
                if not _hot_journal(exc):  # pragma: no cover - another writer died in between
                    raise
        return self._read_snapshot(sql, parameters)

    def _roll_back_journal(self) -> bool:
        """Roll a hot journal back through a short read-write connection, if this process may write."""
        real = self.path.resolve()
        if not (os.access(real, os.W_OK) and os.access(real.parent, os.W_OK)):
            return False
        try:
            db = sqlite3.connect(f"{real.as_uri()}?mode=rw", uri=True, isolation_level=None)
            try:
                db.execute(f"PRAGMA busy_timeout = {self._timeout_ms}")
                db.execute("PRAGMA user_version").fetchone()  # the first read rolls the journal back
            finally:
                db.close()
        except sqlite3.Error:
            return False
        _log.warning(
            "key store %s: rolled back the journal of a writer that died mid-commit (the last "
            "change of that writer was not made; its next run makes it)",
            self.path,
        )
        return True

    def _read_snapshot(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        """Read a private copy of the store and its hot journal, rolled back; retried while a writer works."""
        real = self.path.resolve()
        journal = real.with_name(real.name + "-journal")
        for _ in range(_SNAPSHOT_ATTEMPTS):
            try:
                before = (_mark(real), _mark(journal))
            except FileNotFoundError:  # rolled back by a writer meanwhile: the store reads again
                try:
                    return self._db.execute(sql, parameters).fetchall()
                except sqlite3.OperationalError as exc:
                    if not _hot_journal(exc):
                        raise
                    continue
            folder = _private_folder()
            try:
                copy = folder / "keys.db"
                try:
                    _copy_private(real, copy)
                    _copy_private(journal, folder / "keys.db-journal")
                except FileNotFoundError:
                    continue  # the journal went away meanwhile: look again
                except OSError as exc:
                    raise KeyStoreError(
                        f"key store {self.path}: a writer died mid-commit, and its journal cannot be "
                        f"read to recover ({exc.strerror}); the next mailseal keys tick recovers it"
                    ) from None
                try:
                    unchanged = (_mark(real), _mark(journal)) == before
                except FileNotFoundError:
                    unchanged = False
                if not unchanged:
                    continue  # a writer rolled back (and perhaps wrote) while we copied
                db = sqlite3.connect(copy, isolation_level=None)
                try:
                    rows = db.execute(sql, parameters).fetchall()
                finally:
                    db.close()
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            if _first_in_a_while(str(real)):  # the milter opens the store every few seconds
                _log.warning(
                    "key store %s: a writer died mid-commit and this process may not roll its journal "
                    "back; reading a private rolled-back copy until the next `mailseal keys tick`",
                    self.path,
                )
            return rows
        raise KeyStoreError(f"key store {self.path}: it kept changing while its journal was recovered")

    def entries(self, domain: str | None = None) -> list[KeyEntry]:
        """Every key, removed ones included, oldest first; only ``domain``'s when given."""
        rows = self._select(_ALL_KEYS) if domain is None else self._select(_DOMAIN_KEYS, (_fold(domain),))
        return [entry_from_row(row) for row in rows]

    def entry(self, domain: str, selector: str) -> KeyEntry | None:
        """The key at ``selector`` of ``domain``, or ``None``."""
        rows = self._select(_ONE_KEY, (_fold(domain), _fold(selector)))
        return entry_from_row(rows[0]) if rows else None

    def _by_id(self, db: sqlite3.Connection, key_id: int) -> KeyEntry | None:
        row = db.execute(_KEY_BY_ID, (key_id,)).fetchone()
        return None if row is None else entry_from_row(row)

    def add(self, new: NewKey) -> KeyEntry:
        """Insert ``new`` in state ``generated`` with its private key, in one transaction."""
        domain, selector = _fold(new.domain), _fold(new.selector)
        with self._write() as db:
            taken = db.execute("SELECT 1 FROM keys WHERE domain = ? AND selector = ?", (domain, selector))
            if taken.fetchone() is not None:
                raise KeyStoreError(
                    f"selector {selector} of {domain} is already in the key store; selectors are never reused"
                )
            cursor = db.execute(
                "INSERT INTO keys (domain, selector, key_type, bits, state, private_pem, record_text, "
                "revoked_text, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    domain,
                    selector,
                    str(new.key_type),
                    new.bits,
                    str(KeyState.GENERATED),
                    new.private_pem,
                    new.record_text,
                    new.revoked_text,
                    new.created_at,
                ),
            )
            key_id = cursor.lastrowid
            if key_id is None:  # pragma: no cover - sqlite always sets it after an INSERT
                raise KeyStoreError("the key store did not return the new key's id")
            db.execute(
                "INSERT INTO transitions (key_id, at, from_state, to_state) VALUES (?, ?, NULL, ?)",
                (key_id, new.created_at, str(KeyState.GENERATED)),
            )
            entry = self._by_id(db, key_id)
        if entry is None:  # pragma: no cover - inserted just above
            raise KeyStoreError("the new key vanished")
        return entry

    def apply(self, changes: Sequence[Change]) -> list[KeyEntry]:
        """Write every change or none; a key whose stored state is not ``before.state`` aborts all."""
        written: list[KeyEntry] = []
        with self._write() as db:
            for change in changes:
                current = self._by_id(db, change.before.id)
                if current is None:
                    raise KeyStoreError(f"key {change.before} is not in the store")
                if current.state is not change.before.state:
                    raise KeyStoreError(
                        f"{current.name} is {current.state}, not {change.before.state}: "
                        "another process changed it; run the command again"
                    )
                after = change.after
                values = mutable_values(after)
                # A removed key's private half is destroyed.
                db.execute(_UPDATE_KEY, (*values, after.state is KeyState.REMOVED, after.id))
                if after.state is not current.state:
                    at = _time_of(after)
                    db.execute(
                        "INSERT INTO transitions (key_id, at, from_state, to_state) VALUES (?, ?, ?, ?)",
                        (after.id, at, str(current.state), str(after.state)),
                    )
                updated = self._by_id(db, after.id)
                if updated is not None:
                    written.append(updated)
        for change in changes:
            if change.after.state is not KeyState.ACTIVE:
                self._loaded.pop(change.after.id, None)
        return written

    def note_error(self, key_id: int, message: str | None) -> None:
        """Remember the last problem acting on ``key_id`` (``None`` clears it)."""
        with self._write() as db:
            db.execute("UPDATE keys SET last_error = ? WHERE id = ?", (message, key_id))

    def private_key(self, key_id: int) -> PrivateKey:
        """Load the private key of ``key_id``; :class:`KeyStoreError` once it was destroyed."""
        with self._lock:
            cached = self._loaded.get(key_id)
        if cached is not None:
            return cached
        rows = self._select("SELECT private_pem, domain, selector FROM keys WHERE id = ?", (key_id,))
        if not rows:
            raise KeyStoreError(f"no key with id {key_id} in {self.path}")
        pem, domain, selector = rows[0]
        if pem is None:
            raise KeyStoreError(f"the private key of {selector}._domainkey.{domain} was destroyed on removal")
        key = load_private_key(bytes(pem))
        with self._lock:
            self._loaded[key_id] = key
        return key

    def signing_keys(self, domain: str) -> list[SigningKey]:
        """Active keys confirmed visible in DNS, newest activation first (a query per call, keys cached)."""
        rows = self._select(
            "SELECT id, domain, selector, activated_at FROM keys WHERE domain = ? AND state = ? "
            "AND visible_at IS NOT NULL AND private_pem IS NOT NULL ORDER BY activated_at DESC, id DESC",
            (_fold(domain), str(KeyState.ACTIVE)),
        )
        return [
            SigningKey(row_domain, selector, self.private_key(key_id), key_id, activated_at or 0)
            for key_id, row_domain, selector, activated_at in rows
        ]

    def signing_domains(self) -> list[str]:
        """Domains with at least one signing key."""
        rows = self._select(
            "SELECT DISTINCT domain FROM keys WHERE state = ? AND visible_at IS NOT NULL ORDER BY domain",
            (str(KeyState.ACTIVE),),
        )
        return [domain for (domain,) in rows]

    def history(self, key_id: int) -> list[Transition]:
        """The key's state changes, oldest first."""
        rows = self._select(
            "SELECT key_id, at, from_state, to_state FROM transitions WHERE key_id = ? ORDER BY rowid",
            (key_id,),
        )
        return [
            Transition(k, at, None if old is None else KeyState(old), KeyState(new))
            for k, at, old, new in rows
        ]

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """An flock on ``<store>.lock``: the kernel releases it when the holder dies, however it dies."""
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise KeyStoreBusyError(
                    f"another mailseal process is working on {self.path} (lock {lock_path}); try again later"
                ) from None
            yield
        finally:
            os.close(fd)

    def import_key(self, entry: KeyEntry, private_pem: bytes | None, history: Sequence[Transition]) -> str:
        """Make ``entry`` (from another store) present here with its history (``keys migrate``).

        Returns ``added``, ``updated`` or ``same``; a key already here with
        other TXT texts is a reused selector: refused. (The PostgreSQL store
        has the same method.)
        """
        domain, selector = _fold(entry.domain), _fold(entry.selector)
        removed = entry.state is KeyState.REMOVED or private_pem is None
        wanted = [
            (t.at, None if t.from_state is None else str(t.from_state), str(t.to_state)) for t in history
        ]
        values = mutable_values(entry)
        with self._write() as db:
            row = db.execute(_ONE_KEY, (domain, selector)).fetchone()
            if row is None:
                cursor = db.execute(
                    "INSERT INTO keys (domain, selector, key_type, bits, state, private_pem, record_text, "
                    "revoked_text, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        domain,
                        selector,
                        str(entry.key_type),
                        entry.bits,
                        str(entry.state),
                        None if removed else private_pem,
                        entry.record_text,
                        entry.revoked_text,
                        entry.created_at,
                    ),
                )
                key_id = cursor.lastrowid
                outcome = "added"
            else:
                here = entry_from_row(row)
                if (here.record_text, here.revoked_text, here.key_type) != (
                    entry.record_text,
                    entry.revoked_text,
                    entry.key_type,
                ):
                    raise KeyStoreError(
                        f"{entry.name} is already in {self.path} as a different key; selectors are never reused"
                    )
                key_id = here.id
                have = db.execute(
                    "SELECT at, from_state, to_state FROM transitions WHERE key_id = ? ORDER BY rowid",
                    (key_id,),
                ).fetchall()
                same = all(
                    getattr(here, c) == getattr(entry, c) for c in (*MUTABLE_COLUMNS, "bits", "created_at")
                )
                if same and [tuple(t) for t in have] == wanted:
                    return "same"
                outcome = "updated"
                db.execute(
                    "UPDATE keys SET private_pem = ? WHERE id = ?", (None if removed else private_pem, key_id)
                )
            db.execute(_UPDATE_KEY, (*values, removed, key_id))
            db.execute("DELETE FROM transitions WHERE key_id = ?", (key_id,))
            db.executemany(
                "INSERT INTO transitions (key_id, at, from_state, to_state) VALUES (?, ?, ?, ?)",
                [(key_id, *t) for t in wanted],
            )
        if key_id is not None:
            self._loaded.pop(key_id, None)
        return outcome


_WARNED: dict[str, float] = {}
_WARN_EVERY: Final = 600.0


def _first_in_a_while(what: str) -> bool:
    """Rate limit: True at most once per ``_WARN_EVERY`` seconds for ``what`` in this process."""
    now = time.monotonic()
    if now - _WARNED.get(what, -_WARN_EVERY) < _WARN_EVERY:
        return False
    _WARNED[what] = now
    return True


def _hot_journal(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_READONLY_ROLLBACK: a read-only connection met the journal of a writer that died."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_READONLY_ROLLBACK


def _mark(path: Path) -> tuple[int, int, int, int]:
    info = path.stat()
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _private_folder() -> Path:
    """A fresh 0700 folder, in memory (``/dev/shm``) when possible."""
    try:
        return Path(tempfile.mkdtemp(prefix="mailseal-store-", dir=_SNAPSHOT_FOLDER))
    except OSError:  # no /dev/shm, or not writable here
        try:
            return Path(tempfile.mkdtemp(prefix="mailseal-store-"))
        except OSError as exc:
            raise KeyStoreError(
                f"no private temporary folder to recover the key store in: {exc.strerror}"
            ) from None


def _copy_private(source: Path, target: Path) -> None:
    """Copy ``source`` to a new 0600 file ``target`` (it holds private keys)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as out, source.open("rb") as data:
        shutil.copyfileobj(data, out)
