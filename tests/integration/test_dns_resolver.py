"""DnsResolver against a real authoritative server (knotd on loopback): the answers mail will see."""

from __future__ import annotations

import asyncio
import base64
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update
import pytest

from mailseal.core.txtanswer import TxtAnswer, TxtStatus
from mailseal.dns.cache import CachingResolver
from mailseal.dns.resolver import DnsResolver
from mailseal.dns.zonefile import ZoneFileResolver
from support.dnsserver import KnotServer, ServerStartError, TsigKey, knot_available, soa_header, txt_strings
from support.required import needs

pytestmark = [
    pytest.mark.integration,
    needs(knot_available(), "knotd", "apt-get install knot knot-dnsutils"),
]

ZONE = "example.test"
BROKEN_ZONE = "broken.test"  # configured without a zone file: Knot answers SERVFAIL


def key_record(spki_bytes: int, seed: int) -> bytes:
    """A DKIM RSA key record of realistic size (random bytes stand in for the DER public key)."""
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(random.Random(seed).randbytes(spki_bytes))


RSA2048 = key_record(294, 2048)  # 410 bytes: 2 strings, fits a 512-byte reply
RSA4096 = key_record(550, 4096)  # 754 bytes: 3 strings, truncated at 512 bytes
RSA8192 = key_record(1062, 8192)  # 1438 bytes: exceeds the 1232-byte EDNS payload too

