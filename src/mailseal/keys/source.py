"""Where signing keys come from: a small interface the milter reads keys through.

The milter asks a :class:`KeySource` for the current :class:`KeySet` when its
configuration loads, on SIGHUP, and whenever ``version()`` changes (polled).
Keys are loaded once per load, never per message: parsing an RSA PEM costs
milliseconds. :class:`FileKeySource` reads the key files a configuration
names; a key store (issue 5) can implement the same two methods and return
its active keys without the milter changing.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from mailseal.core.algorithms import Algorithm
from mailseal.core.keymaterial import PrivateKey
from mailseal.errors import KeyFileError, UsageError
from mailseal.keys.files import read_private_key

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

    def lookup(self, name: str) -> tuple[SigningKey, ...] | None:
        """The keys named ``name``; None when it is unknown or failed to load."""
        return self.keys.get(name)


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
