"""Asking a zone's authoritative servers directly: find them, query each, see whether answers are signed.

Key rotation waits until *every* authoritative server serves a new key, and
``keys check`` compares what each serves; a recursive resolver would hide
both (it answers from one server, or from its cache). Queries go without
recursion (RD clear), with the DO bit when DNSSEC is wanted (RFC 3225), over
UDP with a TCP retry for truncated replies (RFC 7766 §5). Nothing here raises
for DNS trouble: every outcome is a value.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.RRSIG
import dns.rdtypes.txtbase
import dns.resolver
import dns.rrset

from mailseal.core.txtanswer import TxtStatus
from mailseal.dns.resolver import parse_nameserver

__all__ = [
    "AuthoritativeServers",
    "DnssecStatus",
    "ServerAnswer",
    "authoritative_servers",
    "find_zone",
    "query_txt",
]


class DnssecStatus(StrEnum):
    """Whether the authoritative answer is DNSSEC-signed (RFC 4035 §3.1.1: DO bit -> RRSIGs in the answer)."""

    NOT_CHECKED = "not-checked"  # no DO bit, or no records to check
    UNSIGNED = "unsigned"  # the answer carries no RRSIG
    SIGNED = "signed"  # an RRSIG covers the TXT records and is inside its validity period now
    EXPIRED = "expired"  # RRSIGs present, none valid now: validating resolvers answer SERVFAIL


@dataclass(frozen=True, slots=True)
class ServerAnswer:
    """One authoritative server's answer for TXT at one name; each record kept as its character-strings."""

    server: str  # "address@port"
    status: TxtStatus
    records: tuple[tuple[bytes, ...], ...] = ()
    ttl: int = 0
    authoritative: bool = False
    dnssec: DnssecStatus = DnssecStatus.NOT_CHECKED
    detail: str = ""

    @property
    def joined(self) -> tuple[bytes, ...]:
        """Each record's strings concatenated (RFC 6376 §3.6.2.2), as verifiers read them."""
        return tuple(b"".join(strings) for strings in self.records)

    @property
    def texts(self) -> frozenset[str]:
        """The joined records as text (bytes that are not ASCII shown as escapes)."""
        return frozenset(r.decode("ascii", errors="backslashreplace") for r in self.joined)


@dataclass(frozen=True, slots=True)
class AuthoritativeServers:
    """The zone holding a name and the addresses of its authoritative servers, or why they are unknown."""

    zone: str | None
    servers: tuple[str, ...]
    problem: str = ""


def _address(text: str, port: int) -> str:
    return f"[{text}]:{port}" if ipaddress.ip_address(text).version == 6 else f"{text}:{port}"


def _resolver(nameservers: Sequence[str] | None, timeout: float) -> dns.resolver.Resolver:
    resolver = dns.resolver.Resolver(configure=nameservers is None)
    if nameservers is not None:
        resolver.nameservers = [parse_nameserver(s) for s in nameservers]
    resolver.lifetime = timeout
    resolver.cache = None
    resolver.search = []
    resolver.use_search_by_default = False
    return resolver


def find_zone(name: str, *, nameservers: Sequence[str] | None = None, timeout: float = 5.0) -> str | None:
    """The apex of the zone holding ``name`` (the closest SOA above it), or ``None`` when DNS cannot tell."""
    try:
        apex = dns.resolver.zone_for_name(
            dns.name.from_text(name, dns.name.root), resolver=_resolver(nameservers, timeout)
        )
    except (dns.exception.DNSException, ValueError):
        return None
    return apex.to_text(omit_final_dot=True)


def authoritative_servers(
    name: str,
    *,
    nameservers: Sequence[str] | None = None,
    zone: str | None = None,
    port: int = 53,
    timeout: float = 5.0,
) -> AuthoritativeServers:
    """Find the zone of ``name`` (unless given) and the addresses of its NS hosts, through a resolver.

    ``nameservers`` are the resolvers to ask (``None``: the system's);
    ``port`` is the port the authoritative servers listen on (53 except in
    tests). Never raises for DNS trouble.
    """
    try:
        resolver = _resolver(nameservers, timeout)
    except (dns.exception.DNSException, ValueError) as exc:
        return AuthoritativeServers(zone, (), f"no usable resolver: {exc}")
    try:
        apex = (
            dns.name.from_text(zone, dns.name.root)
            if zone is not None
            else dns.resolver.zone_for_name(dns.name.from_text(name, dns.name.root), resolver=resolver)
        )
    except dns.exception.DNSException as exc:
        return AuthoritativeServers(None, (), f"cannot find the zone of {name}: {_text(exc)}")
    zone_text = apex.to_text(omit_final_dot=True)
    try:
        ns_answer = resolver.resolve(apex, dns.rdatatype.NS, raise_on_no_answer=False, search=False)
    except dns.exception.DNSException as exc:
        return AuthoritativeServers(
            zone_text, (), f"cannot look up the NS records of {zone_text}: {_text(exc)}"
        )
    hosts = sorted({rd.target for rd in ns_answer.rrset or () if hasattr(rd, "target")})
    servers: set[str] = set()
    problems: list[str] = []
    for host in hosts:
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                addresses = resolver.resolve(host, rdtype, raise_on_no_answer=False, search=False)
            except dns.exception.DNSException as exc:
                problems.append(f"{host} {rdtype.name}: {_text(exc)}")
                continue
            servers.update(
                _address(rd.address, port) for rd in addresses.rrset or () if hasattr(rd, "address")
            )
    if not servers:
        why = "; ".join(problems) or "no NS records with addresses"
        return AuthoritativeServers(zone_text, (), f"no authoritative server found for {zone_text}: {why}")
    return AuthoritativeServers(zone_text, tuple(sorted(servers)))


