"""Where signing keys come from: a small interface the milter reads keys through.

The milter asks a :class:`KeySource` for the current :class:`KeySet` when its
configuration loads, on SIGHUP, and whenever ``version()`` changes (polled
every ``milter.key_check_interval`` seconds). Keys are loaded once per load,
never per message: parsing an RSA PEM costs milliseconds.

* :class:`FileKeySource` reads the key files a configuration names;
* :class:`StoreKeySource` answers a key name with every key the key store
  (:mod:`mailseal.keys.sqlite_store`) currently signs a domain's mail with,
  so a rotation recorded by ``mailseal keys tick`` reaches a running milter
  without a restart;
* :class:`CombinedKeySource` puts several sources behind one key table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from mailseal.core.algorithms import Algorithm
from mailseal.core.keymaterial import PrivateKey
from mailseal.errors import KeyFileError, MailsealError, UsageError
from mailseal.keys.files import read_private_key
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import KeyState, KeyStore

SENDER_DOMAIN = "%"
"""A key domain of ``%`` signs with the sender's own domain (OpenDKIM's KeyTable habit)."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One loaded key and the d=/s=/a= it signs with; ``repr()`` never shows the key."""

    name: str
    domain: str
    selector: str
    key: PrivateKey = field(repr=False)
    algorithm: Algorithm | None = None
    origin: str = ""
    """Where the key came from (a file path, a store id), for log lines."""


@dataclass(frozen=True, slots=True)
class KeySet:
    """The keys by name, and why any named key could not be loaded.

    A name maps to one or more keys: a key file is one key; a store may answer
    a domain's name with all its active keys (RSA and Ed25519).
    """

    keys: Mapping[str, tuple[SigningKey, ...]]
    problems: Mapping[str, str] = field(default_factory=dict)
    """Names that could not be loaded (a missing or unsafe file, an unreadable store), and why.

    On a reload these names keep the keys they had (see :meth:`keeping`);
    every other name takes its new keys: one broken file does not hold back
    a rotation of another key.
    """
    absent: Mapping[str, str] = field(default_factory=dict)
    """Names whose source answered, correctly, that it has no key for them now, and why.

    E.g. a store domain without an active key (not yet activated, or retired
    or revoked). Mail needing them gets ``sign_key_unavailable`` like a
    problem, but a reload is not refused for them: the source is right, and
    keeping the previous keys would go on signing with a key the store retired.
    """

    def keeping(self, previous: KeySet) -> KeySet:
        """These keys, plus ``previous``'s keys for each name that failed to load now.

        A kept name leaves ``problems`` (it still signs); the caller logs the
        problem. Names absent now stay absent: the source is right about them.
        """
        kept = {
            name: previous.keys[name]
            for name in self.problems
            if name in previous.keys and name not in self.keys
        }
        if not kept:
            return self
        problems = {name: why for name, why in self.problems.items() if name not in kept}
        return KeySet({**self.keys, **kept}, problems, self.absent)

    def lookup(self, name: str) -> tuple[SigningKey, ...] | None:
        """The keys named ``name``; None when it is unknown, failed to load or has no key now."""
        return self.keys.get(name)

    def reason(self, name: str) -> str:
        """Why ``name`` has no keys (for the log line of a message that needed it)."""
        return self.problems.get(name) or self.absent.get(name) or "no key of this name is loaded"


@runtime_checkable
class KeySource(Protocol):
    """Anything that can produce the current signing keys."""

    def load(self) -> KeySet:
        """Load every key now. A key that cannot be loaded goes into ``problems``; never raises for it."""
        ...

    def version(self) -> Hashable:
        """A cheap token that changes when ``load()`` would return something different."""
        ...


@dataclass(frozen=True, slots=True)
class KeyFileEntry:
    """A key table row: a name, its d= and s=, optional a=, and the private key file."""

    name: str
    domain: str
    selector: str
    path: Path
    algorithm: Algorithm | None = None


class FileKeySource:
    """Keys from private key files (each must be mode 0600: refused otherwise, with the fix)."""

    def __init__(self, entries: Sequence[KeyFileEntry], *, allow_insecure: bool = False) -> None:
        """Remember the entries; nothing is read until ``load()``."""
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise UsageError("key names must be unique")
        self._entries = tuple(entries)
        self._allow_insecure = allow_insecure

    @property
    def entries(self) -> tuple[KeyFileEntry, ...]:
        """The key table rows, in order."""
        return self._entries

    def load(self) -> KeySet:
        """Read and parse each file once; problems (missing, unsafe, unparsable) are kept per name."""
        keys: dict[str, tuple[SigningKey, ...]] = {}
        problems: dict[str, str] = {}
        for entry in self._entries:
            try:
                key = read_private_key(entry.path, allow_insecure=self._allow_insecure)
            except (KeyFileError, UsageError) as exc:
                problems[entry.name] = str(exc)
                continue
            if entry.algorithm is not None and entry.algorithm.key_type is not key.key_type:
                problems[entry.name] = (
                    f"{entry.path} holds a {key.key_type} key but the key table says {entry.algorithm.name}"
                )
                continue
            keys[entry.name] = (
                SigningKey(entry.name, entry.domain, entry.selector, key, entry.algorithm, str(entry.path)),
            )
        return KeySet(keys, problems)

    def version(self) -> Hashable:
        """Each file's inode, size, mode and modification time (or its error)."""
        marks: list[tuple[str, object]] = []
        for entry in self._entries:
            try:
                info = os.stat(entry.path)
            except OSError as exc:
                marks.append((str(entry.path), exc.errno))
                continue
            marks.append((str(entry.path), (info.st_ino, info.st_size, info.st_mtime_ns, info.st_mode)))
        return tuple(marks)


