"""DNS UPDATE (RFC 2136) signed with TSIG (RFC 8945): change the TXT records at one name, atomically.

Every change carries a prerequisite naming the exact TXT RRset the caller
last read (RFC 2136 §2.4.2, "RRset exists (value dependent)", or §2.4.3 "RRset
does not exist"), so the server applies it only if nobody changed the name in
between; the caller decides, from what it read, which records are its own.
Refusals and network trouble raise :class:`~mailseal.errors.PublishError`
with a sentence that says what to fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rdtypes.txtbase
import dns.tsig
import dns.tsigkeyring
import dns.update

from mailseal.dns.resolver import parse_nameserver
from mailseal.errors import PublishError, UsageError

__all__ = ["TSIG_ALGORITHMS", "DnsUpdater", "TsigCredentials", "TxtStrings"]

TxtStrings = tuple[bytes, ...]
"""One TXT record as its character-strings (each at most 255 bytes)."""

TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1")
"""RFC 8945 §6: hmac-sha256 is the one to use; the others for servers that insist."""


@dataclass(frozen=True, slots=True)
class TsigCredentials:
    """A TSIG key: its name, base64 secret (never shown by ``repr``) and HMAC algorithm."""

    name: str
    secret: str = field(repr=False)
    algorithm: str = "hmac-sha256"

    def __post_init__(self) -> None:
        if self.algorithm.lower() not in TSIG_ALGORITHMS:
            raise UsageError(f"TSIG algorithm {self.algorithm!r}: use one of {', '.join(TSIG_ALGORITHMS)}")

    def _keyring(self) -> tuple[dict[dns.name.Name, dns.tsig.Key], dns.name.Name]:
        try:
            keyring = dns.tsigkeyring.from_text({self.name: (self.algorithm.lower(), self.secret)})
        except (ValueError, dns.exception.DNSException) as exc:
            raise UsageError(f"TSIG key {self.name}: the secret is not valid base64 ({exc})") from None
        return keyring, next(iter(keyring))


class DnsUpdater:
    """Send TSIG-signed UPDATEs for one zone to its primary server."""

    def __init__(
        self, primary: str, zone: str, tsig: TsigCredentials | None, *, timeout: float = 10.0
    ) -> None:
        """``primary`` is ``IP``, ``IP:PORT`` or ``[IPv6]:PORT``; ``zone`` the zone apex (the UPDATE's zone)."""
        server = parse_nameserver(primary)
        self.address, self.port = server.address, server.port
        try:
            self.zone = dns.name.from_text(zone, dns.name.root)
        except (dns.exception.DNSException, ValueError) as exc:
            raise UsageError(f"zone {zone!r} is not a valid domain name: {exc}") from None
        self.tsig = tsig
        self.timeout = timeout

    def __repr__(self) -> str:
        key = self.tsig.name if self.tsig else None
        return f"DnsUpdater({self.address}@{self.port}, zone={self.zone}, tsig={key!r})"

    @property
    def primary(self) -> str:
        """``address@port`` of the primary, for messages."""
        return f"{self.address}@{self.port}"

    def _name(self, name: str) -> dns.name.Name:
        qname = dns.name.from_text(name, dns.name.root)
        if not qname.is_subdomain(self.zone):
            raise UsageError(f"{name} is not in zone {self.zone}; set the zone that holds it")
        return qname

    def read_txt(self, name: str) -> tuple[TxtStrings, ...]:
        """The TXT records the primary serves at ``name`` now (TCP, no recursion)."""
        query = dns.message.make_query(self._name(name), dns.rdatatype.TXT)
        query.flags = 0
        try:
            response = dns.query.tcp(query, self.address, timeout=self.timeout, port=self.port)
        except dns.exception.Timeout:
            raise PublishError(
                f"the primary {self.primary} did not answer within {self.timeout:g} s"
            ) from None
        except (OSError, dns.exception.DNSException, EOFError) as exc:
            raise PublishError(f"cannot ask the primary {self.primary}: {exc}") from None
        rcode = response.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            return ()
        if rcode != dns.rcode.NOERROR:
            raise PublishError(
                f"the primary {self.primary} replied {dns.rcode.to_text(rcode)} for {name} TXT; "
                f"is it authoritative for {self.zone}?"
            )
        found = response.get_rrset(
            dns.message.ANSWER, query.question[0].name, dns.rdataclass.IN, dns.rdatatype.TXT
        )
        if found is None:
            return ()
        return tuple(tuple(rd.strings) for rd in found if isinstance(rd, dns.rdtypes.txtbase.TXTBase))

    def change_txt(
        self,
        name: str,
        *,
        expect: Sequence[TxtStrings],
        delete: Sequence[TxtStrings] = (),
        add: Sequence[TxtStrings] = (),
        ttl: int,
    ) -> bool:
        """Delete and add exact TXT records at ``name`` if its TXT RRset is exactly ``expect``.

        Returns ``False`` when the prerequisite failed (someone changed the
        name since it was read: read again and decide again), ``True`` when
        the server applied the change. Raises :class:`PublishError` when the
        server refuses it or cannot be reached.
        """
        qname = self._name(name)
        keyring, keyname = self.tsig._keyring() if self.tsig is not None else (None, None)
        update = dns.update.UpdateMessage(
            self.zone,
            keyring=keyring,
            keyname=keyname,
            keyalgorithm=self.tsig.algorithm.lower() if self.tsig is not None else dns.tsig.default_algorithm,
        )
        if expect:
            for strings in expect:
                update.present(qname, _rdata(strings))
        else:
            update.absent(qname, dns.rdatatype.TXT)
        for strings in delete:
            update.delete(qname, _rdata(strings))
        for strings in add:
            update.add(qname, ttl, _rdata(strings))
        rcode = self._send(update, name)
        if rcode == dns.rcode.NOERROR:
            return True
        if rcode in (dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN):
            return False
        raise PublishError(self._refusal(rcode, name))

    def _send(self, update: dns.update.UpdateMessage, name: str) -> dns.rcode.Rcode:
        try:
            response = dns.query.tcp(update, self.address, timeout=self.timeout, port=self.port)
        except dns.tsig.PeerBadKey:
            # Knot also answers BADKEY when it knows the key but its ACL refuses this update.
            raise PublishError(
                self._tsig_problem(
                    f"BADKEY: the primary does not know this key name, or knows it but does not allow it "
                    f"to update {name} (Knot answers an UPDATE its ACL refuses this way); check the key "
                    f"name and the server's update rules (they must allow TXT records under _domainkey)"
                )
            ) from None
        except dns.tsig.PeerBadSignature:
            raise PublishError(
                self._tsig_problem("BADSIG: the secret or algorithm differs from the primary's")
            ) from None
        except dns.tsig.PeerBadTime:
            raise PublishError(
                self._tsig_problem("BADTIME: this machine's clock and the primary's differ")
            ) from None
        except dns.tsig.PeerError as exc:
            raise PublishError(self._tsig_problem(str(exc) or type(exc).__name__)) from None
        except dns.exception.Timeout:
            raise PublishError(
                f"UPDATE of {name}: the primary {self.primary} did not answer within {self.timeout:g} s"
            ) from None
        except (OSError, dns.exception.DNSException, EOFError) as exc:
            raise PublishError(f"UPDATE of {name}: cannot reach the primary {self.primary}: {exc}") from None
        return response.rcode()

    def _tsig_problem(self, what: str) -> str:
        key = self.tsig.name if self.tsig is not None else "(none)"
        return f"the primary {self.primary} rejected TSIG key {key}: {what}"

    def _refusal(self, rcode: dns.rcode.Rcode, name: str) -> str:
        text = dns.rcode.to_text(rcode)
        if rcode == dns.rcode.NOTAUTH:
            if self.tsig is None:
                return (
                    f"the primary {self.primary} refused the UPDATE of {name} (NOTAUTH): configure a TSIG key"
                )
            return (
                f"the primary {self.primary} refused the UPDATE of {name} (NOTAUTH): TSIG key {self.tsig.name} "
                f"is not allowed to update {self.zone}, or the server is not authoritative for it"
            )
        if rcode == dns.rcode.REFUSED:
            return (
                f"the primary {self.primary} refused the UPDATE of {name} (REFUSED): allow updates of "
                f"{self.zone} for this key in the server's configuration"
            )
        if rcode == dns.rcode.NOTZONE:
            return f"{name} is not in zone {self.zone} at {self.primary} (NOTZONE): check the configured zone"
        return f"the primary {self.primary} rejected the UPDATE of {name}: {text}"


def _rdata(strings: TxtStrings) -> dns.rdtypes.ANY.TXT.TXT:
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings)
