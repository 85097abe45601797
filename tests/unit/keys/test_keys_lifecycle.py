"""The rotation driver against an in-memory zone: full rotation, lagging secondaries, foreign records, crashes.

Every test that uses ``store`` runs against both backends (SQLite and PostgreSQL).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailseal.core.algorithms import KeyType
from mailseal.errors import InsecureKeyFileError, UsageError
from mailseal.keys.lifecycle import Lifecycle, TickReport
from mailseal.keys.publish import DnsUpdatePublisher, ManualPublisher, Publisher
from mailseal.keys.rotation import Event, Generation, Step
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import KeyState, KeyStore, KeyStoreBusyError
from support.clock import FIXED_NOW
from support.keyflow import (
    DOMAIN,
    HOUR,
    POLICIES,
    POLICY,
    assert_signing_is_safe,
    first_key,
    rotation_scenario,
    signing_selectors,
)
from support.memdns import FakeClock, MemoryZone
from support.stores import StoreBackend


class Crash(BaseException):
    """Stands in for a kill: not an Exception, so nothing on the way catches it."""


@pytest.fixture
def store(store_backend: StoreBackend) -> Iterator[KeyStore]:
    """The store on each backend (SQLite, PostgreSQL): overrides the shared SQLite-only one."""
    opened = store_backend.open()
    yield opened
    opened.close()


def make(store: KeyStore, zone: MemoryZone, clock: FakeClock, hook: object = None) -> Lifecycle:
    publisher = DnsUpdatePublisher(zone)
    return Lifecycle(
        store,
        publisher_for=lambda domain: publisher,
        observer=zone,
        policies=POLICIES,
        clock=clock,
        hook=hook,  # type: ignore[arg-type]
    )


def served_by(zone: MemoryZone):  # type: ignore[no-untyped-def]
    def served(name: str) -> list[set[str]]:
        return [
            set(v) for v in zone.view(name, ManualPublisher(io.StringIO())).servers.values() if v is not None
        ]

    return served


def test_full_rotation(store: KeyStore, zone: MemoryZone, clock: FakeClock) -> None:
    lifecycle = make(store, zone, clock)
    first = first_key(lifecycle)
    states: list[dict[str, KeyState]] = []
    for moment in rotation_scenario():
        clock.advance(moment.advance)
        report = lifecycle.tick()
        assert report.ok, report.errors
        states.append({e.selector: e.state for e in store.entries(DOMAIN)})
        assert_signing_is_safe(store, served_by(zone), must_sign=moment.label != "publish first key")
    successor = "ms2026q2"  # 2026-04-01: the quarter the rotation fell due in
    assert states == [
        {"first": KeyState.PUBLISHED},
        {"first": KeyState.ACTIVE},
        {"first": KeyState.ACTIVE, successor: KeyState.PUBLISHED},
        {"first": KeyState.RETIRING, successor: KeyState.ACTIVE},
        {"first": KeyState.REVOKED, successor: KeyState.ACTIVE},
        {"first": KeyState.REMOVED, successor: KeyState.ACTIVE},
        {"first": KeyState.REMOVED, successor: KeyState.ACTIVE},
    ]
    old = store.entry(DOMAIN, "first")
    assert old is not None and old.confirmed_at is not None
    assert zone.texts(first.name) == set()  # deleted from DNS
    new = store.entry(DOMAIN, successor)
    assert new is not None and zone.texts(new.name) == {new.record_text}
    assert signing_selectors(store) == [successor]
    with pytest.raises(Exception, match="destroyed"):
        store.private_key(first.id)


def test_revoked_record_is_served_during_revoked_phase(
    store: KeyStore, zone: MemoryZone, clock: FakeClock
) -> None:
    lifecycle = make(store, zone, clock)
    first = first_key(lifecycle)
    for moment in rotation_scenario()[:5]:
        clock.advance(moment.advance)
        lifecycle.tick()
    assert zone.texts(first.name) == {first.revoked_text}
    assert first.revoked_text.endswith("p=")


def test_activation_waits_for_every_authoritative_server(store: KeyStore, clock: FakeClock) -> None:
    zone = MemoryZone(secondaries=2, auto_transfer=False)
    lifecycle = make(store, zone, clock)
    key = first_key(lifecycle)
    report = lifecycle.tick()
    assert zone.texts(key.name) == {key.record_text}  # the primary has it
    assert any("waiting for the other authoritative servers" in w for w in report.waiting)
    clock.advance(30 * 86400)  # however long it takes
    lifecycle.tick()
    entry = store.entry(DOMAIN, key.selector)
    assert entry is not None and entry.state is KeyState.PUBLISHED and entry.visible_at is None
    assert store.signing_keys(DOMAIN) == []
    updates = zone.updates
    lifecycle.tick()
    assert zone.updates == updates  # the primary serves it: no resending while secondaries lag
    zone.transfer()
    lifecycle.tick()  # confirmed now; the propagation delay starts
    assert store.signing_keys(DOMAIN) == []
    clock.advance(HOUR)
    lifecycle.tick()
    assert signing_selectors(store) == [key.selector]


def test_a_server_that_does_not_answer_holds_activation(
    store: KeyStore, zone: MemoryZone, clock: FakeClock
) -> None:
    lifecycle = make(store, zone, clock)
    first_key(lifecycle)
    zone.down.add(zone.servers[2])
    lifecycle.tick()
    clock.advance(HOUR)
    report = lifecycle.tick()
    assert store.signing_keys(DOMAIN) == []
    assert any("did not answer" in w for w in report.waiting)
    zone.down.clear()
    lifecycle.tick()
    clock.advance(HOUR)
    lifecycle.tick()
    assert signing_selectors(store) == ["first"]


def test_published_key_that_vanished_is_sent_again_and_its_clock_restarts(
    store: KeyStore, zone: MemoryZone, clock: FakeClock
) -> None:
    lifecycle = make(store, zone, clock)
    key = first_key(lifecycle)
    lifecycle.tick()
    zone.put(key.name)  # someone deleted it before activation
    clock.advance(HOUR)
    lifecycle.tick()
    assert zone.texts(key.name) == {key.record_text}  # sent again
    entry = store.entry(DOMAIN, key.selector)
    assert entry is not None and entry.state is KeyState.PUBLISHED and entry.visible_at == clock.now
    clock.advance(HOUR)
    lifecycle.tick()
    assert signing_selectors(store) == [key.selector]


def test_never_publishes_over_a_foreign_record(store: KeyStore, zone: MemoryZone, clock: FakeClock) -> None:
    lifecycle = make(store, zone, clock)
    key = first_key(lifecycle)
    zone.put(key.name, "v=spf1 -all")
    report = lifecycle.tick()
    assert not report.ok
    assert "did not create" in report.errors[0]
    assert zone.texts(key.name) == {"v=spf1 -all"}
    entry = store.entry(DOMAIN, key.selector)
    assert entry is not None and entry.last_error is not None and "did not create" in entry.last_error
    clock.advance(HOUR)
    lifecycle.tick()
    assert store.signing_keys(DOMAIN) == []  # never signs with a key DNS does not serve


def test_revocation_beside_a_foreign_record_deletes_only_ours(
    store: KeyStore, zone: MemoryZone, clock: FakeClock
) -> None:
    lifecycle = make(store, zone, clock)
    key = first_key(lifecycle)
    lifecycle.tick()
    clock.advance(HOUR)
    lifecycle.tick()
    zone.put(key.name, key.record_text, "note=added by someone else")
    entry = store.entry(DOMAIN, key.selector)
    assert entry is not None
    report = lifecycle.request(entry, Event.REVOKE)
    assert not report.ok and "did not create" in report.errors[0] and "was deleted" in report.errors[0]
    assert zone.texts(key.name) == {"note=added by someone else"}
    assert store.signing_keys(DOMAIN) == []


def test_removal_leaves_a_foreign_record_alone(store: KeyStore, zone: MemoryZone, clock: FakeClock) -> None:
    lifecycle = make(store, zone, clock)
    key = first_key(lifecycle)
    lifecycle.tick()
    zone.put(key.name, key.record_text, "other")
    report = lifecycle.request(store.entry(DOMAIN, key.selector), Event.RETIRE)  # type: ignore[arg-type]
    assert report.ok
    assert zone.texts(key.name) == {"other"}


def test_prerequisite_race_is_read_again(store: KeyStore, zone: MemoryZone, clock: FakeClock) -> None:
    """A change between our read and our UPDATE makes the UPDATE fail its prerequisite; we re-read."""

    class Racing(MemoryZone):
        raced = False

        def change_txt(self, name: str, **kwargs: object) -> bool:
            if not self.raced:
                self.raced = True
                self.records[name] = [(b"v=DKIM1; p=",)]  # someone else's write lands first
                self.transfer()
            return super().change_txt(name, **kwargs)  # type: ignore[arg-type]

    racing = Racing(secondaries=1)
    lifecycle = make(store, racing, clock)
    key = first_key(lifecycle)
    report = lifecycle.tick()
    assert "did not create" in report.errors[0]  # after re-reading, it sees the foreign record
    assert racing.texts(key.name) == {"v=DKIM1; p="}


def test_update_refused_is_reported_and_retried_next_tick(
    store: KeyStore, zone: MemoryZone, clock: FakeClock
) -> None:
    lifecycle = make(store, zone, clock)
    key = first_key(lifecycle)
    zone.refuse = "the primary refused the UPDATE (NOTAUTH)"
    report = lifecycle.tick()
    assert report.errors == [f"{key.name}: the primary refused the UPDATE (NOTAUTH)"]
    entry = store.entry(DOMAIN, key.selector)
    assert entry is not None and entry.state is KeyState.PUBLISHED  # recorded before acting
    zone.refuse = None
    assert lifecycle.tick().ok
    entry = store.entry(DOMAIN, key.selector)
    assert entry is not None and entry.visible_at is not None and entry.last_error is None


def test_manual_mode_prints_then_waits_for_the_record(
    store: KeyStore, zone: MemoryZone, clock: FakeClock
) -> None:
    out = io.StringIO()
    manual: Publisher = ManualPublisher(out)
    lifecycle = Lifecycle(
        store, publisher_for=lambda d: manual, observer=zone, policies=POLICIES, clock=clock
    )
    key = first_key(lifecycle)
    report = lifecycle.tick()
    printed = out.getvalue()
    assert printed.count(f"{key.name}. 300 IN TXT") == 1  # once per tick, not once per round
    assert key.record_text in printed and "PRIVATE" not in printed
    assert report.waiting == [f"{key.name}: sent; waiting until the servers serve it"]
    lifecycle.tick()
    assert out.getvalue().count(f"{key.name}. 300 IN TXT") == 2  # the next tick says it again
    zone.put(key.name, key.record_text)  # the operator did it
    lifecycle.tick()
    assert out.getvalue().count(f"{key.name}. 300 IN TXT") == 2  # served now: nothing more to say
    clock.advance(HOUR)
    lifecycle.tick()
    assert signing_selectors(store) == [key.selector]


def test_overlapping_ticks_are_refused(
    store: KeyStore, store_backend: StoreBackend, zone: MemoryZone, clock: FakeClock
) -> None:
    other = store_backend.open()
    try:
        with other.exclusive(), pytest.raises(KeyStoreBusyError):
            make(store, zone, clock).tick()
    finally:
        other.close()
    assert make(store, zone, clock).tick().ok  # released


def test_retire_and_revoke_by_hand(store: KeyStore, zone: MemoryZone, clock: FakeClock) -> None:
    lifecycle = make(store, zone, clock)
    key = first_key(lifecycle)
    lifecycle.tick()
    clock.advance(HOUR)
    lifecycle.tick()
    lifecycle.request(store.entry(DOMAIN, key.selector), Event.RETIRE)  # type: ignore[arg-type]
    assert store.signing_keys(DOMAIN) == []
    assert zone.texts(key.name) == {key.record_text}  # still published during grace
    lifecycle.request(store.entry(DOMAIN, key.selector), Event.REVOKE)  # type: ignore[arg-type]
    assert zone.texts(key.name) == {key.revoked_text}


def test_overtaken_pending_key_is_withdrawn(store: KeyStore, zone: MemoryZone, clock: FakeClock) -> None:
    lifecycle = make(store, zone, clock)
    first_key(lifecycle, "one")
    clock.advance(1)
    two = first_key(lifecycle, "two")
    lifecycle.tick()
    clock.advance(HOUR)
    lifecycle.tick()
    assert signing_selectors(store) == ["two"]
    one = store.entry(DOMAIN, "one")
    assert one is not None and one.state is KeyState.REMOVED
    assert zone.texts(one.name) == set() and zone.texts(two.name) == {two.record_text}


def test_rsa_and_ed25519_rotate_as_separate_lineages(
    store: KeyStore, zone: MemoryZone, clock: FakeClock
) -> None:
    from mailseal.keys.rotation import Generation

    lifecycle = make(store, zone, clock)
    lifecycle.generate(Generation(DOMAIN, KeyType.RSA, 1024, "rsa1"))
    lifecycle.generate(Generation(DOMAIN, KeyType.ED25519, 256, "ed1"))
    lifecycle.tick()
    clock.advance(HOUR)
    lifecycle.tick()
    assert sorted(signing_selectors(store)) == ["ed1", "rsa1"]
    lifecycle.generate(Generation(DOMAIN, KeyType.ED25519, 256, "ed2"))
    lifecycle.tick()
    clock.advance(HOUR)
    lifecycle.tick()
    assert sorted(signing_selectors(store)) == ["ed2", "rsa1"]  # the RSA key is not superseded


def _hook_points(store: KeyStore, zone: MemoryZone, clock: FakeClock) -> int:
    """How many hook calls a whole uninterrupted scenario makes."""
    calls = 0

    def count(point: str, step: Step) -> None:
        nonlocal calls
        calls += 1

    lifecycle = make(store, zone, clock, count)
    first_key(lifecycle)
    for moment in rotation_scenario():
        clock.advance(moment.advance)
        lifecycle.tick()
    return calls


def test_hook_points_cover_every_step(store_backend: StoreBackend) -> None:
    store = store_backend.open()
    # 1 key: send (3) + confirm (2) + activate (2); successor: generate (2) + send (3) + confirm (2)
    # + activate (2); old: revoke (3) + confirm (2) + remove (3) + confirm (2)
    assert _hook_points(store, MemoryZone(secondaries=1), FakeClock(FIXED_NOW)) == 26
    store.close()


@pytest.mark.parametrize("crash_at", range(1, 27))
def test_a_crash_at_any_point_is_completed_by_the_next_tick(
    store_backend: StoreBackend, crash_at: int
) -> None:
    zone = MemoryZone(secondaries=1)
    clock = FakeClock(FIXED_NOW)
    calls = 0
    crashed = False
    served = served_by(zone)
    signing_started = False

    def hook(point: str, step: Step) -> None:
        nonlocal calls, crashed
        calls += 1
        # The invariants hold at every point a kill could hit, including this one.
        assert_signing_is_safe(checker, served, must_sign=signing_started)
        if calls == crash_at:
            crashed = True
            raise Crash(f"killed at {point} of {step}")

    checker = store_backend.open()
    store = store_backend.open()
    lifecycle = make(store, zone, clock, hook)
    first_key(lifecycle)
    for moment in rotation_scenario():
        clock.advance(moment.advance)
        try:
            lifecycle.tick()
        except Crash:
            store.close()  # the process is gone; a new one opens the store
            store = store_backend.open()
            lifecycle = make(store, zone, clock)
            report: TickReport = lifecycle.tick()  # the next tick, same moment
            assert report.ok, report.errors
        signing_started = signing_started or bool(checker.signing_keys(DOMAIN))
        assert_signing_is_safe(checker, served, must_sign=signing_started)
    assert crashed
    states = {e.selector: e.state for e in store.entries(DOMAIN)}
    assert states == {"first": KeyState.REMOVED, "ms2026q2": KeyState.ACTIVE}
    assert all(e.confirmed_at is not None for e in store.entries(DOMAIN))
    assert zone.texts(f"first._domainkey.{DOMAIN}") == set()
    assert signing_selectors(store) == ["ms2026q2"]
    store.close()
    checker.close()


def test_store_file_is_private(store_path: Path) -> None:
    SqliteKeyStore(store_path).close()
    assert store_path.stat().st_mode & 0o777 == 0o600
    store_path.chmod(0o644)
    with pytest.raises(InsecureKeyFileError, match=f"chmod 600 {store_path}"):
        SqliteKeyStore(store_path)
    store_path.chmod(0o640)  # group read: a milter in the store's group may sign
    SqliteKeyStore(store_path).close()


def test_policy_ttl_is_used_for_published_records(store: KeyStore, clock: FakeClock) -> None:
    seen: list[int] = []

    class Recording(MemoryZone):
        def change_txt(self, name: str, **kwargs: object) -> bool:
            seen.append(kwargs["ttl"])  # type: ignore[arg-type]
            return super().change_txt(name, **kwargs)  # type: ignore[arg-type]

    zone = Recording()
    lifecycle = make(store, zone, clock)
    first_key(lifecycle)
    lifecycle.tick()
    assert seen == [POLICY.ttl]


def test_one_domains_zone_problem_does_not_stop_the_tick_for_the_others(
    store: KeyStore, zone: MemoryZone, clock: FakeClock
) -> None:
    publisher = DnsUpdatePublisher(zone)
    outside = "s1._domainkey.other.test is not in zone example.test; set the zone that holds it"

    def publisher_for(domain: str) -> Publisher:
        if domain == "other.test":
            raise UsageError(outside)  # what the CLI's publisher_for says for a domain outside the zone
        return publisher

    lifecycle = Lifecycle(store, publisher_for=publisher_for, observer=zone, policies=POLICIES, clock=clock)
    lifecycle.generate(Generation("other.test", KeyType.ED25519, 256, "s1"))
    lifecycle.generate(Generation(DOMAIN, KeyType.ED25519, 256, "ed1"))
    report = lifecycle.tick()
    assert report.errors == [f"s1._domainkey.other.test: {outside}"]
    broken = store.entry("other.test", "s1")
    assert broken is not None and broken.last_error == outside
    clock.advance(POLICY.propagation_delay)
    report = lifecycle.tick()
    assert report.errors == [f"s1._domainkey.other.test: {outside}"]  # noted again, never fatal
    assert signing_selectors(store) == ["ed1"]
