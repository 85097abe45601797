"""One whole rotation against BIND 9 (named on loopback), the second authoritative server mailseal supports.

Knot is the reference server of the other key-lifecycle tests; BIND refuses
differently (REFUSED rather than NOTAUTH/BADKEY) and is limited here by the
``update-policy`` docs/keys.md recommends, so this checks that mailseal's
UPDATEs (prerequisites, add, delete, revoke) fit what BIND accepts.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import dns.query
import dns.rcode
import dns.rdatatype
import dns.rdtypes.txtbase
import dns.update
import pytest

from mailseal.cli.main import main
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import KeyState
from support.bindserver import BindServer, bind_available
from support.clock import FIXED_NOW
from support.dnsserver import TsigKey, soa_header
from support.keyflow import DOMAIN, rotation_scenario
from support.knotkeys import write_config
from support.required import needs

pytestmark = [
    pytest.mark.integration,
    needs(bind_available(), "named", "apt-get install bind9"),
]


def served(server: BindServer, name: str) -> set[str]:
    reply = server.query(name, "TXT")
    return {
        b"".join(rd.strings).decode()
        for rrset in reply.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for rd in rrset
        if isinstance(rd, dns.rdtypes.txtbase.TXTBase)
    }


def test_a_whole_rotation_against_bind(tmp_path: Path) -> None:
    tsig = TsigKey.generate()
    with BindServer(DOMAIN, soa_header(DOMAIN), tsig) as bind:
        config = write_config(tmp_path / "keys.toml", bind, tsig, store=tmp_path / "data" / "keys.db")

        def keys(*args: str, now: int) -> tuple[int, str, str]:
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                status = main(["keys", *args, "--config", str(config), "--now", str(now)])
            return status, out.getvalue(), err.getvalue()

        assert keys("generate", DOMAIN, "--selector", "first", now=FIXED_NOW)[0] == 0
        now = FIXED_NOW
        first = f"first._domainkey.{DOMAIN}"
        seen = []
        for moment in rotation_scenario():
            now += moment.advance
            status, out, err = keys("tick", now=now)
            assert status == 0, (moment.label, out, err)
            store = SqliteKeyStore(tmp_path / "data" / "keys.db", readonly=True)
            seen.append(({e.selector: e.state for e in store.entries(DOMAIN)}, served(bind, first)))
            store.close()
        store = SqliteKeyStore(tmp_path / "data" / "keys.db", readonly=True)
        old, new = store.entry(DOMAIN, "first"), store.entry(DOMAIN, "ms2026q2")
        store.close()
        assert old is not None and new is not None
        record, revoked = old.record_text, old.revoked_text
        assert seen == [
            ({"first": KeyState.PUBLISHED}, {record}),
            ({"first": KeyState.ACTIVE}, {record}),
            ({"first": KeyState.ACTIVE, "ms2026q2": KeyState.PUBLISHED}, {record}),
            ({"first": KeyState.RETIRING, "ms2026q2": KeyState.ACTIVE}, {record}),
            ({"first": KeyState.REVOKED, "ms2026q2": KeyState.ACTIVE}, {revoked}),
            ({"first": KeyState.REMOVED, "ms2026q2": KeyState.ACTIVE}, set()),
            ({"first": KeyState.REMOVED, "ms2026q2": KeyState.ACTIVE}, set()),
        ]
        assert served(bind, new.name) == {new.record_text}
        status, out, _ = keys("check", DOMAIN, now=now)
        assert status == 0 and f"{new.name} (active): PASS" in out, out
        # The policy is least privilege: the same key may not touch the apex.
        apex = dns.update.UpdateMessage(f"{DOMAIN}.", keyring=tsig.keyring(), keyalgorithm="hmac-sha256")
        apex.add("@", 300, "TXT", '"v=spf1 -all"')
        reply = dns.query.tcp(apex, bind.address, port=bind.port, timeout=3)
        assert reply.rcode() == dns.rcode.REFUSED
