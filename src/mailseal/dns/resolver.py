"""TXT lookups over the network with dnspython, as TxtAnswer values (sync and async)."""

from __future__ import annotations

import importlib
import ipaddress
import logging
from collections.abc import Sequence

import dns.asyncbackend
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.txtbase
import dns.resolver

from mailseal.core.txtanswer import TxtAnswer, TxtStatus
from mailseal.errors import UsageError

__all__ = ["DEFAULT_EDNS_PAYLOAD", "DnsResolver", "parse_nameserver", "preload"]

_log = logging.getLogger(__name__)

DEFAULT_EDNS_PAYLOAD = 1232
"""EDNS UDP payload size (RFC 6891 §6.2.5); 1232 avoids IP fragmentation (DNS flag day 2020)."""

# dnspython's ErrorTuple: (server, used_tcp, port, exception or rcode text, response).
_ErrorTuple = tuple[str, bool, int, Exception | str, dns.message.Message | None]


def preload() -> None:
    """Import now the modules dnspython imports on first use (its asyncio backend, rdata classes).

    A daemon that drops privileges after start-up may no longer be able to read
    its own site-packages (e.g. a Python installed under /root).
    """
    dns.asyncbackend.get_backend("asyncio")
    for name in ("TXT", "CNAME", "DNAME", "SOA", "NS", "RRSIG", "NSEC", "NSEC3", "OPT"):
        importlib.import_module(f"dns.rdtypes.ANY.{name}")
    for name in ("A", "AAAA"):
        importlib.import_module(f"dns.rdtypes.IN.{name}")


def parse_nameserver(spec: str) -> dns.nameserver.Do53Nameserver:
    """Turn ``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` into a dnspython nameserver.

    Only addresses are accepted: a host name would need DNS to find the DNS server.
    Raises :class:`UsageError` for anything else.
    """
    text = spec.strip()
    port = 53
    host = text
    if text.startswith("["):
        close = text.find("]")
        rest = text[close + 1 :] if close != -1 else "?"
        if rest and not rest.startswith(":"):
            raise UsageError(f"nameserver {spec!r}: expected [IPv6] or [IPv6]:PORT")
        host = text[1:close]
        if rest:
            port = _parse_port(spec, rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _parse_port(spec, port_text)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"nameserver {spec!r} is not an IP address (optionally with :PORT)") from None
    return dns.nameserver.Do53Nameserver(str(address), port)


def _parse_port(spec: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"nameserver {spec!r}: port must be a number from 1 to 65535")
    return int(text)


