"""DnsResolver: every kind of reply becomes the right TxtAnswer (against a scripted loopback server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from mailseal.core.txtanswer import TxtAnswer, TxtStatus
from mailseal.dns.interface import KeyResolver, SyncKeyResolver
from mailseal.dns.resolver import DnsResolver, parse_nameserver
from mailseal.errors import UsageError
from support.dnsserver import ScriptedDnsServer

NAME = "sel._domainkey.example.com"
SOA = "example.com. 600 IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 90"

Lookup = Callable[[DnsResolver, str], TxtAnswer]
Handler = Callable[[dns.message.Message, str], dns.message.Message | bytes | None]
Serve = Callable[..., tuple[ScriptedDnsServer, DnsResolver]]


def _sync(resolver: DnsResolver, name: str) -> TxtAnswer:
    return resolver.lookup_txt_sync(name)


def _async(resolver: DnsResolver, name: str) -> TxtAnswer:
    return asyncio.run(resolver.lookup_txt(name))


@pytest.fixture(params=[_sync, _async], ids=["sync", "async"])
def lookup(request: pytest.FixtureRequest) -> Lookup:
    """Each mapping test runs through both lookup methods."""
    function: Lookup = request.param
    return function


def rrset(text: str) -> dns.rrset.RRset:
    """One RRset from master-file text: ``NAME TTL CLASS TYPE RDATA``."""
    name, ttl, rdclass, rdtype, rdata = text.split(" ", 4)
    return dns.rrset.from_text(name, int(ttl), rdclass, rdtype, rdata)


def reply(
    query: dns.message.Message, *answer: str, rcode: dns.rcode.Rcode = dns.rcode.NOERROR, ad: bool = False
) -> dns.message.Message:
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    response.flags |= dns.flags.AA | (dns.flags.AD if ad else 0)
    response.answer.extend(rrset(text) for text in answer)
    return response


def with_soa(response: dns.message.Message) -> dns.message.Message:
    response.authority.append(rrset(SOA))
    return response


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a scripted server and return it with a DnsResolver pointed at it."""
    servers: list[ScriptedDnsServer] = []

    def start(handler: Handler, **options: object) -> tuple[ScriptedDnsServer, DnsResolver]:
        server = ScriptedDnsServer(handler).__enter__()
        servers.append(server)
        return server, DnsResolver([server.nameserver], **options)  # type: ignore[arg-type]

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def test_satisfies_both_protocols() -> None:
    resolver = DnsResolver(["127.0.0.1"])
    assert isinstance(resolver, KeyResolver)
    assert isinstance(resolver, SyncKeyResolver)


def test_found_joins_strings_and_uses_the_rrset_ttl(serve: Serve, lookup: Lookup) -> None:
    _, resolver = serve(lambda q, _t: reply(q, f'{NAME}. 300 IN TXT "v=DKIM1; " "p=abc"'))
    answer = lookup(resolver, NAME)
    assert answer == TxtAnswer(TxtStatus.FOUND, (b"v=DKIM1; p=abc",), 300, False, "")


def test_several_records_are_all_returned(serve: Serve, lookup: Lookup) -> None:
    _, resolver = serve(lambda q, _t: reply(q, f'{NAME}. 300 IN TXT "one"', f'{NAME}. 300 IN TXT "two"'))
    assert sorted(lookup(resolver, NAME).records) == [b"one", b"two"]


def test_cname_chain_ttl_is_the_minimum(serve: Serve, lookup: Lookup) -> None:
    _, resolver = serve(
        lambda q, _t: reply(
            q, f"{NAME}. 60 IN CNAME key.esp.example.net.", 'key.esp.example.net. 3600 IN TXT "v=DKIM1; p=x"'
        )
    )
    answer = lookup(resolver, NAME)
    assert (answer.status, answer.records, answer.ttl) == (TxtStatus.FOUND, (b"v=DKIM1; p=x",), 60)


def test_ad_flag_means_authenticated(serve: Serve, lookup: Lookup) -> None:
    _, resolver = serve(lambda q, _t: reply(q, f'{NAME}. 300 IN TXT "x"', ad=True))
    assert lookup(resolver, NAME).authenticated is True


def test_no_ad_flag_means_not_authenticated(serve: Serve, lookup: Lookup) -> None:
    _, resolver = serve(lambda q, _t: reply(q, f'{NAME}. 300 IN TXT "x"'))
    assert lookup(resolver, NAME).authenticated is False


def test_ad_flag_is_ignored_without_want_dnssec(serve: Serve, lookup: Lookup) -> None:
    _, resolver = serve(lambda q, _t: reply(q, f'{NAME}. 300 IN TXT "x"', ad=True), want_dnssec=False)
    assert lookup(resolver, NAME).authenticated is False


def test_want_dnssec_sets_do_and_ad_in_queries(serve: Serve, lookup: Lookup) -> None:
    server, resolver = serve(lambda q, _t: reply(q, f'{NAME}. 300 IN TXT "x"'))
    lookup(resolver, NAME)
    ((_, query),) = server.requests
    assert query.flags & dns.flags.AD
    assert query.flags & dns.flags.RD
    assert query.ednsflags & dns.flags.DO
    assert query.payload == 1232
    assert query.question[0].name.to_text() == NAME + "."  # absolute, no search domain


def test_without_want_dnssec_queries_carry_neither_do_nor_ad(serve: Serve, lookup: Lookup) -> None:
    server, resolver = serve(lambda q, _t: reply(q, f'{NAME}. 300 IN TXT "x"'), want_dnssec=False)
    lookup(resolver, NAME)
    ((_, query),) = server.requests
    assert not query.flags & dns.flags.AD
    assert not query.ednsflags & dns.flags.DO
    assert query.edns == 0  # EDNS still on, for the larger UDP payload


