"""A milter on the fleet's PostgreSQL store while the database goes away: it keeps signing, never tempfails.

Each test runs its own PostgreSQL cluster (it is stopped mid-test); the
rotation is the real ``Lifecycle`` against an in-memory zone, the milter a
real ``MilterServer`` driven by the scripted MTA.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailseal.core.algorithms import KeyType
from mailseal.keys.lifecycle import Lifecycle
from mailseal.keys.pg_store import PgKeyStore
from mailseal.keys.publish import DnsUpdatePublisher
from mailseal.keys.rotation import Generation
from mailseal.milter.loading import load
from mailseal.milter.metrics import Metrics
from mailseal.milter.session import MessageOutcome
from support.clock import FIXED_NOW
from support.keyflow import DOMAIN, POLICIES, POLICY
from support.memdns import FakeClock, MemoryZone
from support.milter_harness import ServerThread
from support.milter_store import MESSAGE, loaded_selectors, send, signatures, wait_until, write_store_config
from support.postgres import PostgresServer, require_postgres

assert POLICY.rotate_every is not None
ROTATE_EVERY = POLICY.rotate_every


class CountingMetrics:
    """Counts errors by kind (the milter's Metrics protocol)."""

    def __init__(self) -> None:
        self.errors: dict[str, int] = {}

    def observe(self, outcome: MessageOutcome, watched_domains: frozenset[str]) -> None:
        """Messages are not counted here."""

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


@pytest.fixture
def cluster() -> Iterator[PostgresServer]:
    with PostgresServer(require_postgres()) as server:
        server.create_database("keys")
        yield server


def rotation(dsn: str, kek: Path, zone: MemoryZone, clock: FakeClock) -> tuple[PgKeyStore, Lifecycle]:
    store = PgKeyStore(dsn, kek_file=kek)
    publisher = DnsUpdatePublisher(zone)
    return store, Lifecycle(
        store, publisher_for=lambda _d: publisher, observer=zone, policies=POLICIES, clock=clock
    )


def test_database_down_keeps_signing_logs_once_counts_and_catches_up(
    cluster: PostgresServer, kek: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mailseal")
    zone, clock = MemoryZone(secondaries=1), FakeClock(FIXED_NOW)
    dsn = cluster.dsn("keys")
    store, lifecycle = rotation(dsn, kek, zone, clock)
    lifecycle.generate(Generation(DOMAIN, KeyType.ED25519, 256, "ed1"))
    assert lifecycle.tick().ok
    clock.advance(POLICY.propagation_delay)
    assert lifecycle.tick().ok
    store.close()
    path = write_store_config(tmp_path / "milter.toml", dsn, DOMAIN, kek_file=kek)
    metrics = CountingMetrics()
    counted: Metrics = metrics
    with ServerThread(load(str(path)), clock=lambda: float(clock.now), metrics=counted) as running:
        assert signatures(send(running)[0]) == {("ed1", "ed25519-sha256")}
        cluster.halt()  # the database goes away
        assert wait_until(lambda: metrics.errors.get("key_store_unavailable", 0) >= 5)
        for _ in range(3):  # never a tempfail because of the database
            result, _ = send(running)
            assert result.verdict != "tempfail" and signatures(result) == {("ed1", "ed25519-sha256")}
        outage = [
            r for r in caplog.records if "signing goes on with the keys loaded before" in r.getMessage()
        ]
        assert len(outage) == 1  # logged once, however many checks failed
        assert "password" not in outage[0].getMessage()
        assert running.server.runtime.generation == 1  # nothing reloaded while it was away
        cluster.start()  # back; the next rotation step reaches the milter
        store, lifecycle = rotation(dsn, kek, zone, clock)
        clock.advance(ROTATE_EVERY)
        assert lifecycle.tick().ok
        clock.advance(POLICY.propagation_delay)
        assert lifecycle.tick().ok
        (successor,) = [k.selector for k in store.signing_keys(DOMAIN)]
        store.close()
        assert wait_until(lambda: loaded_selectors(running) == {successor})
        assert signatures(send(running)[0]) == {(successor, "ed25519-sha256")}
    assert any("the keys can be checked again, after" in r.getMessage() for r in caplog.records)


def test_a_milter_started_while_the_database_is_down_signs_from_its_cache(
    cluster: PostgresServer, kek: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    zone, clock = MemoryZone(secondaries=1), FakeClock(FIXED_NOW)
    dsn = cluster.dsn("keys")
    store, lifecycle = rotation(dsn, kek, zone, clock)
    lifecycle.generate(Generation(DOMAIN, KeyType.ED25519, 256, "ed1"))
    assert lifecycle.tick().ok
    clock.advance(POLICY.propagation_delay)
    assert lifecycle.tick().ok
    store.close()
    cache = tmp_path / "keys-cache.json"
    path = write_store_config(tmp_path / "milter.toml", dsn, DOMAIN, kek_file=kek, cache_file=cache)
    load(str(path))  # a first run, with the database up, writes the cache
    assert cache.stat().st_mode & 0o777 == 0o600
    cached = cache.read_bytes()
    assert b"PRIVATE" not in cached and b"ed1" in cached  # sealed, as in the database
    cluster.halt()
    with ServerThread(load(str(path)), clock=lambda: float(clock.now)) as running:  # restarted, database down
        result, _ = send(running)
    assert result.verdict != "tempfail" and signatures(result) == {("ed1", "ed25519-sha256")}
    assert any(f"signing with the keys cached in {cache}" in r.getMessage() for r in caplog.records)


def test_without_a_cache_a_milter_started_while_the_database_is_down_says_why(
    cluster: PostgresServer, kek: Path, tmp_path: Path
) -> None:
    dsn = cluster.dsn("keys")
    PgKeyStore(dsn, kek_file=kek).close()
    cluster.halt()
    path = write_store_config(tmp_path / "milter.toml", dsn, DOMAIN, kek_file=kek)
    with ServerThread(load(str(path))) as running:
        problem = running.server.runtime.keyset.problems["example"]
        assert problem.startswith("cannot connect to the key store postgresql://mailseal_admin@/keys")
        result, _ = send(running)
    assert result.verdict == "tempfail"  # sign_key_unavailable: no key was ever read (docs/keys.md, Fleet)
    assert MESSAGE
