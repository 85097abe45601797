"""The key stores: atomic compare-and-set changes, what the milter reads, the tick lock; SQLite's private file.

Tests that take ``store`` run against both backends (SQLite and PostgreSQL);
the PostgreSQL-only behaviour (sealed keys, schema versions) is in
test_keys_pg_store.py.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import PrivateKey, generate_private_key
from mailseal.errors import InsecureKeyFileError, KeyStoreError
from mailseal.keys.lifecycle import records_for
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import Change, KeyEntry, KeyState, KeyStore, KeyStoreBusyError, NewKey
from support.clock import FIXED_NOW
from support.stores import StoreBackend


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "keys.db"


@pytest.fixture
def store(store_backend: StoreBackend) -> Iterator[KeyStore]:
    opened = store_backend.open()
    yield opened
    opened.close()


@pytest.fixture
def sqlite_store(path: Path) -> Iterator[SqliteKeyStore]:
    opened = SqliteKeyStore(path)
    yield opened
    opened.close()


def new_key(selector: str = "sel", domain: str = "Example.TEST.", key: PrivateKey | None = None) -> NewKey:
    key = key or generate_private_key(KeyType.ED25519)
    record, revoked = records_for(key.key_type, key.public_key_b64())
    return NewKey(domain, selector, key.key_type, key.bits, key.to_pem(), record, revoked, FIXED_NOW)


def activate(store: KeyStore, entry: KeyEntry, *, visible: bool = True) -> KeyEntry:
    (after,) = store.apply(
        [
            Change.to(
                entry,
                state=KeyState.ACTIVE,
                published_at=FIXED_NOW,
                visible_at=FIXED_NOW if visible else None,
                activated_at=FIXED_NOW + 1,
            )
        ]
    )
    return after


def test_new_store_is_private_in_a_private_folder(sqlite_store: KeyStore, path: Path) -> None:
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o007 == 0  # others cannot even list the folder


def test_world_readable_store_is_refused_with_the_fix(sqlite_store: KeyStore, path: Path) -> None:
    path.chmod(0o604)
    with pytest.raises(InsecureKeyFileError, match=rf"mode 0604\); fix with: chmod 600 {path}"):
        SqliteKeyStore(path, readonly=True)


def test_add_folds_names_and_keeps_the_key(store: KeyStore) -> None:
    key = generate_private_key(KeyType.ED25519)
    entry = store.add(new_key("Sel", key=key))
    assert (entry.domain, entry.selector, entry.state) == ("example.test", "sel", KeyState.GENERATED)
    assert entry.name == "sel._domainkey.example.test"
    assert entry.revoked_text == "v=DKIM1; k=ed25519; p="
    assert store.entry("EXAMPLE.test", "SEL") == entry
    assert store.private_key(entry.id).public_key_b64() == key.public_key_b64()
    assert "PRIVATE" not in repr(entry) and "PRIVATE" not in repr(new_key())


def test_selectors_are_never_reused(store: KeyStore) -> None:
    entry = store.add(new_key())
    store.apply([Change.to(entry, state=KeyState.REMOVED, removed_at=FIXED_NOW)])
    with pytest.raises(KeyStoreError, match="never reused"):
        store.add(new_key())


def test_apply_is_compare_and_set_and_all_or_nothing(store: KeyStore) -> None:
    one = store.add(new_key("one"))
    two = store.add(new_key("two"))
    stale = dataclasses.replace(two, state=KeyState.PUBLISHED)  # what another process believed
    with pytest.raises(KeyStoreError, match="another process changed it"):
        store.apply(
            [
                Change.to(one, state=KeyState.PUBLISHED, published_at=FIXED_NOW),
                Change(stale, dataclasses.replace(stale, state=KeyState.ACTIVE)),
            ]
        )
    assert [e.state for e in store.entries()] == [KeyState.GENERATED, KeyState.GENERATED]  # neither written
    with pytest.raises(KeyStoreError, match="keep the key id"):
        Change(one, two)


def test_removal_destroys_the_private_key(store: KeyStore) -> None:
    entry = activate(store, store.add(new_key()))
    store.private_key(entry.id)  # cached
    store.apply([Change.to(entry, state=KeyState.REMOVED, removed_at=FIXED_NOW + 5)])
    with pytest.raises(KeyStoreError, match="destroyed on removal"):
        store.private_key(entry.id)
    assert store.signing_keys("example.test") == []


def test_removal_leaves_no_key_bytes_in_the_sqlite_file(sqlite_store: KeyStore, path: Path) -> None:
    store = sqlite_store
    key = generate_private_key(KeyType.ED25519)
    secret = key.to_pem().splitlines()[1]  # the base64 line that holds the key
    entry = activate(store, store.add(new_key(key=key)))
    assert secret in path.read_bytes()
    store.apply([Change.to(entry, state=KeyState.REMOVED, removed_at=FIXED_NOW + 5)])
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT private_pem FROM keys").fetchall() == [(None,)]
    assert secret not in path.read_bytes()  # secure_delete: not left behind in a free page either


def test_signing_keys_are_active_and_visible_only(store: KeyStore) -> None:
    visible = activate(store, store.add(new_key("visible")))
    activate(store, store.add(new_key("unconfirmed")), visible=False)  # cannot happen via the planner
    store.add(new_key("generated"))
    other = activate(store, store.add(new_key("other", domain="other.test")))
    keys = store.signing_keys("EXAMPLE.TEST.")
    assert [(k.domain, k.selector, k.key_id) for k in keys] == [("example.test", "visible", visible.id)]
    assert keys[0].key.public_key_b64() and "PRIVATE" not in repr(keys[0])
    assert store.signing_domains() == ["example.test", "other.test"]
    assert other.state is KeyState.ACTIVE


def test_signing_keys_see_other_processes_changes_at_once(
    store: KeyStore, store_backend: StoreBackend
) -> None:
    reader = store_backend.open(readonly=True)  # the milter's view
    try:
        assert reader.signing_keys("example.test") == []
        entry = activate(store, store.add(new_key()))
        assert [k.selector for k in reader.signing_keys("example.test")] == ["sel"]
        store.apply([Change.to(entry, state=KeyState.RETIRING, retired_at=FIXED_NOW + 9)])
        assert reader.signing_keys("example.test") == []
        with pytest.raises(KeyStoreError, match="read-only"):
            reader.add(new_key("x"))
    finally:
        reader.close()


def test_history_records_every_state_change(store: KeyStore) -> None:
    entry = activate(store, store.add(new_key()))
    store.apply([Change.to(entry, confirmed_at=FIXED_NOW + 2)])  # no state change: no history line
    assert [(t.from_state, t.to_state, t.at) for t in store.history(entry.id)] == [
        (None, KeyState.GENERATED, FIXED_NOW),
        (KeyState.GENERATED, KeyState.ACTIVE, FIXED_NOW + 1),
    ]


def test_note_error_and_clear(store: KeyStore) -> None:
    entry = store.add(new_key())
    store.note_error(entry.id, "UPDATE refused")
    assert store.entries()[0].last_error == "UPDATE refused"
    store.note_error(entry.id, None)
    assert store.entries()[0].last_error is None


def test_exclusive_lock_is_per_store(store: KeyStore, store_backend: StoreBackend) -> None:
    other = store_backend.open()
    try:
        with store.exclusive(), pytest.raises(KeyStoreBusyError, match="another"), other.exclusive():
            pass
        with other.exclusive():  # released when the holder left
            pass
    finally:
        other.close()


def test_store_from_a_newer_version_is_refused(path: Path) -> None:
    SqliteKeyStore(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(KeyStoreError, match="schema version 99"):
        SqliteKeyStore(path)


def test_threads_share_one_store(store: KeyStore) -> None:
    activate(store, store.add(new_key()))
    failures: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(50):
                assert len(store.signing_keys("example.test")) == 1
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