def test_nxdomain_carries_the_soa_negative_ttl(serve: Serve, lookup: Lookup) -> None:
    _, resolver = serve(lambda q, _t: with_soa(reply(q, rcode=dns.rcode.NXDOMAIN)))
    answer = lookup(resolver, NAME)
    assert (answer.status, answer.ttl, answer.records) == (
        TxtStatus.NXDOMAIN,
        90,
        (),
    )  # min(600, 90), RFC 2308


def test_authenticated_denial_is_reported(serve: Serve, lookup: Lookup) -> None:
    _, resolver = serve(lambda q, _t: with_soa(reply(q, rcode=dns.rcode.NXDOMAIN, ad=True)))
    assert lookup(resolver, NAME).authenticated is True


def test_empty_noerror_is_no_data(serve: Serve, lookup: Lookup) -> None:
    _, resolver = serve(lambda q, _t: with_soa(reply(q)))
    answer = lookup(resolver, NAME)
    assert (answer.status, answer.ttl) == (TxtStatus.NO_DATA, 90)


def test_servfail(serve: Serve, lookup: Lookup) -> None:
    server, resolver = serve(lambda q, _t: reply(q, rcode=dns.rcode.SERVFAIL))
    answer = lookup(resolver, NAME)
    assert answer.status is TxtStatus.SERVFAIL
    assert f"{server.address}@{server.port}/udp: replied SERVFAIL" in answer.detail


def test_refused_is_an_error_naming_the_rcode(serve: Serve, lookup: Lookup) -> None:
    _, resolver = serve(lambda q, _t: reply(q, rcode=dns.rcode.REFUSED))
    answer = lookup(resolver, NAME)
    assert answer.status is TxtStatus.ERROR
    assert "replied REFUSED" in answer.detail


def test_truncated_udp_is_retried_over_tcp(serve: Serve, lookup: Lookup) -> None:
    def handler(query: dns.message.Message, transport: str) -> dns.message.Message:
        if transport == "udp":
            truncated = reply(query)
            truncated.flags |= dns.flags.TC
            return truncated
        return reply(query, f'{NAME}. 300 IN TXT "over tcp"')

    server, resolver = serve(handler)
    assert lookup(resolver, NAME).records == (b"over tcp",)
    assert [transport for transport, _ in server.requests] == ["udp", "tcp"]


def test_malformed_reply_is_an_error(serve: Serve, lookup: Lookup) -> None:
    def handler(query: dns.message.Message, transport: str) -> dns.message.Message | bytes:
        if transport == "udp":  # dnspython ignores garbage over UDP (it could be spoofed), so go to TCP
            truncated = reply(query)
            truncated.flags |= dns.flags.TC
            return truncated
        return reply(query).to_wire()[:2] + b"\x80\x00\x00\x01"  # header cut short

    _, resolver = serve(handler, timeout=2.0)
    answer = lookup(resolver, NAME)
    assert answer.status is TxtStatus.ERROR
    assert "/tcp: malformed reply" in answer.detail


def test_silence_is_a_timeout_within_the_budget(serve: Serve, lookup: Lookup) -> None:
    server, resolver = serve(lambda _q, _t: None, timeout=0.3)
    started = time.monotonic()
    answer = lookup(resolver, NAME)
    elapsed = time.monotonic() - started
    assert answer.status is TxtStatus.TIMEOUT
    assert server.nameserver.replace(":", "@") in answer.detail
    assert 0.25 <= elapsed < 4.0  # the 0.3 s budget, not dnspython's default 5 s lifetime
    assert len(server.requests) >= 1


@pytest.mark.parametrize(
    "name", ["a..example.com", "x" * 64 + ".example.com", ".".join(["a" * 63] * 5), "", "."]
)
def test_invalid_names_are_error_answers_without_a_query(serve: Serve, lookup: Lookup, name: str) -> None:
    server, resolver = serve(lambda q, _t: reply(q))
    assert lookup(resolver, name).status is TxtStatus.ERROR
    assert server.requests == []


def test_trailing_dot_is_accepted(serve: Serve, lookup: Lookup) -> None:
    server, resolver = serve(lambda q, _t: reply(q, f'{NAME}. 300 IN TXT "x"'))
    assert lookup(resolver, NAME + ".").status is TxtStatus.FOUND
    assert server.requests[0][1].question[0].name.to_text() == NAME + "."


@pytest.mark.parametrize(
    ("spec", "address", "port"),
    [
        ("192.0.2.1", "192.0.2.1", 53),
        ("192.0.2.1:5300", "192.0.2.1", 5300),
        ("2001:db8::1", "2001:db8::1", 53),
        ("[2001:db8::1]:5300", "2001:db8::1", 5300),
        ("[::1]", "::1", 53),
    ],
)
def test_nameserver_forms(spec: str, address: str, port: int) -> None:
    nameserver = parse_nameserver(spec)
    assert (nameserver.address, nameserver.port) == (address, port)


@pytest.mark.parametrize(
    "spec", ["localhost", "192.0.2.1:0", "192.0.2.1:65536", "192.0.2.1:dns", "[::1]5300", "[::1"]
)
def test_bad_nameservers_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError):
        parse_nameserver(spec)


@pytest.mark.parametrize(
    "kwargs",
    [{"nameservers": []}, {"nameservers": "127.0.0.1"}, {"timeout": 0}, {"edns_payload": 511}],
)
def test_bad_settings_are_usage_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        DnsResolver(**kwargs)  # type: ignore[arg-type]


def test_nameservers_are_shown_with_ports() -> None:
    assert DnsResolver(["192.0.2.1", "[2001:db8::1]:5300"]).nameservers == (
        "192.0.2.1@53",
        "2001:db8::1@5300",
    )