def query_txt(
    server: str, name: str, *, dnssec: bool = False, timeout: float = 3.0, now: float | None = None
) -> ServerAnswer:
    """Ask ``server`` (``IP``, ``IP:PORT`` or ``[IPv6]:PORT``) for TXT at ``name``, without recursion.

    With ``dnssec`` the query has the DO bit and the answer's RRSIGs are
    checked for their validity period at ``now`` (seconds since the epoch;
    default: the clock). Whether the signatures validate up to the root is
    what a validating resolver's AD bit says
    (:class:`~mailseal.dns.resolver.DnsResolver`).
    """
    nameserver = parse_nameserver(server)
    where = f"{nameserver.address}@{nameserver.port}"
    try:
        qname = dns.name.from_text(name, dns.name.root)
        response = _ask(
            nameserver.address, nameserver.port, qname, dns.rdatatype.TXT, dnssec=dnssec, timeout=timeout
        )
    except dns.exception.Timeout:
        return ServerAnswer(where, TxtStatus.TIMEOUT, detail=f"{where}: no reply within {timeout:g} s")
    except (dns.exception.DNSException, OSError, ValueError, EOFError, TypeError) as exc:
        return ServerAnswer(where, TxtStatus.ERROR, detail=f"{where}: {_text(exc)}")
    authoritative = bool(response.flags & dns.flags.AA)
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return ServerAnswer(
            where, TxtStatus.NXDOMAIN, (), _negative_ttl(response), authoritative, detail=f"{where}: NXDOMAIN"
        )
    if rcode == dns.rcode.SERVFAIL:
        return ServerAnswer(where, TxtStatus.SERVFAIL, detail=f"{where}: replied SERVFAIL")
    if rcode != dns.rcode.NOERROR:
        return ServerAnswer(where, TxtStatus.ERROR, detail=f"{where}: replied {dns.rcode.to_text(rcode)}")
    try:
        chain = response.resolve_chaining()
    except dns.exception.DNSException as exc:
        return ServerAnswer(where, TxtStatus.ERROR, detail=f"{where}: {_text(exc)}")
    rrset = chain.answer
    if rrset is None:
        return ServerAnswer(
            where,
            TxtStatus.NO_DATA,
            (),
            _negative_ttl(response),
            authoritative,
            detail=f"{where}: no TXT records",
        )
    records = tuple(tuple(rd.strings) for rd in rrset if isinstance(rd, dns.rdtypes.txtbase.TXTBase))
    status, detail = DnssecStatus.NOT_CHECKED, ""
    if dnssec:
        status, detail = _check_signature(response, rrset, time.time() if now is None else now)
    return ServerAnswer(where, TxtStatus.FOUND, records, chain.minimum_ttl, authoritative, status, detail)


def _ask(
    address: str,
    port: int,
    qname: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    *,
    dnssec: bool,
    timeout: float,
) -> dns.message.QueryMessage:
    query = dns.message.make_query(qname, rdtype, want_dnssec=dnssec, use_edns=0, payload=1232)
    query.flags &= ~dns.flags.RD
    response, _tcp = dns.query.udp_with_fallback(query, address, timeout=timeout, port=port)
    if not isinstance(response, dns.message.QueryMessage):  # pragma: no cover - a reply to a query is one
        raise TypeError(f"the reply to a query is a {type(response).__name__}")
    return response


def _negative_ttl(response: dns.message.Message) -> int:
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return min(rrset.ttl, min(getattr(rd, "minimum", rrset.ttl) for rd in rrset))
    return 0


def _check_signature(
    response: dns.message.Message, rrset: dns.rrset.RRset, now: float
) -> tuple[DnssecStatus, str]:
    """Whether an RRSIG covers the TXT answer, and whether ``now`` is inside its validity period.

    The signature itself is checked by a validating resolver (its AD bit):
    that also proves the chain of trust to the root, which a check against
    the zone's own DNSKEY could not.
    """
    signatures = response.get_rrset(
        dns.message.ANSWER, rrset.name, dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.TXT
    )
    if signatures is None:
        return DnssecStatus.UNSIGNED, "the answer carries no RRSIG"
    windows = [
        (rd.inception, rd.expiration) for rd in signatures if isinstance(rd, dns.rdtypes.ANY.RRSIG.RRSIG)
    ]
    current = [w for w in windows if w[0] <= now <= w[1]]
    if not current:
        ends = max((w[1] for w in windows), default=0)
        return (
            DnssecStatus.EXPIRED,
            f"no RRSIG is valid now (the latest expired or starts outside now; ends {ends})",
        )
    expires = max(w[1] for w in current)
    return (
        DnssecStatus.SIGNED,
        f"signed; the RRSIG is valid for {max(0, int(expires - now)) // 86400} more days",
    )


def _text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