class DnsResolver:
    """Look up DKIM key records (RFC 6376 §3.6.2.2) through recursive or authoritative servers.

    Lookups never raise for DNS trouble: every outcome is a :class:`TxtAnswer`
    (RFC 6376 §6.1.2 needs to tell "no key" from "DNS failed"). The names are
    treated as absolute; no search list is applied, so a missing key can never be
    "found" under a local domain.

    With ``want_dnssec`` the queries carry the DO bit (RFC 3225) and the AD flag
    (RFC 6840 §5.7) so a validating resolver reports whether it validated;
    ``authenticated`` is true only when the reply has AD set. That is only as
    trustworthy as the path to the resolver (RFC 4035 §4.9.3): use a local one.

    Truncated UDP replies are retried over TCP (RFC 7766 §5), which RSA-4096 key
    records need when the EDNS payload is small or EDNS is stripped on the path.
    """

    def __init__(
        self,
        nameservers: Sequence[str] | None = None,
        *,
        timeout: float = 5.0,
        want_dnssec: bool = True,
        edns_payload: int = DEFAULT_EDNS_PAYLOAD,
    ) -> None:
        """Configure the servers (``None``: the system's resolv.conf) and the time budget per lookup.

        ``timeout`` bounds a whole lookup, retries and TCP fallback included.
        Raises :class:`UsageError` for unusable arguments or an unusable system
        configuration.
        """
        if isinstance(nameservers, str):
            raise UsageError("nameservers must be a sequence of addresses, not one string")
        if not timeout > 0:
            raise UsageError(f"timeout must be positive, not {timeout!r}")
        if not 512 <= edns_payload <= 65535:
            raise UsageError(f"edns_payload must be from 512 to 65535, not {edns_payload!r}")
        servers = None if nameservers is None else [parse_nameserver(s) for s in nameservers]
        if servers is not None and not servers:
            raise UsageError("nameservers is empty; pass None to use the system resolver configuration")
        self._timeout = float(timeout)
        self._want_dnssec = want_dnssec
        try:
            self._sync = dns.resolver.Resolver(configure=servers is None)
            self._async = dns.asyncresolver.Resolver(configure=servers is None)
        except dns.resolver.NoResolverConfiguration as exc:
            raise UsageError(f"cannot read the system resolver configuration: {exc}") from None
        for resolver in (self._sync, self._async):
            self._configure(resolver, servers, edns_payload)

    def _configure(
        self,
        resolver: dns.resolver.BaseResolver,
        servers: list[dns.nameserver.Do53Nameserver] | None,
        edns_payload: int,
    ) -> None:
        if servers is not None:
            resolver.nameservers = list(servers)
        elif not resolver.nameservers:
            raise UsageError("the system resolver configuration (resolv.conf) lists no nameservers")
        # Key names are absolute (RFC 6376 §3.6.2.1): never try them under a search domain.
        resolver.domain = dns.name.root
        resolver.search = []
        resolver.use_search_by_default = False
        resolver.cache = None  # mailseal.dns.cache does caching, with an injectable clock
        resolver.lifetime = self._timeout
        resolver.timeout = min(resolver.timeout, self._timeout)
        resolver.retry_servfail = False
        if self._want_dnssec:
            resolver.use_edns(0, dns.flags.DO, edns_payload)
            resolver.flags = dns.flags.RD | dns.flags.AD
        else:
            resolver.use_edns(0, 0, edns_payload)
            resolver.flags = dns.flags.RD

    @property
    def nameservers(self) -> tuple[str, ...]:
        """The servers asked, as ``address@port`` (for messages and logs)."""
        return tuple(
            f"{ns.address}@{ns.port}"
            if isinstance(ns, dns.nameserver.AddressAndPortNameserver)
            else f"{ns}@{self._sync.nameserver_ports.get(str(ns), self._sync.port)}"
            for ns in self._sync.nameservers
        )

    def __repr__(self) -> str:
        return f"DnsResolver(nameservers={list(self.nameservers)!r}, timeout={self._timeout!r})"

    async def lookup_txt(self, name: str) -> TxtAnswer:
        """Return the TXT records at ``name`` without blocking the loop; never raises for DNS trouble."""
        qname = _qname(name)
        if isinstance(qname, TxtAnswer):
            return qname
        try:
            answer = await self._async.resolve(
                qname, dns.rdatatype.TXT, dns.rdataclass.IN, raise_on_no_answer=False, search=False
            )
        except Exception as exc:  # noqa: BLE001 - lookups report every failure as a value (interface contract)
            return self._failure(name, exc)
        return self._from_answer(name, answer)

    def lookup_txt_sync(self, name: str) -> TxtAnswer:
        """Return the TXT records at ``name``, blocking; never raises for DNS trouble."""
        qname = _qname(name)
        if isinstance(qname, TxtAnswer):
            return qname
        try:
            answer = self._sync.resolve(
                qname, dns.rdatatype.TXT, dns.rdataclass.IN, raise_on_no_answer=False, search=False
            )
        except Exception as exc:  # noqa: BLE001 - lookups report every failure as a value (interface contract)
            return self._failure(name, exc)
        return self._from_answer(name, answer)

    def _authenticated(self, response: dns.message.Message) -> bool:
        return self._want_dnssec and bool(response.flags & dns.flags.AD)

    def _from_answer(self, name: str, answer: dns.resolver.Answer) -> TxtAnswer:
        # minimum_ttl covers a CNAME chain and, for no-data, the SOA (RFC 2308 §5).
        ttl = answer.chaining_result.minimum_ttl
        authenticated = self._authenticated(answer.response)
        if answer.rrset is None:
            return TxtAnswer(TxtStatus.NO_DATA, (), ttl, authenticated, f"{name} has no TXT records")
        records = tuple(
            b"".join(rdata.strings)
            for rdata in answer.rrset
            if isinstance(rdata, dns.rdtypes.txtbase.TXTBase)
        )
        return TxtAnswer.found(records, ttl=ttl, authenticated=authenticated)

    def _failure(self, name: str, exc: Exception) -> TxtAnswer:
        if isinstance(exc, dns.resolver.NXDOMAIN):
            return self._nxdomain(name, exc)
        if isinstance(exc, dns.exception.Timeout):
            servers = ", ".join(self.nameservers)
            return TxtAnswer.failure(
                TxtStatus.TIMEOUT, f"no reply for {name} TXT from {servers} within {self._timeout:g} s"
            )
        if isinstance(exc, dns.resolver.NoNameservers):
            errors: list[_ErrorTuple] = exc.kwargs.get("errors", [])
            detail = f"{name} TXT: " + "; ".join(_error_text(e) for e in errors)
            servfail = any(e[3] == "SERVFAIL" for e in errors)
            return TxtAnswer.failure(TxtStatus.SERVFAIL if servfail else TxtStatus.ERROR, detail)
        if isinstance(exc, dns.exception.DNSException):
            return TxtAnswer.failure(TxtStatus.ERROR, f"{name} TXT: {_exception_text(exc)}")
        # Not a DNS outcome dnspython documents: still a value, but worth a log line.
        _log.warning("unexpected error looking up %s TXT", name, exc_info=exc)
        return TxtAnswer.failure(TxtStatus.ERROR, f"{name} TXT: unexpected {_exception_text(exc)}")

    def _nxdomain(self, name: str, exc: dns.resolver.NXDOMAIN) -> TxtAnswer:
        ttl = 0
        authenticated = False
        responses: dict[dns.name.Name, dns.message.QueryMessage] = exc.kwargs.get("responses", {})
        for response in responses.values():
            authenticated = self._authenticated(response)
            try:
                ttl = response.resolve_chaining().minimum_ttl  # RFC 2308 §5: from the SOA
            except dns.exception.DNSException:
                ttl = 0
        return TxtAnswer(TxtStatus.NXDOMAIN, (), ttl, authenticated, f"{name} does not exist (NXDOMAIN)")


