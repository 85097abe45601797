"""What only the PostgreSQL store does: sealed keys, a versioned schema, the leader lock, migrate, KEK rotation.

The behaviour both stores share is tested once for both (test_keys_store.py,
test_keys_lifecycle.py, the milter's store tests, all over ``store_backend``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from mailseal.cli.main import main
from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import PrivateKey, generate_private_key
from mailseal.errors import InsecureKeyFileError, KeyStoreError
from mailseal.keys.backends import describe, is_database, open_store, parse_location
from mailseal.keys.kek import add_kek, read_kek_file
from mailseal.keys.lifecycle import records_for
from mailseal.keys.pg_store import SCHEMA_VERSION, PgKeyStore
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import Change, KeyState, KeyStoreBusyError, NewKey
from support.clock import FIXED_NOW
from support.postgres import PostgresServer
from support.stores import fresh_pg_dsn


@pytest.fixture
def dsn(pg_cluster: PostgresServer) -> str:
    return fresh_pg_dsn(pg_cluster)


@pytest.fixture
def store(dsn: str, kek: Path) -> Iterator[PgKeyStore]:
    opened = PgKeyStore(dsn, kek_file=kek)
    yield opened
    opened.close()


def new_key(selector: str = "sel", key: PrivateKey | None = None) -> NewKey:
    key = key or generate_private_key(KeyType.ED25519)
    record, revoked = records_for(key.key_type, key.public_key_b64())
    return NewKey("example.test", selector, key.key_type, key.bits, key.to_pem(), record, revoked, FIXED_NOW)


def raw(dsn: str, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as db:
        return db.execute(sql).fetchall()


def test_private_keys_are_sealed_in_the_table(store: PgKeyStore, dsn: str, kek: Path) -> None:
    key = generate_private_key(KeyType.ED25519)
    entry = store.add(new_key(key=key))
    ((kek_id, sealed),) = raw(dsn, "SELECT kek_id, private_sealed FROM mailseal.keys")
    secret = key.to_pem().splitlines()[1]
    assert isinstance(sealed, bytes) and secret not in sealed and b"PRIVATE" not in sealed
    assert kek_id == read_kek_file(kek).current.id
    assert store.private_key(entry.id).public_key_b64() == key.public_key_b64()


def test_a_host_without_the_kek_cannot_read_or_add_keys(store: PgKeyStore, dsn: str, kek: Path) -> None:
    entry = store.add(new_key())
    other_kek = kek.with_name("other")
    add_kek(other_kek)
    stranger = PgKeyStore(dsn, kek_file=other_kek, readonly=True)
    try:
        with pytest.raises(KeyStoreError, match="which is not in this host's KEK file"):
            stranger.private_key(entry.id)
    finally:
        stranger.close()
    nokek = PgKeyStore(dsn)
    try:
        with pytest.raises(KeyStoreError, match="set kek_file in \\[keys\\]"):
            nokek.add(new_key("two"))
        assert [e.selector for e in nokek.entries()] == ["sel"]  # states need no KEK
    finally:
        nokek.close()


def test_a_sealed_key_copied_onto_another_row_does_not_sign(store: PgKeyStore, dsn: str) -> None:
    one = store.add(new_key("one"))
    two = store.add(new_key("two"))
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute(
            "UPDATE mailseal.keys SET private_sealed = (SELECT private_sealed FROM mailseal.keys WHERE id = %s) "
            "WHERE id = %s",
            (one.id, two.id),
        )
    with pytest.raises(KeyStoreError, match="moved from another key's row"):
        store.private_key(two.id)


def test_kek_file_must_be_private(kek: Path, dsn: str) -> None:
    kek.chmod(0o640)
    store = PgKeyStore(dsn, kek_file=kek)
    try:
        with pytest.raises(InsecureKeyFileError, match=f"fix with: chmod 600 {kek}"):
            store.add(new_key())
    finally:
        store.close()


def test_the_schema_is_versioned_and_a_newer_one_refused(store: PgKeyStore, dsn: str) -> None:
    assert store.schema_version() == SCHEMA_VERSION
    raw(dsn, "UPDATE mailseal.meta SET version = 99 RETURNING version")
    with pytest.raises(
        KeyStoreError, match="schema version 99; this mailseal knows 1 \\(upgrade mailseal\\)"
    ):
        PgKeyStore(dsn)
    with pytest.raises(KeyStoreError, match="schema version 99"):
        PgKeyStore(dsn, readonly=True)


def test_a_reader_never_creates_the_schema(dsn: str) -> None:
    with pytest.raises(KeyStoreError, match="has no mailseal schema"):
        PgKeyStore(dsn, readonly=True)
    assert raw(dsn, "SELECT to_regclass('mailseal.keys') IS NULL") == [(True,)]


def test_hosts_starting_together_create_the_schema_once(dsn: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            PgKeyStore(dsn).close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert raw(dsn, "SELECT version FROM mailseal.meta") == [(SCHEMA_VERSION,)]


def test_the_leader_lock_goes_when_its_holder_is_killed(store: PgKeyStore, dsn: str) -> None:
    holder = subprocess.Popen(  # another host's tick, killed while leading
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from mailseal.keys.pg_store import PgKeyStore
                store = PgKeyStore({dsn!r})
                with store.exclusive():
                    print("leading", flush=True)
                    time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"leading\n"
        busy = pytest.raises(KeyStoreBusyError, match=r"another host is rotating .*held by mailseal .* pid")
        with busy, store.exclusive():
            pass
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    with store.exclusive():  # PostgreSQL ended the dead holder's session, and its lock with it
        pass


def test_a_leader_that_lost_its_connection_stops(store: PgKeyStore, dsn: str) -> None:
    entry = store.add(new_key())
    with store.exclusive():
        raw(
            dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'mailseal %'",
        )
        with pytest.raises(KeyStoreError):
            store.apply([Change.to(entry, state=KeyState.PUBLISHED, published_at=FIXED_NOW)])
        with pytest.raises(KeyStoreError, match="while holding the rotation lock; stopped"):
            store.apply([Change.to(entry, state=KeyState.PUBLISHED, published_at=FIXED_NOW)])
    assert store.entries()[0].state is KeyState.GENERATED  # after the lock: reconnects
    assert store.entries()[0].state is KeyState.GENERATED


def test_an_unreachable_database_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    dsn = f"postgresql://nobody:s3cret@/mailseal?host={tmp_path}"
    with pytest.raises(
        KeyStoreError, match="cannot connect to the key store postgresql://nobody@/mailseal"
    ) as caught:
        open_store(parse_location(dsn), timeout=1)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://nobody:S3C%zzRET@/mailseal?host={tmp}",  # libpq: invalid percent-encoded token: "S3C%zzRET"
        "postgresql://nobody@/mailseal?host={tmp}&password=S3C%zzRET",
        "service=mailseal host={tmp} password=S3C RET",  # libpq: missing "=" after "RET"
    ],
)
def test_libpq_errors_that_quote_the_password_are_not_repeated(tmp_path: Path, dsn: str) -> None:
    with pytest.raises(KeyStoreError, match="cannot connect to the key store") as caught:
        open_store(parse_location(dsn.format(tmp=tmp_path)), timeout=1)
    assert "S3C" not in str(caught.value) and "RET" not in str(caught.value), str(caught.value)


def test_store_locations_and_their_display() -> None:
    assert is_database("postgresql://u@db.example/keys") and is_database("service=mailseal")
    assert is_database("postgres://u@h/d") and not is_database("/var/lib/mailseal/keys.db")
    assert parse_location("keys.db", Path("/etc/mailseal")) == Path("/etc/mailseal/keys.db")
    assert describe("postgresql://signer:pw@db.example:5432/keys?sslmode=verify-full") == (
        "postgresql://signer@db.example:5432/keys?sslmode=verify-full"
    )
    assert "pw" not in describe("postgresql://u@h/d?password=pw")
    assert describe("service=mailseal") == "service=mailseal"


def test_libpq_keyword_pairs_are_a_database_never_a_file_named_after_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = "host=127.0.0.1 port=1 dbname=keys password=SECRETPW connect_timeout=1"
    assert is_database(dsn) and parse_location(dsn) == dsn
    assert "SECRETPW" not in describe(dsn) and "password=***" in describe(dsn)
    monkeypatch.chdir(tmp_path)
    from mailseal.cli.main import main

    assert main(["keys", "list", "--store", dsn]) != 0
    assert "SECRETPW" not in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no file named after the connection string


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u@h/db?sslpassword=SECRET1",  # the passphrase of the client certificate's key
        "postgresql://u@h/db?PASSWORD=SECRET1",
        "postgresql://u@h/db?pass%77ord=SECRET1",
        "service=mailseal host=h password=SECRET1 dbname=keys",
        "service=mailseal password = 'SECRET1 with spaces'",
        "service=mailseal PASSWORD=SECRET1",
        "service=mailseal sslpassword=SECRET1",
        "postgresql://u:SECRET1@[::1/keys",  # not a valid URL: show nothing of it, never raise
    ],
)
def test_no_form_of_a_password_is_displayed(dsn: str) -> None:
    shown = describe(dsn)
    assert "SECRET1" not in shown and "spaces" not in shown, shown


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*args: str) -> tuple[int, str, str]:
        status = main(["keys", *args])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def _sqlite_with_history(path: Path) -> None:
    store = SqliteKeyStore(path)
    try:
        old = store.add(new_key("old"))
        (old,) = store.apply(
            [
                Change.to(
                    old,
                    state=KeyState.ACTIVE,
                    published_at=FIXED_NOW + 1,
                    visible_at=FIXED_NOW + 2,
                    activated_at=FIXED_NOW + 3,
                )
            ]
        )
        store.apply([Change.to(old, state=KeyState.REMOVED, removed_at=FIXED_NOW + 4)])
        new = store.add(new_key("new"))
        (new,) = store.apply(
            [
                Change.to(
                    new,
                    state=KeyState.ACTIVE,
                    published_at=FIXED_NOW + 5,
                    visible_at=FIXED_NOW + 6,
                    activated_at=FIXED_NOW + 7,
                )
            ]
        )
        store.note_error(new.id, "last UPDATE refused")
    finally:
        store.close()


def _snapshot(store: PgKeyStore | SqliteKeyStore) -> list[object]:
    return [
        (
            e.domain,
            e.selector,
            e.state,
            e.record_text,
            e.activated_at,
            e.removed_at,
            e.last_error,
            [(t.at, t.from_state, t.to_state) for t in store.history(e.id)],
            None if e.state is KeyState.REMOVED else store.private_key(e.id).to_pem(),
        )
        for e in store.entries()
    ]


def test_migrate_sqlite_to_postgresql_and_back_keeps_history_and_is_idempotent(
    cli: Cli,
    tmp_path: Path,
    dsn: str,
    kek: Path,
) -> None:
    sqlite_path = tmp_path / "keys.db"
    _sqlite_with_history(sqlite_path)
    status, out, _ = cli("migrate", "--from", str(sqlite_path), "--to", dsn, "--kek-file", str(kek))
    assert status == 0, out
    assert "2 key(s): 2 added, 0 updated, 0 already the same" in out
    status, out, _ = cli("migrate", "--from", str(sqlite_path), "--to", dsn, "--kek-file", str(kek))
    assert "2 key(s): 0 added, 0 updated, 2 already the same" in out  # idempotent
    source = SqliteKeyStore(sqlite_path, readonly=True)
    target = PgKeyStore(dsn, kek_file=kek, readonly=True)
    try:
        assert _snapshot(target) == _snapshot(source)
        assert raw(dsn, "SELECT count(*) FROM mailseal.keys WHERE private_sealed IS NULL") == [(1,)]
    finally:
        source.close()
        target.close()
    back = tmp_path / "back" / "keys.db"
    status, out, _ = cli("migrate", "--from", dsn, "--to", str(back), "--kek-file", str(kek))
    assert status == 0 and "2 added" in out
    first, second = SqliteKeyStore(sqlite_path, readonly=True), SqliteKeyStore(back, readonly=True)
    try:
        assert _snapshot(second) == _snapshot(first)
    finally:
        first.close()
        second.close()


def test_migrate_refuses_a_reused_selector(cli: Cli, tmp_path: Path, dsn: str, kek: Path) -> None:
    sqlite_path = tmp_path / "keys.db"
    _sqlite_with_history(sqlite_path)
    other = PgKeyStore(dsn, kek_file=kek)
    other.add(new_key("new"))  # a different key under the same selector
    other.close()
    status, _, err = cli("migrate", "--from", str(sqlite_path), "--to", dsn, "--kek-file", str(kek))
    assert status == 1 and "as a different key; selectors are never reused" in err


def test_kek_rotation_without_a_moment_nobody_can_sign(cli: Cli, dsn: str, kek: Path, tmp_path: Path) -> None:
    store = PgKeyStore(dsn, kek_file=kek)
    entry = store.add(new_key())
    store.close()
    old_id = read_kek_file(kek).current.id
    common = ("--store", dsn, "--kek-file", str(kek))
    status, out, _ = cli("kek", "new", *common)  # 1. a new KEK first; the old one still opens
    new_id = read_kek_file(kek).current.id
    assert status == 0 and f"new KEK {new_id} first; 1 older kept" in out
    host_b = tmp_path / "host-b-kek"  # another host still on the old file: still signs
    host_b.write_text(f"{read_kek_file(kek).keys[1].to_line()}\n")
    host_b.chmod(0o600)
    status, out, _ = cli("kek", "drop-old", *common)
    assert status == 2 and f"1 key(s) sealed with {old_id}; run `mailseal keys kek reseal` first" in out + _
    status, out, _ = cli("kek", "reseal", *common)  # 2. every row sealed with the new KEK
    assert status == 0 and f"resealed 1 private key(s) with KEK {new_id}" in out
    assert f"KEK {new_id}: 1 private key(s) (first in the KEK file)" in out
    assert f"KEK {old_id}" not in out
    stale = PgKeyStore(dsn, kek_file=host_b, readonly=True)
    try:
        with pytest.raises(
            KeyStoreError, match=f"sealed with KEK {new_id}, which is not in this host's KEK file"
        ):
            stale.private_key(entry.id)  # why the new file goes to every host before the reseal
    finally:
        stale.close()
    status, out, _ = cli("kek", "drop-old", *common)  # 3. the old KEK goes
    assert status == 0 and len(read_kek_file(kek).keys) == 1
    reader = PgKeyStore(dsn, kek_file=kek, readonly=True)
    try:
        assert reader.private_key(entry.id).public_key_b64()
    finally:
        reader.close()


def test_kek_commands_refuse_a_sqlite_store(cli: Cli, tmp_path: Path, kek: Path) -> None:
    status, _, err = cli("kek", "reseal", "--store", str(tmp_path / "keys.db"), "--kek-file", str(kek))
    assert status == 2 and "is a SQLite file: its keys are not sealed" in err


def test_the_documented_roles_sign_and_rotate_with_exactly_their_grants(
    pg_cluster: PostgresServer, dsn: str, kek: Path
) -> None:
    """The GRANTs of docs/keys.md ("A fleet"): the signer reads and signs, cannot write; the rotator ticks."""
    owner = PgKeyStore(dsn, kek_file=kek)  # creates the schema
    entry = owner.add(new_key("sel"))
    owner.apply(
        [
            Change.to(
                entry,
                state=KeyState.ACTIVE,
                published_at=FIXED_NOW,
                visible_at=FIXED_NOW,
                activated_at=FIXED_NOW,
            )
        ]
    )
    owner.close()
    with psycopg.connect(dsn, autocommit=True) as db:
        for role in ("ms_test_rotate", "ms_test_sign"):  # roles are cluster-wide: left by an earlier run?
            if db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                db.execute(f"CREATE ROLE {role} LOGIN")
        for statement in (
            "GRANT USAGE ON SCHEMA mailseal TO ms_test_rotate, ms_test_sign",
            "GRANT SELECT ON mailseal.meta, mailseal.keys TO ms_test_sign",
            "GRANT SELECT ON ALL TABLES IN SCHEMA mailseal TO ms_test_rotate",
            "GRANT INSERT, UPDATE ON mailseal.keys, mailseal.transitions TO ms_test_rotate",
            "GRANT DELETE ON mailseal.transitions TO ms_test_rotate",
        ):
            db.execute(statement)

    def as_role(role: str) -> str:
        return pg_cluster.dsn("keys", user=role)

    signer = PgKeyStore(as_role("ms_test_sign"), kek_file=kek, readonly=True)
    try:
        assert [k.selector for k in signer.signing_keys("example.test")] == ["sel"]
    finally:
        signer.close()
    writer_as_signer = PgKeyStore(as_role("ms_test_sign"), kek_file=kek)
    try:
        with pytest.raises(KeyStoreError, match="permission denied"):
            writer_as_signer.apply([Change.to(entry, state=KeyState.RETIRING, retired_at=FIXED_NOW + 1)])
    finally:
        writer_as_signer.close()
    rotator = PgKeyStore(as_role("ms_test_rotate"), kek_file=kek)
    try:
        with rotator.exclusive():
            second = rotator.add(new_key("two"))
            (current,) = [e for e in rotator.entries() if e.selector == "sel"]
            rotator.apply(
                [
                    Change.to(current, state=KeyState.RETIRING, retired_at=FIXED_NOW + 2),
                    Change.to(
                        second,
                        state=KeyState.ACTIVE,
                        published_at=FIXED_NOW,
                        visible_at=FIXED_NOW,
                        activated_at=FIXED_NOW + 2,
                    ),
                ]
            )
        assert [k.selector for k in rotator.signing_keys("example.test")] == ["two"]
    finally:
        rotator.close()


def test_a_libpq_service_name_names_the_store(
    pg_cluster: PostgresServer, dsn: str, kek: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``store = "service=NAME"``: the connection (and any password) lives in pg_service.conf, not our files."""
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[mailseal-test]\nhost={pg_cluster.root}\ndbname=keys\nuser=mailseal_admin\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    location = parse_location("service=mailseal-test", tmp_path)
    assert location == "service=mailseal-test"
    store = open_store(location, kek_file=kek)
    try:
        entry = store.add(new_key())
        assert store.private_key(entry.id).public_key_b64()
        assert describe(location) in repr(store)
    finally:
        store.close()


def test_a_symlinked_kek_file_is_refused_as_a_symlink(tmp_path: Path) -> None:
    """Issue 8 item 10's key-file rule, for the KEK: not "Too many levels of symbolic links"
    followed by advice to generate a new KEK (which would seal new keys under another one)."""
    real = tmp_path / "kek"
    add_kek(real)
    link = tmp_path / "kek-link"
    link.symlink_to(real)
    with pytest.raises(InsecureKeyFileError, match="is a symlink") as caught:
        read_kek_file(link)
    assert "generate" not in str(caught.value) and "levels" not in str(caught.value)
