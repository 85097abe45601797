"""An offline resolver answering TXT lookups from an RFC 1035 zone file (sync and async)."""

from __future__ import annotations

import os
import re
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
        return None if self._apex is None else self._apex.canonicalize().to_text(omit_final_dot=True)

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
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
            raise UsageError(f"cannot read zone file {self.path}: {why}") from None

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
        relative, soa_owners = self._scan_owners(text)
        absolute_soa = {owner for owner in soa_owners if owner.is_absolute()}
        relative_soa = any(not owner.is_absolute() for owner in soa_owners)
        if relative and (relative_soa or not absolute_soa):
            raise UsageError(
                f"{self.path}: cannot tell the zone's origin: owner names such as {relative[0]} are "
                "relative, with no $ORIGIN before them and no absolute SOA owner; "
                "pass origin= (mailseal verify: --zone-origin DOMAIN)"
            )
        if len(absolute_soa) > 1:
            names = ", ".join(sorted(n.to_text() for n in absolute_soa))
            raise UsageError(
                f"{self.path}: SOA records at several names ({names}); pass origin= to pick the zone"
            )
        if not absolute_soa:
            return None, self._parse(text, dns.name.root)
        (apex,) = absolute_soa
        return apex, self._parse(text, apex)

    def _scan_owners(self, text: str) -> tuple[list[dns.name.Name], list[dns.name.Name]]:
        """Return the owners that are relative with no $ORIGIN before them, and the SOA owners.

        dnspython's reader needs the origin before it reads a line, and refuses
        an SOA anywhere but at that origin, so the SOA owner is found first
        with its tokenizer; the full parse then checks everything.
        """
        tokenizer = _RecordTokenizer(text, self.path)
        origin: dns.name.Name | None = None
        owner: dns.name.Name | None = None
        relative: list[dns.name.Name] = []
        soa_owners: list[dns.name.Name] = []
        try:
            while not (token := tokenizer.get(want_leading=True)).is_eof():
                if token.is_eol():
                    continue
                fields = _rest_of_line(tokenizer)
                if token.is_whitespace():  # the owner of the previous record, RFC 1035 §5.1
                    pass
                elif token.value.upper() == "$ORIGIN" and fields:
                    origin = dns.name.from_text(fields[0].value, origin)
                    continue
                elif token.value.upper() == "$GENERATE" and len(fields) > 1:  # $GENERATE range lhs ...
                    generated = dns.name.from_text(fields[1].value, origin)
                    if not generated.is_absolute():
                        relative.append(generated)
                    continue
                elif token.value.startswith("$"):  # $TTL, $INCLUDE: checked by the full parse
                    continue
                else:
                    owner = tokenizer.as_name(token, origin)
                if owner is None:
                    continue
                if not owner.is_absolute():
                    relative.append(owner)
                if _record_type(fields) == "SOA":
                    soa_owners.append(owner)
        except (dns.exception.DNSException, ValueError) as exc:
            raise self._syntax_error(tokenizer, exc) from None
        return relative, soa_owners

    def _parse(self, text: str, origin: dns.name.Name) -> list[dns.rrset.RRset]:
        """Parse with ``origin`` for leading relative names; lines outside it are ignored, as servers do."""
        manager = dns.zonefile.RRSetsReaderManager(origin, relativize=False, rdclass=dns.rdataclass.IN)
        tokenizer = _RecordTokenizer(text, self.path)
        try:
            # The transaction manager read_rrsets uses, but with directives allowed ($ORIGIN, $TTL).
            with manager.writer(replacement=True) as txn:  # type: ignore[no-untyped-call]
                reader = dns.zonefile.Reader(
                    tokenizer, dns.rdataclass.IN, txn, allow_include=False, default_ttl=DEFAULT_TTL
                )
                reader.read()
        except (dns.exception.DNSException, ValueError) as exc:
            raise self._syntax_error(tokenizer, exc) from None
        return manager.rrsets

    def _syntax_error(self, tokenizer: _RecordTokenizer, exc: Exception) -> UsageError:
        """Report dnspython's reason with the file and line, not as a dnspython traceback."""
        reason = re.sub(rf"^{re.escape(self.path)}:\d+: ", "", str(exc)) or type(exc).__name__
        return UsageError(f"{self.path}:{tokenizer.record_line}: invalid zone file: {reason}")

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


class _RecordTokenizer(dns.tokenizer.Tokenizer):
    """A tokenizer that remembers the line where the current record began.

    dnspython reports the line it stopped on, which is the next line when a
    record's problem shows only at its end; the record's first line is where
    a user should look.
    """

    record_line = 1
    _line_done = True

    def get(self, want_leading: bool = False, want_comment: bool = False) -> dns.tokenizer.Token:  # noqa: FBT001, FBT002 - dnspython's signature
        token = super().get(want_leading, want_comment)
        if token.is_eol_or_eof():
            self._line_done = True
        elif self._line_done:
            self._line_done = False
            self.record_line = self.line_number
        return token


def _rest_of_line(tokenizer: dns.tokenizer.Tokenizer) -> list[dns.tokenizer.Token]:
    fields: list[dns.tokenizer.Token] = []
    while not (token := tokenizer.get()).is_eol_or_eof():
        fields.append(token)
    return fields


def _record_type(fields: list[dns.tokenizer.Token]) -> str | None:
    """The type field of an RR line after its owner: the first that is neither a TTL nor a class."""
    for field in fields:
        if not field.is_identifier():
            return None
        try:
            dns.ttl.from_text(field.value)
            continue
        except dns.ttl.BadTTL:
            pass
        try:
            dns.rdataclass.from_text(field.value)
            continue
        except dns.rdataclass.UnknownRdataclass:
            return str(field.value).upper()
    return None
