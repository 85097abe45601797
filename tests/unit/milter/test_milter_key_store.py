"""The milter's key table reads the key store: a rotation reaches the running milter, no restart, no SIGHUP.

The key lifecycle runs as ``mailseal keys tick`` would (the real ``Lifecycle``
and store -- SQLite and PostgreSQL both, by the ``store_backend`` fixture --, an
in-memory zone, a clock moved by hand); the milter is a
real ``MilterServer`` on a socket, driven by the scripted MTA. Mail it signs
is verified against what the zone serves at that moment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailseal import verify_sync
from mailseal.core.algorithms import KeyType
from mailseal.core.results import DKIMResult, Reason
from mailseal.keys.lifecycle import Lifecycle
from mailseal.keys.publish import DnsUpdatePublisher
from mailseal.keys.rotation import Event, Generation
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import KeyStore
from mailseal.milter.loading import load
from support.keyflow import DOMAIN, POLICIES, POLICY
from support.memdns import FakeClock, MemoryZone
from support.milter_harness import ServerThread, toml_string
from support.milter_store import (
    loaded_selectors,
    send,
    signatures,
    wait_until,
    write_store_config,
    zone_resolver,
)
from support.stores import StoreBackend

assert POLICY.rotate_every is not None
ROTATE_EVERY = POLICY.rotate_every  # 2026-01-01T00:00:00Z
PASS = (DKIMResult.PASS, None)
REVOKED = (DKIMResult.PERMERROR, Reason.KEY_REVOKED)


@pytest.fixture
def zone() -> MemoryZone:
    """One secondary is enough here (tests/unit/conftest.py's zone has two)."""
    return MemoryZone(secondaries=1)


@pytest.fixture
def store(store_backend: StoreBackend) -> Iterator[KeyStore]:
    """The store on each backend (SQLite, PostgreSQL): overrides the shared SQLite-only one."""
    opened = store_backend.open()
    yield opened
    opened.close()


@pytest.fixture
def lifecycle(store: KeyStore, zone: MemoryZone, clock: FakeClock) -> Lifecycle:
    publisher = DnsUpdatePublisher(zone)
    return Lifecycle(
        store, publisher_for=lambda _domain: publisher, observer=zone, policies=POLICIES, clock=clock
    )


def activate(lifecycle: Lifecycle, clock: FakeClock, *generations: Generation) -> None:
    """``keys generate`` each, then the two ticks that publish them and (an hour later) activate them."""
    for generation in generations:
        lifecycle.generate(generation)
    assert lifecycle.tick().ok
    clock.advance(POLICY.propagation_delay)
    assert lifecycle.tick().ok


def config_for(tmp_path: Path, where: StoreBackend | Path, extra: str = "") -> Path:
    """The milter's configuration for a store: a backend's (file or database, with its KEK) or a path."""
    if isinstance(where, Path):
        return write_store_config(tmp_path / "milter.toml", where, DOMAIN, extra=extra)
    return write_store_config(
        tmp_path / "milter.toml", where.location, DOMAIN, extra=extra, kek_file=where.kek_file
    )


def start(tmp_path: Path, where: StoreBackend | Path, clock: FakeClock) -> ServerThread:
    path = config_for(tmp_path, where)
    return ServerThread(load(str(path)), clock=lambda: float(clock.now), config_path=str(path))


def verdicts(message: bytes, zone: MemoryZone, now: int) -> dict[str, tuple[DKIMResult, Reason | None]]:
    report = verify_sync(message, resolver=zone_resolver(zone), now=now)
    return {s.selector or "?": (s.result, s.reason) for s in report.signatures}


def test_a_running_milter_follows_a_rotation_in_the_store(
    tmp_path: Path,
    store_backend: StoreBackend,
    store: KeyStore,
    lifecycle: Lifecycle,
    zone: MemoryZone,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "mailseal")
    activate(
        lifecycle,
        clock,
        Generation(DOMAIN, KeyType.ED25519, 256, "ed1"),
        Generation(DOMAIN, KeyType.RSA, 2048, "rsa1"),
    )
    with start(tmp_path, store_backend, clock) as running:
        server = running.server
        # One store entry, every active key of the domain: an Ed25519 and an RSA signature.
        result, old_mail = send(running)
        assert signatures(result) == {("ed1", "ed25519-sha256"), ("rsa1", "rsa-sha256")}

        clock.advance(ROTATE_EVERY)
        assert lifecycle.tick().ok  # successors generated and published: they do not sign yet
        result, _ = send(running)
        assert {s for s, _ in signatures(result)} == {"ed1", "rsa1"}

        clock.advance(POLICY.propagation_delay)
        assert lifecycle.tick().ok  # successors active; ed1 and rsa1 retiring
        new = {key.selector for key in store.signing_keys(DOMAIN)}
        assert len(new) == 2 and new.isdisjoint({"ed1", "rsa1"})
        assert wait_until(lambda: loaded_selectors(running) == new)
        result, new_mail = send(running)
        assert {s for s, _ in signatures(result)} == new
        assert {a for _, a in signatures(result)} == {"ed25519-sha256", "rsa-sha256"}
        assert running.server is server  # the same server, never restarted
        assert server.runtime.generation == 2  # one reload, of the keys, by the key watch

        # Grace: mail signed before the rotation still verifies, and so does the new mail.
        assert verdicts(old_mail, zone, clock.now) == {"ed1": PASS, "rsa1": PASS}
        assert set(verdicts(new_mail, zone, clock.now).values()) == {PASS}

        clock.advance(POLICY.grace)
        assert lifecycle.tick().ok  # grace over: the old keys are revoked (empty p=)
        assert verdicts(old_mail, zone, clock.now) == {"ed1": REVOKED, "rsa1": REVOKED}
        assert set(verdicts(new_mail, zone, clock.now).values()) == {PASS}
        result, _ = send(running)
        assert {s for s, _ in signatures(result)} == new
    reloads = [r.getMessage() for r in caplog.records if "signing keys changed" in r.getMessage()]
    assert len(reloads) == 1


def test_mail_tempfails_until_the_first_key_is_active_then_it_is_signed(
    tmp_path: Path, store_backend: StoreBackend, store: KeyStore, lifecycle: Lifecycle, clock: FakeClock
) -> None:
    lifecycle.generate(Generation(DOMAIN, KeyType.ED25519, 256, "ed1"))
    with start(tmp_path, store_backend, clock) as running:
        assert "no active key for example.test" in running.server.runtime.keyset.absent["example"]
        result, _ = send(running)
        assert result.verdict == "tempfail"  # on_failure.sign_key_unavailable, by default
        assert result.text.startswith("451 4.3.0 mailseal: the signing key for example.test is unavailable")
        assert lifecycle.tick().ok  # published: still nothing to sign with
        clock.advance(POLICY.propagation_delay)
        assert lifecycle.tick().ok  # active
        assert wait_until(lambda: loaded_selectors(running) == {"ed1"})
        result, _ = send(running)
    assert signatures(result) == {("ed1", "ed25519-sha256")}


def test_a_revoked_key_stops_signing_at_once_even_when_it_was_the_only_one(
    tmp_path: Path, store_backend: StoreBackend, store: KeyStore, lifecycle: Lifecycle, clock: FakeClock
) -> None:
    activate(lifecycle, clock, Generation(DOMAIN, KeyType.ED25519, 256, "ed1"))
    with start(tmp_path, store_backend, clock) as running:
        assert signatures(send(running)[0]) == {("ed1", "ed25519-sha256")}
        entry = store.entry(DOMAIN, "ed1")
        assert entry is not None
        assert lifecycle.request(entry, Event.REVOKE).ok  # `keys retire --revoke --force`: compromised
        # The store has no key for the domain now: that is applied, not refused like a broken store.
        assert wait_until(lambda: "example" in running.server.runtime.keyset.absent)
        result, _ = send(running)
    assert result.verdict == "tempfail"
    assert not result.inserted("DKIM-Signature")


def test_a_missing_store_tempfails_and_is_picked_up_once_it_exists(
    tmp_path: Path, zone: MemoryZone, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store_path = tmp_path / "later" / "keys.db"
    with start(tmp_path, store_path, clock) as running:
        problem = running.server.runtime.keyset.problems["example"]
        assert problem.startswith(f"cannot open key store {store_path}")
        result, _ = send(running)
        assert result.verdict == "tempfail"
        assert any(
            "signing key 'example' for example.test is unavailable" in r.getMessage() for r in caplog.records
        )
        store = SqliteKeyStore(store_path)
        try:
            publisher = DnsUpdatePublisher(zone)
            lifecycle = Lifecycle(
                store, publisher_for=lambda _d: publisher, observer=zone, policies=POLICIES, clock=clock
            )
            activate(lifecycle, clock, Generation(DOMAIN, KeyType.ED25519, 256, "ed1"))
        finally:
            store.close()
        assert wait_until(lambda: loaded_selectors(running) == {"ed1"})
        result, _ = send(running)
    assert signatures(result) == {("ed1", "ed25519-sha256")}


def test_a_store_that_becomes_unreadable_keeps_the_running_keys(
    tmp_path: Path, store_path: Path, zone: MemoryZone, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteKeyStore(store_path)
    publisher = DnsUpdatePublisher(zone)
    lifecycle = Lifecycle(
        store, publisher_for=lambda _d: publisher, observer=zone, policies=POLICIES, clock=clock
    )
    activate(lifecycle, clock, Generation(DOMAIN, KeyType.ED25519, 256, "ed1"))
    store.close()
    with start(tmp_path, store_path, clock) as running:
        store_path.chmod(0o644)  # refused: a store others may read is never used
        kept = "keep their previous key"
        assert wait_until(lambda: any(kept in r.getMessage() for r in caplog.records))
        refusal = next(r.getMessage() for r in caplog.records if kept in r.getMessage())
        assert "chmod 600" in refusal
        assert signatures(send(running)[0]) == {("ed1", "ed25519-sha256")}
        assert running.server.runtime.generation == 2
        store_path.chmod(0o600)
        assert wait_until(lambda: running.server.runtime.generation == 3)
        assert signatures(send(running)[0]) == {("ed1", "ed25519-sha256")}


def test_a_server_started_from_an_older_load_catches_up_at_its_first_check(
    tmp_path: Path, store_backend: StoreBackend, store: KeyStore, lifecycle: Lifecycle, clock: FakeClock
) -> None:
    """What a worker the supervisor forks (or restarts) long after start-up sees: the supervisor's old load."""
    activate(lifecycle, clock, Generation(DOMAIN, KeyType.ED25519, 256, "ed1"))
    path = config_for(tmp_path, store_backend)
    loaded = load(str(path))
    clock.advance(ROTATE_EVERY)
    assert lifecycle.tick().ok
    clock.advance(POLICY.propagation_delay)
    assert lifecycle.tick().ok  # rotated after the load: ed1 retiring, its successor active
    (successor,) = [key.selector for key in store.signing_keys(DOMAIN)]
    with ServerThread(loaded, clock=lambda: float(clock.now), config_path=str(path)) as running:
        assert wait_until(lambda: loaded_selectors(running) == {successor})
        assert signatures(send(running)[0]) == {(successor, "ed25519-sha256")}


def test_a_rotation_is_applied_while_the_configuration_file_is_half_edited(
    tmp_path: Path, store_backend: StoreBackend, store: KeyStore, lifecycle: Lifecycle, clock: FakeClock
) -> None:
    """The key watch reloads keys under the running configuration; file edits wait for SIGHUP."""
    activate(lifecycle, clock, Generation(DOMAIN, KeyType.ED25519, 256, "ed1"))
    with start(tmp_path, store_backend, clock) as running:
        config = tmp_path / "milter.toml"
        config.write_text(config.read_text() + "\n[milter]\nworkers = = 2\n")  # mid-edit: not even TOML
        clock.advance(ROTATE_EVERY)
        assert lifecycle.tick().ok
        clock.advance(POLICY.propagation_delay)
        assert lifecycle.tick().ok
        (successor,) = [key.selector for key in store.signing_keys(DOMAIN)]
        assert wait_until(lambda: loaded_selectors(running) == {successor})
        assert signatures(send(running)[0]) == {(successor, "ed25519-sha256")}
        assert running.call(running.server.reload) is False  # SIGHUP would refuse the broken file


def test_a_broken_key_file_does_not_hold_back_a_rotation_in_the_store(
    tmp_path: Path, store_backend: StoreBackend, store: KeyStore, lifecycle: Lifecycle, clock: FakeClock
) -> None:
    """A key file missing since start-up: the store's entry still follows rotations (key watch and SIGHUP)."""
    activate(lifecycle, clock, Generation(DOMAIN, KeyType.ED25519, 256, "ed1"))
    missing = tmp_path / "missing.key"
    extra = (
        f'\n[key_table.broken]\ndomain = "other.test"\nselector = "s1"\nfile = {toml_string(str(missing))}\n'
    )
    path = config_for(tmp_path, store_backend, extra=extra)
    with ServerThread(load(str(path)), clock=lambda: float(clock.now), config_path=str(path)) as running:
        assert "broken" in running.server.runtime.keyset.problems
        assert signatures(send(running)[0]) == {("ed1", "ed25519-sha256")}
        clock.advance(ROTATE_EVERY)
        assert lifecycle.tick().ok
        clock.advance(POLICY.propagation_delay)
        assert lifecycle.tick().ok  # ed1 retiring, its successor active
        (successor,) = [key.selector for key in store.signing_keys(DOMAIN)]
        assert wait_until(lambda: loaded_selectors(running) == {successor})
        assert signatures(send(running)[0]) == {(successor, "ed25519-sha256")}
        assert running.call(running.server.reload) is True  # SIGHUP: the file parses, so it loads
        assert "broken" in running.server.runtime.keyset.problems
        assert signatures(send(running)[0]) == {(successor, "ed25519-sha256")}
