"""A tick re-checks the records of signing and retiring keys: republish what mailseal owns, act on the rest.

A record deleted or replaced behind mailseal's back was noticed only by
``keys check`` while mail went on being signed with a key nobody could
verify. Now every tick looks, sends again what it can, and reports (and,
for a record it may not overwrite, moves signing to a new key) what it cannot.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailseal.keys.lifecycle import Lifecycle
from mailseal.keys.publish import DnsUpdatePublisher
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import KeyState
from support.clock import FIXED_NOW
from support.keyflow import DOMAIN, HOUR, POLICIES, POLICY, first_key, signing_selectors
from support.memdns import FakeClock, MemoryZone

FOREIGN = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwhoever"


@pytest.fixture
def zone() -> MemoryZone:
    return MemoryZone(secondaries=2)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(FIXED_NOW)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteKeyStore]:
    opened = SqliteKeyStore(tmp_path / "data" / "keys.db")
    yield opened
    opened.close()


def active_key(store: SqliteKeyStore, zone: MemoryZone, clock: FakeClock) -> tuple[Lifecycle, str]:
    lifecycle = Lifecycle(
        store,
        publisher_for=lambda domain: DnsUpdatePublisher(zone),
        observer=zone,
        policies=POLICIES,
        clock=clock,
    )
    key = first_key(lifecycle)
    lifecycle.tick()
    clock.advance(HOUR)
    lifecycle.tick()
    assert signing_selectors(store) == ["first"]
    return lifecycle, key.name


def test_an_active_record_deleted_behind_our_back_is_published_again(
    store: SqliteKeyStore, zone: MemoryZone, clock: FakeClock
) -> None:
    lifecycle, name = active_key(store, zone, clock)
    entry = store.entry(DOMAIN, "first")
    assert entry is not None
    updates = zone.updates
    assert lifecycle.tick().done == []  # in sync: nothing sent
    assert zone.updates == updates
    zone.put(name)  # deleted at the DNS provider
    clock.advance(60)
    report = lifecycle.tick()
    assert report.ok, report.errors
    assert any(
        "missing or changed at the primary" in line and "added the record" in line for line in report.done
    )
    assert zone.texts(name) == {entry.record_text}
    assert all(copy[name] for copy in zone.copies)  # the secondaries have it again
    assert signing_selectors(store) == ["first"]  # it never stopped being the signing key


def test_a_revocation_published_by_hand_is_respected(
    store: SqliteKeyStore, zone: MemoryZone, clock: FakeClock
) -> None:
    """The active key revoked at the DNS provider (p= empty): perhaps it leaked; never undo that."""
    lifecycle, name = active_key(store, zone, clock)
    entry = store.entry(DOMAIN, "first")
    assert entry is not None
    zone.put(name, entry.revoked_text)
    report = lifecycle.tick()
    assert not report.ok and "did not create" in report.errors[0]
    assert zone.texts(name) == {entry.revoked_text}
    assert any(e.state is KeyState.PUBLISHED for e in store.entries(DOMAIN))  # a successor is on its way


def test_a_retiring_record_deleted_is_published_again_for_mail_in_flight(
    store: SqliteKeyStore, zone: MemoryZone, clock: FakeClock
) -> None:
    lifecycle, name = active_key(store, zone, clock)
    clock.advance(POLICY.rotate_every or 0)
    lifecycle.tick()  # successor generated and published
    clock.advance(HOUR)
    lifecycle.tick()  # successor active, first retiring
    first = store.entry(DOMAIN, "first")
    assert first is not None and first.state is KeyState.RETIRING
    zone.put(name)
    clock.advance(HOUR)
    report = lifecycle.tick()
    assert report.ok and zone.texts(name) == {first.record_text}
    clock.advance(POLICY.grace)
    lifecycle.tick()  # and the grace period still ends as planned
    first = store.entry(DOMAIN, "first")
    assert first is not None and first.state is KeyState.REVOKED


def test_a_record_replaced_by_someone_else_is_reported_and_signing_moves_to_a_new_key(
    store: SqliteKeyStore, zone: MemoryZone, clock: FakeClock
) -> None:
    lifecycle, name = active_key(store, zone, clock)
    zone.put(name, FOREIGN)  # someone else's key now sits at our selector
    clock.advance(60)
    report = lifecycle.tick()
    assert not report.ok  # the operator is told (keys tick exits 1)
    assert "did not create" in report.errors[0] and name in report.errors[0]
    first = store.entry(DOMAIN, "first")
    assert first is not None and first.last_error is not None and "did not create" in first.last_error
    assert zone.texts(name) == {FOREIGN}  # never overwritten
    (successor,) = [e for e in store.entries(DOMAIN) if e.selector != "first"]
    assert successor.state is KeyState.PUBLISHED  # a new key under a new name, already sent
    assert zone.texts(successor.name) == {successor.record_text}
    clock.advance(HOUR)
    report = lifecycle.tick()
    assert signing_selectors(store) == [successor.selector]  # signing moved to a key that verifies
    first = store.entry(DOMAIN, "first")
    assert first is not None and first.state is KeyState.RETIRING
    assert zone.texts(name) == {FOREIGN}


def test_no_rotate_still_reports_a_replaced_record(
    store: SqliteKeyStore, zone: MemoryZone, clock: FakeClock
) -> None:
    lifecycle, name = active_key(store, zone, clock)
    zone.put(name, FOREIGN)
    report = lifecycle.tick(rotate=False)
    assert not report.ok and "did not create" in report.errors[0]
    assert [e.selector for e in store.entries(DOMAIN)] == ["first"]  # --no-rotate: no new key


def test_a_secondary_that_lost_the_signing_record_is_reported_while_waiting(
    store: SqliteKeyStore, clock: FakeClock
) -> None:
    zone = MemoryZone(secondaries=2)
    lifecycle, name = active_key(store, zone, clock)
    zone.copies[1].pop(name)  # a secondary serves an older zone
    report = lifecycle.tick()
    assert report.ok
    assert any(
        name in line and "waiting for the other authoritative servers" in line for line in report.waiting
    )
    updates = zone.updates
    assert zone.updates == updates  # the primary serves it: nothing to send
