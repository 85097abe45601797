"""What the milter will do, step by step through a rotation: sign with what the store says, verify via knotd.

One read-only store handle is opened once and kept, as a running milter would;
after every tick it signs a message with ``KeyStore.signing_keys()`` and the
core signer, and mail signed at each step is verified again against the live
server: the new selector signs after rotation, old-selector mail still
verifies during the grace period, and fails with ``key-revoked`` once revoked.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailseal import DKIMResult, Reason, sign, verify_sync
from mailseal.dns.resolver import DnsResolver
from mailseal.keys.sqlite_store import SqliteKeyStore
from support.clock import FIXED_NOW
from support.dnsserver import knot_available
from support.keyflow import DOMAIN, rotation_scenario
from support.knotkeys import KeysSetup, keys_setup
from support.required import needs

pytestmark = [
    pytest.mark.integration,
    needs(knot_available(), "knotd", "apt-get install knot knot-dnsutils"),
]

MESSAGE = (
    b"From: Alice <alice@example.test>\r\nTo: bob@example.net\r\nSubject: rotation\r\n"
    b"Date: Thu, 1 Jan 2026 10:00:00 +0000\r\nMessage-ID: <r@example.test>\r\n\r\nHello.\r\n"
)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[KeysSetup]:
    with keys_setup(tmp_path) as ready:
        yield ready


def verdict(setup: KeysSetup, signed: bytes, now: int) -> tuple[DKIMResult, Reason | None, str | None]:
    report = verify_sync(signed, resolver=DnsResolver([setup.knot.nameserver], timeout=3), now=now)
    (result,) = report.signatures
    return result.result, result.reason, result.selector


def test_milter_view_through_a_whole_rotation(setup: KeysSetup) -> None:
    assert setup.cli("generate", DOMAIN, "--algorithm", "rsa", "--selector", "first", now=FIXED_NOW)[0] == 0
    milter = SqliteKeyStore(setup.store, readonly=True)  # opened once, never reopened
    signed_at: dict[str, tuple[bytes, int]] = {}
    log: list[tuple[str, list[str], dict[str, tuple[DKIMResult, Reason | None, str | None]]]] = []
    now = FIXED_NOW
    try:
        for moment in rotation_scenario():
            now += moment.advance
            status, out, err = setup.cli("tick", now=now)
            assert status == 0, (out, err)
            keys = milter.signing_keys(DOMAIN)
            for key in keys:
                field = sign(MESSAGE, key=key.key, domain=key.domain, selector=key.selector, now=now)
                signed_at.setdefault(key.selector, (field + MESSAGE, now))
            results = {sel: verdict(setup, message, now) for sel, (message, _) in signed_at.items()}
            log.append((moment.label, [k.selector for k in keys], results))
    finally:
        milter.close()
    ok = (DKIMResult.PASS, None)
    revoked = (DKIMResult.PERMERROR, Reason.KEY_REVOKED)
    gone = (DKIMResult.PERMERROR, Reason.KEY_NOT_FOUND)
    summary = [(label, keys, {sel: r[:2] for sel, r in results.items()}) for label, keys, results in log]
    assert summary == [
        ("publish first key", [], {}),  # published, not yet seen long enough: nothing signs
        ("activate first key", ["first"], {"first": ok}),
        ("rotation due: generate and publish the successor", ["first"], {"first": ok}),
        ("activate the successor, retire the old key", ["ms2026q2"], {"first": ok, "ms2026q2": ok}),
        ("grace over: revoke the old key", ["ms2026q2"], {"first": revoked, "ms2026q2": ok}),
        ("revocation known: remove the old key", ["ms2026q2"], {"first": gone, "ms2026q2": ok}),
        ("nothing left to do", ["ms2026q2"], {"first": gone, "ms2026q2": ok}),
    ]
    assert all(r[2] == sel for _, _, results in log for sel, r in results.items())  # s= as signed


def test_signing_keys_cost_per_call_is_small(setup: KeysSetup) -> None:
    """Called per message by the milter: one indexed query, parsed keys cached."""
    import time

    setup.cli("generate", DOMAIN, "--selector", "fast", now=FIXED_NOW)
    setup.cli("tick", now=FIXED_NOW)
    setup.cli("tick", now=FIXED_NOW + 3600)
    milter = SqliteKeyStore(setup.store, readonly=True)
    try:
        assert [k.selector for k in milter.signing_keys(DOMAIN)] == ["fast"]
        started = time.perf_counter()
        for _ in range(1000):
            milter.signing_keys(DOMAIN)
        per_call = (time.perf_counter() - started) / 1000
    finally:
        milter.close()
    assert per_call < 0.002, f"{per_call * 1e6:.0f} µs per call"
