"""StoreKeySource and CombinedKeySource: the milter's view of the key store, and every way the store can fail."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mailseal import PrivateKey
from mailseal.core.algorithms import KeyType
from mailseal.errors import UsageError
from mailseal.keys.files import write_private_key
from mailseal.keys.lifecycle import Lifecycle
from mailseal.keys.publish import DnsUpdatePublisher
from mailseal.keys.rotation import Generation
from mailseal.keys.source import CombinedKeySource, FileKeySource, KeyFileEntry, StoreKeyEntry, StoreKeySource
from mailseal.keys.sqlite_store import SqliteKeyStore
from support.keyflow import DOMAIN, POLICIES, POLICY
from support.memdns import FakeClock, MemoryZone

assert POLICY.rotate_every is not None
ROTATE_EVERY = POLICY.rotate_every


@pytest.fixture
def lifecycle(store: SqliteKeyStore, clock: FakeClock) -> Lifecycle:
    zone = MemoryZone()
    publisher = DnsUpdatePublisher(zone)
    return Lifecycle(
        store, publisher_for=lambda _domain: publisher, observer=zone, policies=POLICIES, clock=clock
    )


def activate(lifecycle: Lifecycle, clock: FakeClock, *selectors: str) -> None:
    for selector in selectors:
        lifecycle.generate(Generation(DOMAIN, KeyType.ED25519, 256, selector))
    assert lifecycle.tick().ok
    clock.advance(POLICY.propagation_delay)
    assert lifecycle.tick().ok


def source(path: Path, *names: str, timeout: float = 1.0) -> StoreKeySource:
    return StoreKeySource(
        path, [StoreKeyEntry(name, DOMAIN) for name in names or ("example",)], timeout=timeout
    )


def test_an_entry_gets_every_active_key_of_its_domain(
    store_path: Path, store: SqliteKeyStore, lifecycle: Lifecycle, clock: FakeClock
) -> None:
    lifecycle.generate(Generation(DOMAIN, KeyType.RSA, 2048, "rsa1"))
    activate(lifecycle, clock, "ed1")
    keyset = source(store_path, "example", "alias").load()
    assert keyset.problems == {} and keyset.absent == {}
    for name in ("example", "alias"):  # two names for one domain: both get the keys, under their own name
        keys = keyset.lookup(name)
        assert keys is not None
        assert sorted((k.name, k.domain, k.selector, k.key.key_type) for k in keys) == [
            (name, DOMAIN, "ed1", KeyType.ED25519),
            (name, DOMAIN, "rsa1", KeyType.RSA),
        ]
        assert all(k.algorithm is None and str(store_path) in k.origin for k in keys)


def test_published_keys_do_not_sign_and_a_domain_without_active_key_is_absent_not_a_problem(
    store_path: Path, store: SqliteKeyStore, lifecycle: Lifecycle
) -> None:
    lifecycle.generate(Generation(DOMAIN, KeyType.ED25519, 256, "ed1"))
    assert lifecycle.tick().ok  # published and confirmed, not yet propagated for long enough
    keyset = source(store_path).load()
    assert keyset.lookup("example") is None and keyset.problems == {}
    assert keyset.absent["example"] == (
        f"the key store {store_path} has no active key for {DOMAIN} (see: mailseal keys list {DOMAIN})"
    )
    assert keyset.reason("example") == keyset.absent["example"]


def test_version_changes_exactly_when_the_signing_keys_do(
    store_path: Path, store: SqliteKeyStore, lifecycle: Lifecycle, clock: FakeClock
) -> None:
    watched = source(store_path)
    empty = watched.version()
    lifecycle.generate(Generation(DOMAIN, KeyType.ED25519, 256, "ed1"))
    assert lifecycle.tick().ok
    assert watched.version() == empty  # generated and published: nothing signs yet
    clock.advance(POLICY.propagation_delay)
    assert lifecycle.tick().ok
    active = watched.version()
    assert active != empty
    entry = store.entry(DOMAIN, "ed1")
    assert entry is not None
    store.note_error(entry.id, "a tick noted something")  # a write that changes nothing for signing
    assert lifecycle.tick().ok
    assert watched.version() == active
    clock.advance(ROTATE_EVERY)
    assert lifecycle.tick().ok  # the successor is published, not active
    assert watched.version() == active
    clock.advance(POLICY.propagation_delay)
    assert lifecycle.tick().ok  # the successor signs
    assert watched.version() != active
    assert StoreKeySource(store_path, []).version() == ()


def test_a_missing_store_is_a_problem_of_every_entry(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "keys.db"
    watched = source(missing, "a", "b")
    keyset = watched.load()
    assert keyset.keys == {}
    assert set(keyset.problems) == {"a", "b"}
    assert keyset.problems["a"].startswith(f"cannot open key store {missing}: No such file")
    assert watched.version() == ("error", keyset.problems["a"])
    assert not missing.exists()  # read-only: never created by the milter


def test_a_store_others_may_read_is_refused_with_the_fix(
    store_path: Path, store: SqliteKeyStore, lifecycle: Lifecycle, clock: FakeClock
) -> None:
    activate(lifecycle, clock, "ed1")
    store_path.chmod(0o644)
    problem = source(store_path).load().problems["example"]
    assert f"chmod 600 {store_path}" in problem


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"this is not a database, just text" * 100, "file is not a database"),
        (b"", "is empty or not a mailseal"),
    ],
)
def test_a_corrupt_or_empty_store_is_a_problem(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "keys.db"
    path.write_bytes(content)
    path.chmod(0o600)
    watched = source(path)
    problem = watched.load().problems["example"]
    assert words in problem and str(path) in problem
    assert watched.version() == ("error", problem)


def test_a_locked_store_is_a_problem_until_the_lock_goes(
    store_path: Path, store: SqliteKeyStore, lifecycle: Lifecycle, clock: FakeClock
) -> None:
    activate(lifecycle, clock, "ed1")
    watched = source(store_path, timeout=0.05)
    good = watched.version()
    writer = sqlite3.connect(store_path, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")  # a writer stuck in the middle of a commit
        keyset = watched.load()
        assert "database is locked" in keyset.problems["example"]
        locked = watched.version()
        assert isinstance(locked, tuple) and locked[0] == "error"
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    assert watched.version() == good
    assert watched.load().lookup("example") is not None


def test_an_unusable_private_key_in_the_store_is_a_problem(
    store_path: Path, store: SqliteKeyStore, lifecycle: Lifecycle, clock: FakeClock
) -> None:
    activate(lifecycle, clock, "ed1")
    writer = sqlite3.connect(store_path, isolation_level=None)
    try:
        writer.execute("UPDATE keys SET private_pem = ? WHERE selector = 'ed1'", (b"-----BEGIN junk",))
    finally:
        writer.close()
    assert "cannot load private key" in source(store_path).load().problems["example"]


def test_names_must_be_unique() -> None:
    with pytest.raises(UsageError, match="unique"):
        StoreKeySource("/x", [StoreKeyEntry("a", DOMAIN), StoreKeyEntry("a", "example.org")])


def test_combined_source_merges_files_and_store(
    tmp_path: Path,
    store_path: Path,
    store: SqliteKeyStore,
    lifecycle: Lifecycle,
    clock: FakeClock,
    rsa_key: PrivateKey,
) -> None:
    write_private_key(tmp_path / "f.key", rsa_key)
    files = FileKeySource(
        [
            KeyFileEntry("file", "example.org", "s1", tmp_path / "f.key"),
            KeyFileEntry("gone", "example.org", "s2", tmp_path / "missing.key"),
        ]
    )
    combined = CombinedKeySource([files, source(store_path, "store")])
    keyset = combined.load()
    assert (
        set(keyset.keys) == {"file"} and set(keyset.problems) == {"gone"} and set(keyset.absent) == {"store"}
    )
    before = combined.version()
    activate(lifecycle, clock, "ed1")
    assert combined.version() != before
    assert set(combined.load().keys) == {"file", "store"}
