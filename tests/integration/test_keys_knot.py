"""Key lifecycle against a real authoritative server (knotd on loopback, TSIG-signed DNS UPDATE).

Time is driven with ``--now`` (the injectable clock), never with sleeps.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailseal.dns.authoritative import DnssecStatus, authoritative_servers, find_zone, query_txt
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import KeyState
from support.clock import FIXED_NOW
from support.dnsserver import KnotServer, knot_available, soa_header
from support.keyflow import DOMAIN, rotation_scenario
from support.knotkeys import KeysSetup, keys_setup, write_config
from support.required import needs

pytestmark = [
    pytest.mark.integration,
    needs(knot_available(), "knotd", "apt-get install knot knot-dnsutils"),
]

FOREIGN = 'taken._domainkey IN TXT "google-site-verification=abc"\n'


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[KeysSetup]:
    with keys_setup(tmp_path, FOREIGN) as ready:
        yield ready


def states(setup: KeysSetup) -> dict[str, KeyState]:
    store = SqliteKeyStore(setup.store)
    try:
        return {e.selector: e.state for e in store.entries(DOMAIN)}
    finally:
        store.close()


def test_publish_rsa_2048_by_tsig_update_then_check_passes(setup: KeysSetup) -> None:
    status, out, err = setup.cli(
        "generate", DOMAIN, "--algorithm", "rsa", "--selector", "rsa2026", now=FIXED_NOW
    )
    assert status == 0, err
    status, out, err = setup.cli(
        "publish", DOMAIN, "rsa2026", "--wait", "5", "--interval", "0.05", now=FIXED_NOW
    )
    assert status == 0, err
    assert "added the record at the primary" in out and "visible: every authoritative server" in out
    store = SqliteKeyStore(setup.store)
    entry = store.entry(DOMAIN, "rsa2026")
    store.close()
    assert entry is not None and entry.state is KeyState.PUBLISHED and entry.visible_at == FIXED_NOW
    name = f"rsa2026._domainkey.{DOMAIN}"
    answer = query_txt(setup.knot.nameserver, name)
    assert [len(s) for s in answer.records[0]] == [
        255,
        len(entry.record_text) - 255,
    ]  # one record, two strings
    assert answer.texts == {entry.record_text} and answer.ttl == 300
    status, out, err = setup.cli("check", DOMAIN, "rsa2026", "--json", now=FIXED_NOW)
    (result,) = json.loads(out)
    found = {f["code"]: f["level"] for f in result["findings"]}
    assert status == 0, out
    assert found["key-matches"] == "pass" and found["dnssec-unsigned"] == "info"
    status, _, _ = setup.cli("publish", DOMAIN, "rsa2026", now=FIXED_NOW)  # again: nothing changes
    assert status == 0 and setup.served(name) == {entry.record_text}


def test_full_rotation_revocation_and_removal_on_knot(setup: KeysSetup) -> None:
    assert setup.cli("generate", DOMAIN, "--selector", "first", now=FIXED_NOW)[0] == 0
    now = FIXED_NOW
    seen = []
    for moment in rotation_scenario():
        now += moment.advance
        status, out, err = setup.cli("tick", now=now)
        assert status == 0, (moment.label, out, err)
        seen.append((states(setup), setup.served(f"first._domainkey.{DOMAIN}")))
    store = SqliteKeyStore(setup.store)
    first = store.entry(DOMAIN, "first")
    second = store.entry(DOMAIN, "ms2026q2")
    store.close()
    assert first is not None and second is not None
    rec, revoked = first.record_text, first.revoked_text
    assert seen == [
        ({"first": KeyState.PUBLISHED}, {rec}),
        ({"first": KeyState.ACTIVE}, {rec}),
        ({"first": KeyState.ACTIVE, "ms2026q2": KeyState.PUBLISHED}, {rec}),
        ({"first": KeyState.RETIRING, "ms2026q2": KeyState.ACTIVE}, {rec}),
        ({"first": KeyState.REVOKED, "ms2026q2": KeyState.ACTIVE}, {revoked}),
        ({"first": KeyState.REMOVED, "ms2026q2": KeyState.ACTIVE}, set()),
        ({"first": KeyState.REMOVED, "ms2026q2": KeyState.ACTIVE}, set()),
    ]
    assert setup.served(second.name) == {second.record_text}
    assert setup.served(f"taken._domainkey.{DOMAIN}") == {"google-site-verification=abc"}  # untouched
    status, out, _ = setup.cli("list", "--all", now=now)
    assert "removed" in out and "done" in out and "rotate in" in out
    status, out, _ = setup.cli("check", DOMAIN, now=now)
    assert status == 0 and f"{second.name} (active): PASS" in out


def test_check_after_revocation_reports_it_as_planned(setup: KeysSetup) -> None:
    setup.cli("generate", DOMAIN, "--selector", "gone", now=FIXED_NOW)
    setup.cli("tick", now=FIXED_NOW)
    setup.cli("tick", now=FIXED_NOW + 3600)
    status, out, err = setup.cli("retire", DOMAIN, "gone", "--revoke", "--force", now=FIXED_NOW + 7200)
    assert status == 0, err
    assert setup.served(f"gone._domainkey.{DOMAIN}") == {"v=DKIM1; k=ed25519; p="}
    status, out, _ = setup.cli("check", DOMAIN, "gone", "--json", now=FIXED_NOW + 7200)
    (result,) = json.loads(out)
    assert {f["code"]: f["level"] for f in result["findings"]}["revoked"] == "pass"


def test_never_overwrites_a_record_mailseal_did_not_create(setup: KeysSetup) -> None:
    setup.cli("generate", DOMAIN, "--selector", "taken", now=FIXED_NOW)
    status, out, err = setup.cli("publish", DOMAIN, "taken", now=FIXED_NOW)
    assert status == 1
    assert "mailseal did not create" in err and "google-site-verification" in err
    assert setup.served(f"taken._domainkey.{DOMAIN}") == {"google-site-verification=abc"}
    status, out, _ = setup.cli("list", now=FIXED_NOW)
    assert "[last error:" in out
    setup.cli("tick", now=FIXED_NOW + 86400)
    assert states(setup) == {"taken": KeyState.PUBLISHED}  # never active, never signing


def test_wrong_tsig_secret_is_refused_with_a_clear_error(setup: KeysSetup, tmp_path: Path) -> None:
    from support.dnsserver import TsigKey

    write_config(setup.config, setup.knot, setup.tsig, store=setup.store, secret=TsigKey.generate().secret)
    setup.cli("generate", DOMAIN, "--selector", "sel", now=FIXED_NOW)
    status, _, err = setup.cli("publish", DOMAIN, "sel", now=FIXED_NOW)
    assert status == 1 and f"rejected TSIG key {setup.tsig.name}: BADSIG" in err
    assert setup.served(f"sel._domainkey.{DOMAIN}") == set()


def test_manual_mode_prints_and_waits_until_the_record_appears(setup: KeysSetup) -> None:
    setup.cli("generate", DOMAIN, "--selector", "byhand", now=FIXED_NOW)
    store = SqliteKeyStore(setup.store)
    entry = store.entry(DOMAIN, "byhand")
    store.close()
    assert entry is not None
    operator = threading.Timer(0.3, setup.add_raw, args=(entry.name, entry.record_text))
    operator.start()
    started = time.monotonic()
    try:
        status, out, err = setup.cli(
            "publish", DOMAIN, "byhand", "--manual", "--wait", "10", "--interval", "0.05", now=FIXED_NOW
        )
    finally:
        operator.join()
    assert status == 0, err
    assert "publish this TXT record" in out and "visible: every authoritative server" in out
    assert 0.25 < time.monotonic() - started < 9.5  # saw the record before --wait 10 ran out


def test_manual_wait_times_out_with_exit_75(setup: KeysSetup) -> None:
    setup.cli("generate", DOMAIN, "--selector", "never", now=FIXED_NOW)
    status, _, err = setup.cli(
        "publish", DOMAIN, "never", "--manual", "--wait", "0.2", "--interval", "0.05", now=FIXED_NOW
    )
    assert status == 75 and "not yet visible at: 127.0.0.1:" in err


def test_activation_waits_for_a_lagging_secondary(setup: KeysSetup, tmp_path: Path) -> None:
    """Two authoritative servers; the second gets the record only when the test "transfers" it."""
    with KnotServer(tmp_path, DOMAIN, soa_header(DOMAIN), setup.tsig) as secondary:
        write_config(
            setup.config,
            setup.knot,
            setup.tsig,
            store=setup.store,
            authoritative=[setup.knot.nameserver, secondary.nameserver],
        )
        setup.cli("generate", DOMAIN, "--selector", "slow", now=FIXED_NOW)
        status, out, _ = setup.cli("tick", now=FIXED_NOW)
        assert status == 0 and "waiting for the other authoritative servers" in out
        setup.cli("tick", now=FIXED_NOW + 86400)
        assert states(setup) == {"slow": KeyState.PUBLISHED}
        store = SqliteKeyStore(setup.store)
        entry = store.entry(DOMAIN, "slow")
        assert entry is not None and entry.visible_at is None and store.signing_keys(DOMAIN) == []
        setup.add_raw(entry.name, entry.record_text, server=secondary)  # the zone transfer arrives
        setup.cli("tick", now=FIXED_NOW + 86400)
        setup.cli("tick", now=FIXED_NOW + 86400 + 3600)
        assert [k.selector for k in store.signing_keys(DOMAIN)] == ["slow"]
        store.close()


def test_zone_and_authoritative_servers_are_found_through_dns(setup: KeysSetup) -> None:
    name = f"sel._domainkey.{DOMAIN}"
    assert find_zone(name, nameservers=[setup.knot.nameserver]) == DOMAIN
    found = authoritative_servers(name, nameservers=[setup.knot.nameserver], port=setup.knot.port)
    assert (found.zone, found.servers, found.problem) == (DOMAIN, (setup.knot.nameserver,), "")
    outside = authoritative_servers("sel._domainkey.example.org", nameservers=[setup.knot.nameserver])
    assert outside.servers == () and outside.problem


def test_dnssec_signed_answers_are_recognised(tmp_path: Path) -> None:
    with keys_setup(tmp_path, 'signed._domainkey IN TXT "v=DKIM1; k=ed25519; p="\n', dnssec=True) as signed:
        answer = query_txt(signed.knot.nameserver, f"signed._domainkey.{DOMAIN}", dnssec=True)
        assert answer.dnssec is DnssecStatus.SIGNED
        later = query_txt(
            signed.knot.nameserver, f"signed._domainkey.{DOMAIN}", dnssec=True, now=time.time() + 400 * 86400
        )
        assert later.dnssec is DnssecStatus.EXPIRED  # Knot's signatures last weeks, not 400 days
        _, out, _ = signed.cli("check", DOMAIN, "signed", "--json", now=FIXED_NOW)
        (result,) = json.loads(out)
        found = {f["code"]: f["level"] for f in result["findings"]}
        assert found["dnssec-signed"] == "pass"
        assert found["dnssec-not-validated"] == "info"  # Knot is not a validating resolver


LEAST_PRIVILEGE = (  # the Knot ACL docs/keys.md recommends: TXT records under _domainkey only
    "update-type: TXT",
    "update-owner: name",
    "update-owner-match: sub",
    "update-owner-name: _domainkey",
)


def test_a_key_limited_to_txt_under_domainkey_is_enough(tmp_path: Path) -> None:
    import dns.query
    import dns.tsig
    import dns.update

    with keys_setup(tmp_path, update_limits=LEAST_PRIVILEGE) as limited:
        limited.cli("generate", DOMAIN, "--selector", "sel", now=FIXED_NOW)
        status, out, err = limited.cli("tick", now=FIXED_NOW)
        assert status == 0, err
        assert "added the record" in out
        elsewhere = dns.update.UpdateMessage(
            f"{DOMAIN}.", keyring=limited.tsig.keyring(), keyalgorithm="hmac-sha256"
        )
        elsewhere.add("www", 300, "A", "192.0.2.80")
        with pytest.raises(dns.tsig.PeerBadKey):  # Knot answers NOTAUTH/BADKEY outside the ACL
            dns.query.tcp(elsewhere, limited.knot.address, port=limited.knot.port, timeout=3)
        assert limited.served(f"www.{DOMAIN}") == set()


def test_rotate_now_publishes_a_successor_that_the_tick_activates(setup: KeysSetup) -> None:
    setup.cli("generate", DOMAIN, "--selector", "old", now=FIXED_NOW)
    setup.cli("tick", now=FIXED_NOW)
    setup.cli("tick", now=FIXED_NOW + 3600)
    later = FIXED_NOW + 30 * 86400  # long before rotate_every: an operator's decision
    status, out, err = setup.cli("rotate", DOMAIN, now=later)
    assert status == 0, err
    assert f"generated ms2026q1._domainkey.{DOMAIN}" in out and "signing switches to ms2026q1" in out
    assert states(setup) == {"old": KeyState.ACTIVE, "ms2026q1": KeyState.PUBLISHED}
    setup.cli("tick", now=later)  # confirms it is served everywhere
    setup.cli("tick", now=later + 3600)
    assert states(setup) == {"old": KeyState.RETIRING, "ms2026q1": KeyState.ACTIVE}
