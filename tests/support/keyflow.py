"""Helpers for key-lifecycle tests: a policy with round numbers, the rotation scenario, and the safety invariants."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mailseal.core.algorithms import KeyType
from mailseal.keys.lifecycle import Lifecycle, TickReport
from mailseal.keys.rotation import DAY, Generation, Policies, RotationPolicy
from mailseal.keys.store import KeyEntry, KeyState, KeyStore

DOMAIN = "example.test"
HOUR = 3600

POLICY = RotationPolicy(
    rotate_every=90 * DAY,
    grace=7 * DAY,
    propagation_delay=HOUR,
    revoked_for=2 * DAY,
    key_type=KeyType.ED25519,
    ttl=300,
)
POLICIES = Policies(POLICY)


def first_key(lifecycle: Lifecycle, selector: str = "first") -> KeyEntry:
    """Generate the domain's first key (what an operator does once with ``keys generate``)."""
    return lifecycle.generate(Generation(DOMAIN, KeyType.ED25519, 256, selector))


@dataclass
class Moment:
    """One tick of the scenario: at what time, and what the test expects to hold afterwards."""

    label: str
    advance: int  # seconds to move the clock before this tick


def rotation_scenario(policy: RotationPolicy = POLICY) -> list[Moment]:
    """The ticks that take a fresh domain to an active first key, then through one whole rotation."""
    assert policy.rotate_every is not None
    return [
        Moment("publish first key", 0),
        Moment("activate first key", policy.propagation_delay),
        Moment("rotation due: generate and publish the successor", policy.rotate_every),
        Moment("activate the successor, retire the old key", policy.propagation_delay),
        Moment("grace over: revoke the old key", policy.grace),
        Moment("revocation known: remove the old key", policy.revoked_for),
        Moment("nothing left to do", DAY),
    ]


def drive(
    ticks: Callable[[], TickReport], clock_advance: Callable[[int], object], moments: list[Moment]
) -> Iterator[tuple[Moment, TickReport]]:
    """Run the scenario's ticks in order, yielding each tick's report."""
    for moment in moments:
        clock_advance(moment.advance)
        yield moment, ticks()


def signing_selectors(store: KeyStore) -> list[str]:
    return [k.selector for k in store.signing_keys(DOMAIN)]


def assert_signing_is_safe(
    store: KeyStore, served: Callable[[str], list[set[str]]], *, must_sign: bool
) -> None:
    """No key signs that is not served by every authoritative server; with ``must_sign``, some key signs.

    ``served(name)`` returns the TXT texts each authoritative server has at ``name``.
    """
    keys = store.signing_keys(DOMAIN)
    if must_sign:
        assert keys, "signing gap: no key to sign with"
    entries = {e.selector: e for e in store.entries(DOMAIN)}
    for key in keys:
        entry = entries[key.selector]
        assert entry.state is KeyState.ACTIVE
        for texts in served(entry.name):
            assert entry.record_text in texts, f"{entry.name} signs but a server does not serve it"
