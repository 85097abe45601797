"""The plain shape of aggregate-report XML read with regular expressions; anything else goes to ``xmlparse``.

Why a second reader: through lxml every ``<record>`` costs about 30 µs of
Python (an element proxy per child, a dictionary per level), four times what
the store needs, and it kept ingest under 10x parsedmarc on typical reports
(``benchmarks/bench_reports.py``). Nearly every report real receivers send has
one plain shape: UTF-8, no attributes below ``<feedback>``, no comments, CDATA,
entity or character references. This module reads exactly that shape, one
record per regular-expression match (C code), and applies the *same* rules as
``xmlparse`` through its helpers (``word``, ``domain_name``, ``integer``,
``header_of``), so both readers give equal values; a test checks that they do.

It never guesses: at the first byte outside the plain shape (a ``<!``, an
``&``, an attribute, a control character, an encoding other than UTF-8, a
record over 64 KiB, a missing field, a truncated document) it raises
:class:`NotPlain`, and the caller reads the document again with the hardened
lxml parser, which reads it, repairs it or refuses it with the reason. So the
guarantees (no DTD or entities, caps, precise reasons) stay those of
``xmlparse``; this module only decides faster when it can.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator
from typing import Final

from mailseal.reports.model import DkimAuth, Override, Record, Report, SpfAuth, Unreadable
from mailseal.reports.xmlparse import (
    MAX_COUNT,
    MAX_DKIM_PER_RECORD,
    MAX_TEXT,
    domain_name,
    header_of,
    integer,
    word,
)

__all__ = ["MAX_RECORD", "NotPlain", "PlainStream"]

MAX_RECORD: Final = 65536  # bytes of one record (and of the part before the first record)


class NotPlain(Exception):  # control flow between the two readers, never shown to a user
    """The document is not in the plain shape: read it with ``xmlparse`` instead."""


# Every repetition below is possessive (``*+``, ``?+``): the tokens are unambiguous, so giving
# back what a repetition took can never make a record match, and without it a record of many
# small elements that fails at its end backtracks quadratically (1.5 s of CPU for one 64 KiB
# record of ``<reason> </reason>``; tests/unit/reports/test_fast_reader.py has that attack).
_WS: Final = r"[ \t\r\n]*+"  # XML white space only (not \f, \v: they are not XML characters)
# Leaf text: no markup, no references, no carriage return (XML folds \r\n; lxml's text would differ),
# no character XML forbids. ']]>' and the text limits are checked after the match.
_TEXT: Final = r"[^<&\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]*+"
_NAME: Final = r"[a-z_]++"
_counter = iter(range(1 << 30))


def _leaves() -> str:
    """Any number of ``<name>text</name>`` (same name both ends) or ``<name/>``, white space between."""
    group = f"l{next(_counter)}"
    return f"(?:{_WS}(?:<(?P<{group}>{_NAME})>{_TEXT}</(?P={group})>|<{_NAME}/>))*+{_WS}"


_RECORD_BODY: Final = re.compile(
    f"{_WS}<row>(?P<row>{_leaves()})<policy_evaluated>(?P<verdict>{_leaves()})"
    f"(?P<reasons>(?:<reason>{_leaves()}</reason>{_WS})*+)</policy_evaluated>(?P<row_after>{_leaves()})</row>{_WS}"
    f"(?:<(?P<ids_name>identifiers|identities)>(?P<ids>{_leaves()})</(?P=ids_name)>{_WS})?+"
    f"(?:<auth_results>(?P<auth>{_WS}(?:(?:<dkim>{_leaves()}</dkim>|<spf>{_leaves()}</spf>){_WS})*+)"
    f"</auth_results>{_WS})?+"
)
_LEAF: Final = re.compile(f"<({_NAME})(?:/>|>([^<]*)</)")  # (name, text); text '' for <name/>
_REASON: Final = re.compile(r"<reason>(.*?)</reason>", re.S)
_AUTH: Final = re.compile(r"<(dkim|spf)>(.*?)</\1>", re.S)

_RECORD_START: Final = re.compile(rb"[ \t\r\n]*<record>")
_END: Final = re.compile(rb"[ \t\r\n]*</feedback>[ \t\r\n]*\Z")
_PROLOG: Final = re.compile(
    rb"(?:\xef\xbb\xbf)?"  # the declaration, if any, comes first (after a byte-order mark)
    rb"(?:<\?xml(?P<declaration>[ \t\r\n]+version[ \t\r\n]*=[ \t\r\n]*(?:\"1\.0\"|'1\.0')"
    rb"(?:[ \t\r\n]+encoding[ \t\r\n]*=[ \t\r\n]*(?:\"[A-Za-z][\w.-]*\"|'[A-Za-z][\w.-]*'))?"
    rb"(?:[ \t\r\n]+standalone[ \t\r\n]*=[ \t\r\n]*(?:\"(?:yes|no)\"|'(?:yes|no)'))?)[ \t\r\n]*\?>)?"
    rb"[ \t\r\n]*"
    rb"<feedback(?P<attributes>(?:[ \t\r\n]+[A-Za-z_][\w.:-]*[ \t\r\n]*=[ \t\r\n]*"
    rb"(?:\"[ !#-%'-;=-~]*\"|'[ -%(-;=-~]*'))*)[ \t\r\n]*>"  # values: printable ASCII, no < &
)
_ENCODING: Final = re.compile(rb"""encoding[ \t\r\n]*=[ \t\r\n]*["']([A-Za-z0-9._-]+)["']""")
_ATTRIBUTE: Final = re.compile(rb"""([A-Za-z_][\w.:-]*)[ \t\r\n]*=[ \t\r\n]*(?:"([^"]*)"|'([^']*)')""")
# The children of <feedback> before the first record: plain elements with plain content.
_TOP: Final = re.compile(rb"[ \t\r\n]*<([a-z_]+)>((?:[^<&\]]|<[a-z_]+/?>|</[a-z_]+>|\](?!\]>))*?)</\1>")
# A record's first two cells: the parts that differ between records of one report (see _Templates).
_ROW_START: Final = re.compile(
    rb"[ \t\r\n]*<row>[ \t\r\n]*<source_ip>([ \t\n!-%'-;=-\\^-~]*)</source_ip>"  # printable ASCII but < & ]
    rb"[ \t\r\n]*<count>([ \t\n0-9]*)</count>"
)
_UTF8_NAMES: Final = frozenset({b"utf-8", b"utf8"})  # (the header fragments are read as UTF-8)
# A namespace name libxml2 takes without a word: an absolute URI of plain characters.
_NAMESPACE: Final = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*:[A-Za-z0-9._~:/?#@!$()*+,;=-]*")


def _first(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Leaf texts by name, the first of each name winning (as ``xmlparse`` reads them), stripped and cut."""
    found: dict[str, str] = {}
    for name, text in pairs:
        if name not in found:
            found[name] = text.strip()[:MAX_TEXT]
    return found


def _record(body: bytes) -> Record:
    """One ``<record>``'s content -> Record, or NotPlain when anything is outside the plain shape."""
    if b"]]>" in body:
        raise NotPlain
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise NotPlain from None
    match = _RECORD_BODY.fullmatch(text)
    if match is None:
        raise NotPlain
    leaf = _LEAF.findall
    row = _first(leaf(match["row"]) + leaf(match["row_after"]))
    verdict = _first(leaf(match["verdict"]))
    if "policy_evaluated" in row or "reason" in verdict:
        raise NotPlain  # a leaf where the lxml reader would find the container first
    source_ip = row.get("source_ip", "")
    count_text = row.get("count", "")
    if not source_ip or not count_text.isdigit() or not count_text.isascii():
        raise NotPlain  # the lxml reader says precisely what is wrong
    overrides: tuple[Override, ...] = ()
    if match["reasons"]:
        found = []
        for reason in _REASON.findall(match["reasons"]):
            if "<reason>" in reason:
                raise NotPlain
            parts = _first(leaf(reason))
            found.append(Override(word(parts.get("type", "")) or "other", parts.get("comment") or None))
        overrides = tuple(found)
    ids = _first(leaf(match["ids"])) if match["ids"] is not None else {}
    dkim: list[DkimAuth] = []
    spf: list[SpfAuth] = []
    if match["auth"]:
        for kind, inner in _AUTH.findall(match["auth"]):
            if "<dkim>" in inner or "<spf>" in inner:
                raise NotPlain
            fields = _first(leaf(inner))
            if kind == "dkim":
                domain = domain_name(fields.get("domain", ""))
                if not domain or len(dkim) == MAX_DKIM_PER_RECORD:
                    raise NotPlain
                dkim.append(
                    DkimAuth(
                        domain,
                        sys.intern(fields.get("selector", "").lower()) or None,
                        word(fields.get("result", "")) or "none",
                        fields.get("human_result") or None,
                    )
                )
            elif len(spf) < MAX_DKIM_PER_RECORD:
                spf.append(
                    SpfAuth(
                        domain_name(fields.get("domain", "")),
                        word(fields.get("scope", "")) or None,
                        word(fields.get("result", "")) or "none",
                    )
                )
    try:
        count = integer(count_text, "count")
    except Unreadable:
        raise NotPlain from None
    return Record(
        source_ip[:64],
        count,
        word(verdict.get("disposition", "")) or "none",
        word(verdict.get("dkim", "")) or "none",
        word(verdict.get("spf", "")) or "none",
        domain_name(ids.get("header_from", "")),
        ids.get("envelope_from") or None,
        ids.get("envelope_to") or None,
        overrides,
        tuple(dkim),
        tuple(spf),
    )


class _Templates:
    """Records already read, by their text without the source IP and count: most records repeat one.

    A report's records typically differ only in those two cells (the same
    signing domains, selectors and results from many addresses), and every
    other field of a Record depends only on the rest of the text, so a record
    whose rest was read before is that Record with its own IP and count. Bounded
    (entries and key length); cleared when full. A pure function's memo: the
    values are exactly what :func:`_record` returns.
    """

    ENTRIES: Final = 512
    KEY_BYTES: Final = 2048

    def __init__(self) -> None:
        self.known: dict[bytes, Record] = {}

    def record(self, body: bytes) -> Record:
        cells = _ROW_START.match(body)
        if cells is None or len(body) > self.KEY_BYTES:
            return _record(body)
        key = body[cells.end(2) :]  # before it: white space, the fixed tags and the two cells
        known = self.known.get(key)
        if known is None:
            known = _record(body)
            if len(self.known) >= self.ENTRIES:
                self.known.clear()
            self.known[key] = known
            return known
        source_ip = cells[1].strip().decode("ascii")
        digits = cells[2].strip()
        count = int(digits) if digits.isdigit() and len(digits) <= 16 else -1
        if not source_ip or not 0 <= count <= MAX_COUNT:
            return _record(body)  # which refuses it (NotPlain): the lxml reader says why
        return Record(
            source_ip[:64],
            count,
            known.disposition,
            known.dkim_aligned,
            known.spf_aligned,
            known.header_from,
            known.envelope_from,
            known.envelope_to,
            known.overrides,
            known.dkim,
            known.spf,
        )


def _namespace(prolog: re.Match[bytes]) -> str:
    """The default namespace <feedback> declares ('' for none); NotPlain for anything unusual."""
    declaration = prolog["declaration"]
    if declaration is not None:
        encoding = _ENCODING.search(declaration)
        if encoding is not None and encoding[1].lower() not in _UTF8_NAMES:
            raise NotPlain
    names: set[bytes] = set()
    prefixes: set[bytes] = set()
    used: set[bytes] = set()
    namespace = b""
    for name, double, single in _ATTRIBUTE.findall(prolog["attributes"]):
        if name in names:
            raise NotPlain  # a repeated attribute is not well-formed
        names.add(name)
        value = double or single
        if name == b"xmlns" or name.startswith(b"xmlns:"):
            if _NAMESPACE.fullmatch(value) is None:
                raise NotPlain  # empty, relative or oddly spelled: lxml says what it makes of it
            if name == b"xmlns":
                namespace = value
            else:
                prefixes.add(name[6:])
        elif b":" in name:
            used.add(name.partition(b":")[0])
    if not used <= prefixes or b"xml" in prefixes or b"xmlns" in prefixes:
        raise NotPlain
    try:
        return namespace.decode("ascii")
    except UnicodeDecodeError:
        raise NotPlain from None


class PlainStream:
    """A report in the plain shape read as a stream, like :class:`~mailseal.reports.xmlparse.ReportStream`.

    :meth:`header` first, then :meth:`records`; memory is one input chunk plus
    at most one record. Either may raise :class:`NotPlain` (records may already
    have been handed out: the store's savepoint undoes them) or, for a header
    the shared rules refuse, :class:`NotPlain` as well: only ``xmlparse`` words
    reasons.
    """

    repaired: Final[bool] = False  # only well-formed documents are read here

    def __init__(self, chunks: Iterable[bytes]) -> None:
        """Nothing is read until :meth:`header`."""
        self._chunks = iter(chunks)
        self._buffer = b""
        self._position = 0
        self._ended = False
        self._templates = _Templates()

    def _more(self) -> bool:
        """Append the next chunk to the buffer (dropping what was read); False at the end of the input."""
        for chunk in self._chunks:
            if chunk:
                self._buffer = self._buffer[self._position :] + chunk
                self._position = 0
                return True
        self._ended = True
        return False

    def header(self) -> Report:
        """The report without records, from everything before the first ``<record>``."""
        while True:
            head = self._buffer
            start = head.find(b"<record>")
            if start >= 0 or b"</feedback>" in head:
                break
            if len(head) > MAX_RECORD or not self._more():
                raise NotPlain
        head = head if start < 0 else head[:start]
        if len(head) > MAX_RECORD or b"<!" in head or b"&" in head:
            raise NotPlain
        prolog = _PROLOG.match(head)
        if prolog is None:
            raise NotPlain
        namespace = _namespace(prolog)
        fragments = []
        position = prolog.end()
        while True:
            top = _TOP.match(head, position)
            if top is None:
                break
            fragments.append(top[0].strip())
            position = top.end()
        self._position = position
        if head[position:].strip(b" \t\r\n") and start >= 0:
            raise NotPlain
        try:
            return header_of(namespace, fragments)
        except Unreadable:
            raise NotPlain from None

    def records(self) -> Iterator[Record]:
        """Every record in document order; the document must end with ``</feedback>``."""
        record = self._templates.record
        opening = _RECORD_START.match
        while True:
            buffer, position = self._buffer, self._position
            end = buffer.find(b"</record>", position)
            while end >= 0:  # every complete record already in the buffer
                opened = opening(buffer, position, end)
                if opened is None or end - opened.end() > MAX_RECORD:
                    raise NotPlain  # something other than a plain record: the lxml reader sorts it out
                self._position = position = end + 9
                yield record(buffer[opened.end() : end])
                end = buffer.find(b"</record>", position)
            if self._ended:
                if _END.match(buffer, position) is None:
                    raise NotPlain
                return
            if len(buffer) - position > MAX_RECORD:
                raise NotPlain
            self._more()