def _qname(name: str) -> dns.name.Name | TxtAnswer:
    """Parse ``name`` as absolute; a name that cannot exist in DNS is an ERROR answer, not an exception."""
    if not name or name == ".":
        return TxtAnswer.failure(TxtStatus.ERROR, "empty DNS name")
    try:
        return dns.name.from_text(name, origin=dns.name.root)
    except (dns.exception.DNSException, ValueError) as exc:
        return TxtAnswer.failure(TxtStatus.ERROR, f"invalid DNS name {name!r}: {_exception_text(exc)}")


def _error_text(error: _ErrorTuple) -> str:
    """One server's failure, e.g. ``127.0.0.1@53/udp: replied REFUSED``."""
    server, tcp, port, problem, _response = error
    where = f"{server.removeprefix('Do53:').rsplit('@', 1)[0]}@{port}/{'tcp' if tcp else 'udp'}"
    if isinstance(problem, str):  # dnspython passes an unwanted rcode as its text
        return f"{where}: replied {problem}"
    if isinstance(problem, dns.message.Truncated):
        return f"{where}: reply truncated even over TCP"
    if isinstance(problem, dns.exception.FormError | EOFError):
        return f"{where}: malformed reply ({_exception_text(problem)})"
    if isinstance(problem, OSError):
        return f"{where}: network error ({_exception_text(problem)})"
    return f"{where}: {_exception_text(problem)}"


def _exception_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
