"""An offline resolver answering TXT lookups from an RFC 1035 zone file (sync and async)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.SOA
import dns.rdtypes.txtbase
import dns.rrset
import dns.tokenizer
import dns.ttl
import dns.zonefile

from mailseal.core.txtanswer import TxtAnswer, TxtStatus
from mailseal.errors import UsageError

__all__ = ["ZoneFileResolver"]

DEFAULT_TTL = 3600
"""TTL of records that state none when the file has no $TTL (Knot's ``default-ttl``)."""

MAX_CNAME_CHAIN = 16
"""How many aliases a lookup follows before giving up (a loop, or a chain no resolver would follow)."""

# Relative owner names in a file without $ORIGIN land under this name when probing; no real
# zone can hold it (RFC 6761 §6.4 reserves .invalid).
_PROBE_ORIGIN = dns.name.from_text("origin-unknown.mailseal.invalid.")


class ZoneFileResolver:
    """Answer key lookups from a zone file, to check records before (or without) publishing them.

    Reads files the way servers keep them (RFC 1035 §5): ``$ORIGIN``, ``$TTL``,
    ``$GENERATE``, comments, relative and absolute names, multi-string TXT
    records in parentheses. The zone's origin is, in order: the ``origin``
    argument, otherwise the owner of the file's SOA record when that owner is
    written absolute or follows a ``$ORIGIN``. A file without any SOA is read as
    a plain list of records with absolute names (a key record drafted before
    publishing); then names neither in it nor above a name in it are NXDOMAIN.

    Answers follow authoritative semantics: names outside the zone and absent
    names are NXDOMAIN, names that exist (or are empty non-terminals) without
    TXT are NO_DATA, CNAMEs inside the file are followed. Nothing is
    DNSSEC-validated, so ``authenticated`` is always false. Wildcards are not
    expanded and ``$INCLUDE`` is refused.

    Raises :class:`UsageError` (naming the file and line) when the file cannot be
    read or parsed, or when its origin cannot be determined.
    """

    def __init__(self, path: str | os.PathLike[str], *, origin: str | None = None) -> None:
        """Read and index ``path`` now, so a bad file fails at start-up rather than per lookup."""
        self.path = os.fspath(path)
        text = self._read_text()
        apex = self._origin_argument(origin) if origin is not None else None
        apex, rrsets = self._load(text, apex)
        self._apex = apex
        self._txt: dict[dns.name.Name, tuple[tuple[bytes, ...], int]] = {}
        self._cname: dict[dns.name.Name, tuple[dns.name.Name, int]] = {}
        self._names: set[dns.name.Name] = set()
        self._negative_ttl = 0
        self._index(rrsets)

    @property
    def origin(self) -> str | None:
        """The zone's origin without the trailing dot, or ``None`` for a file without SOA."""
        return None if self._apex is None else self._apex.to_text(omit_final_dot=True)

    def __repr__(self) -> str:
        return f"ZoneFileResolver({self.path!r}, origin={self.origin!r})"

    async def lookup_txt(self, name: str) -> TxtAnswer:
        """Return the TXT records at ``name`` (no I/O: the file was read at construction)."""
        return self.lookup_txt_sync(name)

    def lookup_txt_sync(self, name: str) -> TxtAnswer:
        """Return the TXT records at ``name``, following CNAMEs inside the file."""
        try:
            qname = dns.name.from_text(name, origin=dns.name.root)
        except (dns.exception.DNSException, ValueError) as exc:
            return TxtAnswer.failure(TxtStatus.ERROR, f"invalid DNS name {name!r}: {exc}")
        return self._resolve(name, qname)

    def _resolve(self, name: str, original: dns.name.Name) -> TxtAnswer:
        qname, ttl = original, dns.ttl.MAX_TTL
        for _ in range(MAX_CNAME_CHAIN):
            if self._apex is not None and not qname.is_subdomain(self._apex):
                if qname == original:
                    return TxtAnswer.failure(TxtStatus.NXDOMAIN, f"{name} is outside {self._zone_text()}")
                return TxtAnswer.failure(
                    TxtStatus.ERROR,
                    f"{name} is an alias for {qname}, outside {self._zone_text()}: cannot follow it offline",
                )
            found = self._txt.get(qname)
            if found is not None:
                return TxtAnswer.found(found[0], ttl=min(ttl, found[1]))
            alias = self._cname.get(qname)
            if alias is None:
                break
            qname, ttl = alias[0], min(ttl, alias[1])
        else:
            return TxtAnswer.failure(TxtStatus.ERROR, f"{name}: CNAME chain longer than {MAX_CNAME_CHAIN}")
        where = f"{qname.to_text(omit_final_dot=True)} in {self.path}"
        if qname in self._names:
            return TxtAnswer.failure(TxtStatus.NO_DATA, f"{where} has no TXT records", ttl=self._negative_ttl)
        if self._apex is None and qname != original:
            # Without a zone, a CNAME target the file does not list may well exist in the DNS.
            return TxtAnswer.failure(TxtStatus.ERROR, f"{name} is an alias for {where}, which is not there")
        return TxtAnswer.failure(TxtStatus.NXDOMAIN, f"{where} does not exist", ttl=self._negative_ttl)

    def _zone_text(self) -> str:
        return f"zone {self.origin} in {self.path}"

    def _read_text(self) -> str:
        try:
            return Path(self.path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read zone file {self.path}: {exc}") from None

    @staticmethod
    def _origin_argument(origin: str) -> dns.name.Name:
        try:
            return dns.name.from_text(origin, origin=dns.name.root)
        except (dns.exception.DNSException, ValueError) as exc:
            raise UsageError(f"origin {origin!r} is not a valid domain name: {exc}") from None

    def _load(
        self, text: str, apex: dns.name.Name | None
    ) -> tuple[dns.name.Name | None, list[dns.rrset.RRset]]:
        """Find the origin (see the class docstring) and return it with the zone's RRsets."""
        if apex is not None:
            return apex, self._parse(text, apex)
        # Relative names before any $ORIGIN are exactly the records that land under the probe.
        relative = self._parse(text, _PROBE_ORIGIN)
        everything = self._parse(text, dns.name.root)
        relative_soa = [r for r in relative if r.rdtype == dns.rdatatype.SOA]
        soa_owners = {r.name for r in everything if r.rdtype == dns.rdatatype.SOA}
        if relative_soa or (relative and not soa_owners):
            example = relative[0].name.relativize(_PROBE_ORIGIN)
            raise UsageError(
                f"{self.path}: cannot tell the zone's origin: owner names such as {example} are relative, "
                "there is no $ORIGIN before them and no absolute SOA owner; "
                "pass origin= (mailseal: --origin DOMAIN)"
            )
        if len(soa_owners) > 1:
            names = ", ".join(sorted(n.to_text() for n in soa_owners))
            raise UsageError(
                f"{self.path}: SOA records at several names ({names}); pass origin= to pick the zone"
            )
        if not soa_owners:
            return None, everything
        (apex,) = soa_owners
        if relative:
            return apex, self._parse(text, apex)
        return apex, [r for r in everything if r.name.is_subdomain(apex)]

    def _parse(self, text: str, origin: dns.name.Name) -> list[dns.rrset.RRset]:
        """Parse with ``origin`` for leading relative names; lines outside it are ignored, as servers do."""
        manager = dns.zonefile.RRSetsReaderManager(origin, relativize=False, rdclass=dns.rdataclass.IN)
        tokenizer = dns.tokenizer.Tokenizer(text, self.path)
        try:
            # The transaction manager read_rrsets uses, but with directives allowed ($ORIGIN, $TTL).
            with manager.writer(replacement=True) as txn:  # type: ignore[no-untyped-call]
                reader = dns.zonefile.Reader(
                    tokenizer, dns.rdataclass.IN, txn, allow_include=False, default_ttl=DEFAULT_TTL
                )
                reader.read()
        except (dns.exception.DNSException, ValueError) as exc:
            _, line = tokenizer.where()
            reason = str(exc).removeprefix(f"{self.path}:{line}: ") or type(exc).__name__
            raise UsageError(f"{self.path}:{line}: invalid zone file: {reason}") from None
        return manager.rrsets

    def _index(self, rrsets: Iterable[dns.rrset.RRset]) -> None:
        for rrset in rrsets:
            self._add_name(rrset.name)
            if rrset.rdtype == dns.rdatatype.TXT:
                strings = tuple(
                    b"".join(rd.strings) for rd in rrset if isinstance(rd, dns.rdtypes.txtbase.TXTBase)
                )
                self._txt[rrset.name] = (strings, rrset.ttl)
            elif rrset.rdtype == dns.rdatatype.CNAME:
                target = next(iter(rrset))
                if isinstance(target, dns.rdtypes.ANY.CNAME.CNAME):
                    self._cname[rrset.name] = (target.target, rrset.ttl)
            elif rrset.rdtype == dns.rdatatype.SOA and rrset.name == self._apex:
                soa = next(iter(rrset))
                if isinstance(soa, dns.rdtypes.ANY.SOA.SOA):
                    self._negative_ttl = min(rrset.ttl, soa.minimum)  # RFC 2308 §5

    def _add_name(self, name: dns.name.Name) -> None:
        """Record ``name`` and its ancestors inside the zone: empty non-terminals exist (RFC 8020)."""
        while name not in self._names:
            self._names.add(name)
            if name == self._apex or name == dns.name.root:
                break
            name = name.parent()