ZONE_TEXT = (
    soa_header(ZONE, ttl=300, negative_ttl=60)
    + 'simple._domainkey IN TXT "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="\n'
    + 'multi._domainkey IN TXT ( "v=DKIM1; k=rsa; " ; comment between strings\n    "p=MIIBIjAN" )\n'
    + f"rsa2048._domainkey IN TXT {txt_strings(RSA2048)}\n"
    + f"rsa4096._domainkey IN TXT {txt_strings(RSA4096)}\n"
    + f"rsa8192._domainkey IN TXT {txt_strings(RSA8192)}\n"
    + "host IN A 192.0.2.1\n"
)


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    with KnotServer(tmp_path_factory.mktemp("knot"), ZONE, ZONE_TEXT, servfail_zones=[BROKEN_ZONE]) as server:
        yield server


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Each lookup test runs through both lookup methods."""
    value: str = request.param
    return value


def look(resolver: DnsResolver | CachingResolver, name: str, mode: str) -> TxtAnswer:
    if mode == "sync":
        return resolver.lookup_txt_sync(name)
    return asyncio.run(resolver.lookup_txt(name))


def resolver_for(knot: KnotServer, **options: object) -> DnsResolver:
    return DnsResolver([knot.nameserver], timeout=3.0, **options)  # type: ignore[arg-type]


def counter(knot: KnotServer, name: str) -> int:
    return knot.stats().get(name, 0)


def test_server_identity_is_ours(knot: KnotServer) -> None:
    reply = knot.query("id.server.", "TXT", rdclass="CH")
    assert reply.answer[0].to_text().endswith(f'"{knot.identity}"')
    assert len(str(knot.control_socket)) < 100


def test_found(knot: KnotServer, mode: str) -> None:
    answer = look(resolver_for(knot), f"simple._domainkey.{ZONE}", mode)
    assert answer.status is TxtStatus.FOUND
    assert answer.records == (b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",)
    assert answer.ttl == 300
    assert answer.authenticated is False  # an authoritative server never sets AD


def test_multi_string_record_is_joined(knot: KnotServer, mode: str) -> None:
    answer = look(resolver_for(knot), f"MULTI._domainkey.{ZONE}.", mode)
    assert answer.records == (b"v=DKIM1; k=rsa; p=MIIBIjAN",)


def test_rsa_2048_record(knot: KnotServer, mode: str) -> None:
    assert look(resolver_for(knot), f"rsa2048._domainkey.{ZONE}", mode).records == (RSA2048,)


def test_nxdomain_with_negative_ttl(knot: KnotServer, mode: str) -> None:
    answer = look(resolver_for(knot), f"missing._domainkey.{ZONE}", mode)
    assert (answer.status, answer.ttl) == (TxtStatus.NXDOMAIN, 60)


def test_no_data(knot: KnotServer, mode: str) -> None:
    answer = look(resolver_for(knot), f"host.{ZONE}", mode)
    assert (answer.status, answer.records) == (TxtStatus.NO_DATA, ())


def test_rsa_4096_record_falls_back_to_tcp_when_udp_truncates(knot: KnotServer, mode: str) -> None:
    tcp_before = counter(knot, "mod-stats.request-protocol[tcp4]")
    answer = look(resolver_for(knot, edns_payload=512), f"rsa4096._domainkey.{ZONE}", mode)
    assert answer.records == (RSA4096,)
    assert counter(knot, "mod-stats.request-protocol[tcp4]") == tcp_before + 1


def test_rsa_4096_record_fits_the_default_edns_payload(knot: KnotServer) -> None:
    tcp_before = counter(knot, "mod-stats.request-protocol[tcp4]")
    assert resolver_for(knot).lookup_txt_sync(f"rsa4096._domainkey.{ZONE}").records == (RSA4096,)
    assert counter(knot, "mod-stats.request-protocol[tcp4]") == tcp_before


def test_record_larger_than_the_edns_payload_falls_back_to_tcp(knot: KnotServer, mode: str) -> None:
    tcp_before = counter(knot, "mod-stats.request-protocol[tcp4]")
    answer = look(resolver_for(knot), f"rsa8192._domainkey.{ZONE}", mode)
    assert answer.records == (RSA8192,)
    assert counter(knot, "mod-stats.request-protocol[tcp4]") == tcp_before + 1


def test_unloadable_zone_is_servfail(knot: KnotServer, mode: str) -> None:
    answer = look(resolver_for(knot), f"sel._domainkey.{BROKEN_ZONE}", mode)
    assert answer.status is TxtStatus.SERVFAIL
    assert "replied SERVFAIL" in answer.detail


def test_name_outside_the_servers_zones_is_refused_and_reported_as_error(knot: KnotServer, mode: str) -> None:
    # Knot answers REFUSED for zones it does not serve; that is a configuration problem
    # (wrong server), not a temporary failure of the zone, so it maps to ERROR.
    answer = look(resolver_for(knot), "sel._domainkey.example.org", mode)
    assert answer.status is TxtStatus.ERROR
    assert f"{knot.address}@{knot.port}/udp: replied REFUSED" in answer.detail


def test_silent_server_times_out_within_the_budget(mode: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, so queries are queued and never answered
        port = silent.getsockname()[1]
        resolver = DnsResolver([f"127.0.0.1:{port}"], timeout=0.5)
        started = time.monotonic()
        answer = look(resolver, f"sel._domainkey.{ZONE}", mode)
        elapsed = time.monotonic() - started
        assert silent.recv(4096)  # the query did arrive
    assert answer.status is TxtStatus.TIMEOUT
    assert f"127.0.0.1@{port}" in answer.detail
    assert 0.45 <= elapsed < 4.0  # the 0.5 s budget, not dnspython's default 5 s lifetime


def test_cache_in_front_of_the_real_resolver_asks_once(knot: KnotServer) -> None:
    cache = CachingResolver(resolver_for(knot))
    before = counter(knot, "mod-stats.server-operation[query]")
    first = cache.lookup_txt_sync(f"simple._domainkey.{ZONE}")
    second = cache.lookup_txt_sync(f"Simple._DomainKey.{ZONE}")
    assert first.records == second.records
    assert counter(knot, "mod-stats.server-operation[query]") == before + 1


def test_dnssec_signed_zone_returns_rrsig_for_do_queries(tmp_path: Path) -> None:
    with KnotServer(tmp_path, ZONE, ZONE_TEXT, dnssec=True) as signed:
        reply = signed.query(f"simple._domainkey.{ZONE}", "TXT", want_dnssec=True)
        covered = [rrset.covers for rrset in reply.answer if rrset.rdtype == dns.rdatatype.RRSIG]
        assert covered == [dns.rdatatype.TXT]
        plain = signed.query(f"simple._domainkey.{ZONE}", "TXT")
        assert all(rrset.rdtype != dns.rdatatype.RRSIG for rrset in plain.answer)
        # Signed, but nothing validated it: AD stays clear, so authenticated stays False.
        answer = resolver_for(signed).lookup_txt_sync(f"simple._domainkey.{ZONE}")
        assert (answer.status, answer.authenticated) == (TxtStatus.FOUND, False)
        # The signed zone as Knot writes it back (absolute names, no $ORIGIN) reads offline too.
        signed.knotc("-b", "zone-flush", f"{ZONE}.")
        assert "RRSIG" in signed.zone_file.read_text()
        offline = ZoneFileResolver(signed.zone_file)
        assert offline.origin == ZONE
        assert offline.lookup_txt_sync(f"multi._domainkey.{ZONE}") == resolver_for(signed).lookup_txt_sync(
            f"multi._domainkey.{ZONE}"
        )


def test_tsig_update_is_accepted_with_the_key_only(tmp_path: Path) -> None:
    key = TsigKey.generate()
    with KnotServer(tmp_path, ZONE, ZONE_TEXT, key) as server:
        update = dns.update.UpdateMessage(ZONE, keyring=key.keyring(), keyalgorithm=dns.tsig.HMAC_SHA256)
        update.add("new._domainkey", 300, "TXT", '"v=DKIM1; p=published"')
        response = dns.query.tcp(update, server.address, port=server.port, timeout=3)
        assert response.rcode() == dns.rcode.NOERROR
        answer = resolver_for(server).lookup_txt_sync(f"new._domainkey.{ZONE}")
        assert answer.records == (b"v=DKIM1; p=published",)

        forged = TsigKey(key.name, TsigKey.generate().secret)
        bad = dns.update.UpdateMessage(ZONE, keyring=forged.keyring(), keyalgorithm=dns.tsig.HMAC_SHA256)
        bad.add("evil._domainkey", 300, "TXT", '"v=DKIM1; p=evil"')
        with pytest.raises(dns.tsig.PeerBadSignature):
            dns.query.tcp(bad, server.address, port=server.port, timeout=3)

        unsigned = dns.update.UpdateMessage(ZONE)
        unsigned.add("evil._domainkey", 300, "TXT", '"v=DKIM1; p=evil"')
        refused = dns.query.tcp(unsigned, server.address, port=server.port, timeout=3)
        assert refused.rcode() == dns.rcode.NOTAUTH
        assert resolver_for(server).lookup_txt_sync(f"evil._domainkey.{ZONE}").status is TxtStatus.NXDOMAIN


def test_stop_kills_the_server_and_removes_its_run_directory(tmp_path: Path) -> None:
    server = KnotServer(tmp_path, ZONE, ZONE_TEXT).start()
    rundir = server.control_socket.parent
    assert rundir.is_dir()
    server.stop()
    assert not rundir.exists()
    answer = DnsResolver([server.nameserver], timeout=0.3).lookup_txt_sync(f"simple._domainkey.{ZONE}")
    assert answer.status in {TxtStatus.TIMEOUT, TxtStatus.ERROR}  # nothing listens any more
    assert "knotd" in server.log_text() or "Knot DNS" in server.log_text()


def test_zone_that_does_not_load_fails_start_with_knots_log(tmp_path: Path) -> None:
    server = KnotServer(tmp_path, ZONE, "this is not a zone file\n", startup_timeout=0.5)
    with pytest.raises(ServerStartError, match="not ready") as caught:
        server.start()
    assert "zone" in str(caught.value)  # knotd's own complaint is in the message
    assert not server.control_socket.parent.exists()
