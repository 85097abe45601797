"""Signing keys from the fleet's PostgreSQL store for the milter: one cheap poll, a local cache, no tempfail.

:class:`DatabaseKeySource` is the :class:`~mailseal.keys.source.KeySource`
for a ``store = "postgresql://…"``. What it promises the milter:

* A new active key is picked up within ``key_check_interval``: ``version()``
  is one indexed query (no private key read) on a connection kept per process.
* The database being unreachable never stops signing. ``version()`` raises
  :class:`KeyStoreUnavailableError`; the milter keeps the keys it has, counts
  the failed check, logs the outage once, and the next check reconnects.
  ``load()`` failing keeps each name's previous keys (:meth:`KeySet.keeping`).
* A milter (re)started while the database is down signs with the keys of the
  last successful load, kept in ``cache_file`` when one is configured. The
  cache holds the rows as the database does: private keys sealed with the
  KEK, so it gives nobody more than the database would.

A forked worker never uses its parent's connection (libpq connections cannot
be shared across ``fork``): each process opens its own on first use.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, Final

from mailseal.core.keymaterial import load_private_key
from mailseal.core.keywrap import unseal
from mailseal.errors import KeyStoreError, MailsealError
from mailseal.keys.backends import StoreLocation, describe
from mailseal.keys.files import write_secret_file
from mailseal.keys.kek import read_kek_file
from mailseal.keys.source import (
    STORE_BUSY_TIMEOUT,
    KeySet,
    KeySource,
    SigningKey,
    StoreKeyEntry,
    StoreKeySource,
    no_active_key,
    store_problem,
)
from mailseal.keys.store import KeyStoreUnavailableError, fold_name

__all__ = ["DatabaseKeySource", "store_key_source"]

_log = logging.getLogger(__name__)

MAX_CACHE_BYTES: Final = 4 << 20
"""A cache file larger than this is not ours (a few KB per key)."""


def store_key_source(
    location: StoreLocation,
    entries: Sequence[StoreKeyEntry],
    *,
    kek_file: Path | None = None,
    cache_file: Path | None = None,
) -> KeySource:
    """The key source for the store ``location`` names: a SQLite file or a PostgreSQL database."""
    if isinstance(location, Path):
        return StoreKeySource(location, entries)
    return DatabaseKeySource(location, entries, kek_file=kek_file, cache_file=cache_file)


class DatabaseKeySource:
    """The keys the fleet's database signs each named domain's mail with, cached for outages."""

    def __init__(
        self,
        dsn: str,
        entries: Sequence[StoreKeyEntry],
        *,
        kek_file: Path | None,
        cache_file: Path | None = None,
        timeout: float = STORE_BUSY_TIMEOUT,
    ) -> None:
        """Remember where to look; nothing is read until ``version()`` or ``load()``."""
        self._dsn = dsn
        self._where = describe(dsn)
        self._entries = tuple(entries)
        self._domains = sorted({fold_name(e.domain) for e in self._entries})
        self._kek_file = kek_file
        self._cache_file = cache_file
        self._timeout = timeout
        self._store: Any = None  # a PgKeyStore of this process (typed loosely: psycopg is optional)
        self._pid = 0

    @property
    def entries(self) -> tuple[StoreKeyEntry, ...]:
        """The key table rows that name the store."""
        return self._entries

    @property
    def where(self) -> str:
        """The database, without its password."""
        return self._where

    def __del__(self) -> None:
        self._drop()

    def _open(self) -> Any:
        if self._store is not None and self._pid != os.getpid():
            self._drop()  # forked: the parent's connection is the parent's
        if self._store is None:
            from mailseal.keys.pg_store import PgKeyStore

            self._store = PgKeyStore(
                self._dsn,
                kek_file=self._kek_file,
                readonly=True,
                timeout=self._timeout,
                connect_timeout=max(2.0, self._timeout),
            )
            self._pid = os.getpid()
        return self._store

    def _drop(self) -> None:
        store, self._store = self._store, None
        if store is None:
            return
        with contextlib.suppress(Exception):  # best effort: the connection may be gone already
            if self._pid == os.getpid():
                store.close()
            else:
                store.forget()

    def version(self) -> Hashable:
        """The signing keys' identities (one query); :class:`KeyStoreUnavailableError` when unreachable."""
        if not self._entries:
            return ()
        try:
            marks = self._open().signing_marks(self._domains)
        except ImportError as exc:
            raise KeyStoreUnavailableError(
                f"key store {self._where}: the PostgreSQL driver is missing ({exc})"
            ) from None
        except (MailsealError, OSError) as exc:
            self._drop()
            raise KeyStoreUnavailableError(store_problem(self._where, exc)) from None
        return ("postgresql", marks)

    def load(self) -> KeySet:
        """Each entry's signing keys from the database; from the cache file when the database is unreachable."""
        if not self._entries:
            return KeySet({})
        try:
            found = self._open().signing_keys_of(self._domains)
        except (MailsealError, OSError, ImportError) as exc:
            self._drop()
            problem = store_problem(self._where, exc)
            cached = self._from_cache(problem)
            if cached is not None:
                return cached
            return KeySet({}, dict.fromkeys((e.name for e in self._entries), problem))
        rows = {
            domain: [(k.key_id, k.selector, k.activated_at) for k in keys] for domain, keys in found.items()
        }
        self._write_cache(rows)
        # No connection outlives a load: the milter's supervisor loads, then forks its workers,
        # and each worker's key watch opens its own.
        self._drop()
        return self._keyset({d: [(k.selector, k.key, k.key_id) for k in keys] for d, keys in found.items()})

    def _keyset(self, found: dict[str, list[tuple[str, Any, int]]], origin: str = "") -> KeySet:
        keys: dict[str, tuple[SigningKey, ...]] = {}
        absent: dict[str, str] = {}
        for entry in self._entries:
            chosen = tuple(
                SigningKey(
                    entry.name,
                    fold_name(entry.domain),
                    selector,
                    key,
                    None,
                    f"key store {self._where} (key id {key_id}){origin}",
                )
                for selector, key, key_id in found.get(fold_name(entry.domain), [])
            )
            if chosen:
                keys[entry.name] = chosen
            else:
                absent[entry.name] = no_active_key(self._where, entry.domain)
        return KeySet(keys, {}, absent)

    # -- the cache file: the last good answer, keys still sealed ---------------------------------

    def _write_cache(self, rows: dict[str, list[tuple[int, str, int]]]) -> None:
        if self._cache_file is None or self._store is None:
            return
        try:
            sealed = self._store.sealed_rows([key_id for keys in rows.values() for key_id, _, _ in keys])
            document = {
                "store": self._where,
                "keys": [
                    {
                        "domain": domain,
                        "selector": selector,
                        "id": key_id,
                        "activated_at": activated,
                        "kek_id": sealed[key_id][0],
                        "sealed": base64.b64encode(sealed[key_id][1]).decode("ascii"),
                    }
                    for domain, keys in rows.items()
                    for key_id, selector, activated in keys
                    if key_id in sealed
                ],
            }
            write_secret_file(self._cache_file, json.dumps(document, indent=1).encode())
        except (MailsealError, OSError) as exc:
            _log.warning("cannot write the key cache %s: %s", self._cache_file, exc)

    def _from_cache(self, problem: str) -> KeySet | None:
        if self._cache_file is None:
            return None
        try:
            data = _read_private(self._cache_file)
            document = json.loads(data)
            ring = read_kek_file(self._kek_file) if self._kek_file is not None else None
            if ring is None:
                return None
            found: dict[str, list[tuple[str, Any, int]]] = {}
            for item in document["keys"]:
                domain, selector = str(item["domain"]), str(item["selector"])
                pem = unseal(
                    ring,
                    str(item["kek_id"]),
                    base64.b64decode(item["sealed"]),
                    domain=domain,
                    selector=selector,
                )
                found.setdefault(domain, []).append((selector, load_private_key(pem), int(item["id"])))
        except FileNotFoundError:
            return None
        except (MailsealError, OSError, ValueError, KeyError, TypeError) as exc:
            _log.warning("cannot use the key cache %s: %s", self._cache_file, exc)
            return None
        _log.warning("%s; signing with the keys cached in %s", problem, self._cache_file)
        return self._keyset(found, f", cached in {self._cache_file}")


def _read_private(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if info.st_mode & 0o077:
            raise KeyStoreError(
                f"the key cache {path} is readable by others (mode {info.st_mode & 0o777:04o})"
            )
        if info.st_size > MAX_CACHE_BYTES:
            raise KeyStoreError(f"the key cache {path} is larger than {MAX_CACHE_BYTES} bytes")
        return os.read(fd, MAX_CACHE_BYTES + 1)
    finally:
        os.close(fd)