@dataclass(frozen=True, slots=True)
class StoreKeyEntry:
    """A key table row that names the key store: every key the store signs ``domain``'s mail with."""

    name: str
    domain: str


StoreOpener = Callable[[Path, float], KeyStore]
"""Opens the store read-only: ``(path, busy_timeout_seconds) -> KeyStore``."""

STORE_BUSY_TIMEOUT: Final = 1.0
"""Seconds a read waits for a writer's lock: a tick holds it for milliseconds, and the
milter's event loop must not stall for long behind a stuck one."""


def _open_sqlite(path: Path, timeout: float) -> KeyStore:
    return SqliteKeyStore(path, readonly=True, timeout=timeout)


class StoreKeySource:
    """The keys the store signs each named domain's mail with now (active and confirmed in DNS).

    The store is opened read-only for each :meth:`load` and :meth:`version`
    and closed again: no connection outlives a call, so forked workers never
    share one, and a store file replaced from a backup is read afresh. Every
    failure to read it (missing, unsafe mode, locked for longer than
    ``timeout``, corrupt, an unknown schema) becomes a problem of each name,
    never an exception.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        entries: Sequence[StoreKeyEntry],
        *,
        timeout: float = STORE_BUSY_TIMEOUT,
        opener: StoreOpener = _open_sqlite,
    ) -> None:
        """Remember the store and the entries; nothing is read until ``load()``."""
        names = [e.name for e in entries]
        if len(set(names)) != len(names):
            raise UsageError("key names must be unique")
        self._path = Path(path)
        self._entries = tuple(entries)
        self._timeout = timeout
        self._opener = opener

    @property
    def path(self) -> Path:
        """The key store file."""
        return self._path

    @property
    def entries(self) -> tuple[StoreKeyEntry, ...]:
        """The key table rows that name the store, in order."""
        return self._entries

    def load(self) -> KeySet:
        """Each entry's signing keys; an unreadable store is a problem of every entry."""
        keys: dict[str, tuple[SigningKey, ...]] = {}
        problems: dict[str, str] = {}
        absent: dict[str, str] = {}
        if not self._entries:
            return KeySet(keys)
        try:
            store = self._opener(self._path, self._timeout)
        except (MailsealError, OSError) as exc:
            return KeySet({}, dict.fromkeys((e.name for e in self._entries), store_problem(self._path, exc)))
        try:
            found: dict[str, tuple[SigningKey, ...]] = {}
            for entry in self._entries:
                try:
                    if entry.domain not in found:
                        found[entry.domain] = tuple(
                            SigningKey(
                                entry.name,
                                key.domain,
                                key.selector,
                                key.key,
                                None,
                                f"key store {self._path} (key id {key.key_id})",
                            )
                            for key in store.signing_keys(entry.domain)
                        )
                except (MailsealError, OSError) as exc:
                    problems[entry.name] = store_problem(self._path, exc)
                    continue
                chosen = tuple(_renamed(key, entry.name) for key in found[entry.domain])
                if chosen:
                    keys[entry.name] = chosen
                else:
                    absent[entry.name] = no_active_key(self._path, entry.domain)
        finally:
            store.close()
        return KeySet(keys, problems, absent)

    def version(self) -> Hashable:
        """The identity of every key each domain signs with now, or the error reading the store.

        It changes exactly when :meth:`load` would answer differently: a key
        activated, retired or revoked; not when a tick only notes that DNS is
        still right. One indexed query per domain, no private key parsed.
        """
        if not self._entries:
            return ()
        try:
            store = self._opener(self._path, self._timeout)
        except (MailsealError, OSError) as exc:
            return ("error", store_problem(self._path, exc))
        try:
            marks = []
            for domain in sorted({e.domain for e in self._entries}):
                signing = tuple(
                    (e.id, e.selector, e.activated_at)
                    for e in store.entries(domain)
                    if e.state is KeyState.ACTIVE and e.visible_at is not None
                )
                marks.append((domain, signing))
            return tuple(marks)
        except (MailsealError, OSError) as exc:
            return ("error", store_problem(self._path, exc))
        finally:
            store.close()


def _renamed(key: SigningKey, name: str) -> SigningKey:
    return key if key.name == name else SigningKey(name, key.domain, key.selector, key.key, None, key.origin)


def store_problem(where: Path | str, exc: BaseException) -> str:
    """What went wrong with the store at ``where``, named once (the error may name it already)."""
    text = str(exc)
    return text if str(where) in text else f"key store {where}: {text}"


def no_active_key(where: Path | str, domain: str) -> str:
    """Why a key table entry has nothing to sign with: the store holds no active key for its domain."""
    return f"the key store {where} has no active key for {domain} (see: mailseal keys list {domain})"


class CombinedKeySource:
    """Several key sources behind one key table (key names must not repeat across them)."""

    def __init__(self, sources: Sequence[KeySource]) -> None:
        """Load from ``sources`` in order."""
        self._sources = tuple(sources)

    @property
    def sources(self) -> tuple[KeySource, ...]:
        """The sources, in order."""
        return self._sources

    def load(self) -> KeySet:
        """Every source's keys, problems and absences in one set."""
        keys: dict[str, tuple[SigningKey, ...]] = {}
        problems: dict[str, str] = {}
        absent: dict[str, str] = {}
        for source in self._sources:
            loaded = source.load()
            keys.update(loaded.keys)
            problems.update(loaded.problems)
            absent.update(loaded.absent)
        return KeySet(keys, problems, absent)

    def version(self) -> Hashable:
        """Every source's change token."""
        return tuple(source.version() for source in self._sources)
