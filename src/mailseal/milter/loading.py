"""Reading the configuration and loading its keys: what a server (re)starts from.

A :class:`Loaded` is a checked configuration plus the keys read from its key
source; servers build their :class:`Runtime` from it, and reload by making a
new one (keeping the old one when the new one is bad).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

from mailseal.dns.cache import CachingResolver
from mailseal.dns.interface import KeyResolver
from mailseal.dns.resolver import DnsResolver
from mailseal.keys.fleet_source import store_key_source
from mailseal.keys.source import CombinedKeySource, FileKeySource, KeySet, KeySource
from mailseal.keys.store import KeyStoreUnavailableError
from mailseal.milter.config import Config, load_config
from mailseal.milter.runtime import Runtime

KeySourceFactory = Callable[[Config], KeySource]


def config_key_source(config: Config) -> KeySource:
    """The default: the key table's files, and the key store for its ``store = true`` entries."""
    files = FileKeySource(config.keys)
    if not config.store_keys or config.key_store is None:
        return files
    store = store_key_source(
        config.key_store, config.store_keys, kek_file=config.key_store_kek, cache_file=config.key_store_cache
    )
    return CombinedKeySource([files, store])


def build_runtime(config: Config, keyset: KeySet, generation: int = 1) -> Runtime:
    """The read-only state sessions use, from a checked configuration and its loaded keys."""
    return Runtime(
        routing=config.routing,
        table=config.table(),
        keyset=keyset,
        authserv_id=config.authserv_id,
        sender_source=config.sender_source,
        sign_options=config.sign_options,
        verify_options=config.verify_options,
        failure=config.failure,
        requirements=config.requirements,
        max_header_bytes=config.max_header_bytes,
        max_forged_authres=config.edge.max_forged_authres,
        generation=generation,
    )


def build_resolver(config: Config) -> KeyResolver:
    """A caching DNS resolver with the configured servers and time budget."""
    nameservers = list(config.nameservers) or None
    return CachingResolver(DnsResolver(nameservers, timeout=config.dns_timeout))


@dataclass(frozen=True, slots=True)
class Loaded:
    """A configuration, its key source, the keys loaded from it and the source's version before loading."""

    config: Config
    source: KeySource
    keyset: KeySet
    version: Hashable
    """``source.version()`` taken just before ``keyset`` was loaded: a change made while
    loading is seen by the next check, and a worker forked later from this ``Loaded``
    notices every change since (it compares against this, not against a fresh token)."""

    @classmethod
    def read(cls, config: Config, source: KeySource) -> Loaded:
        """Take the source's version, then load its keys."""
        try:
            version: Hashable = source.version()
        except KeyStoreUnavailableError:  # load() falls back on cached keys; the watch sees it come back
            version = ("unavailable",)
        return cls(config, source, source.load(), version)


def load(path: str, factory: KeySourceFactory = config_key_source) -> Loaded:
    """Read a configuration and load its keys once; raises ConfigError for a bad file."""
    config = load_config(path)
    return Loaded.read(config, factory(config))


def key_problem_lines(loaded: Loaded) -> list[str]:
    """``path:line: key NAME: problem`` for each key that did not load."""
    return [
        f"{_where(loaded, name)}key {name!r} cannot be used: {why}"
        for name, why in loaded.keyset.problems.items()
    ]


def key_absent_lines(loaded: Loaded) -> list[str]:
    """``path:line: key NAME: ...`` for each name whose source has no key for it now (not an error)."""
    return [
        f"{_where(loaded, name)}key {name!r} has no key to sign with now: {why}"
        for name, why in loaded.keyset.absent.items()
    ]


def _where(loaded: Loaded, name: str) -> str:
    """``path:line: `` of the key's entry in the configuration, or nothing when unknown."""
    line = loaded.config.key_lines.get(name)
    return f"{loaded.config.path}:{line}: " if loaded.config.path and line else ""


def signing_summary(keyset: KeySet) -> str:
    """`` signing with example.com/ms2026q2, ...`` for the reload log line (store keys change by themselves)."""
    selectors = sorted({f"{k.domain}/{k.selector}" for keys in keyset.keys.values() for k in keys})
    return f"; signing with {', '.join(selectors)}" if selectors else ""
