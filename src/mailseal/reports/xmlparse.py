"""DMARC aggregate report XML -> :class:`Report`, streamed through a hardened parser.

The only importer of lxml. Reports are untrusted input, so the parser never
expands entities, never loads a DTD or anything over the network, refuses a
document type declaration outright (no aggregate report has one), and keeps
only one ``<record>`` in memory at a time.

Layouts read: RFC 7489 Appendix C (no namespace), the drafts before it
(``identities`` for ``identifiers``, no ``version``), and DMARCbis / RFC 9990
(namespace ``urn:ietf:params:xml:ns:dmarc-2.0``, ``np``, ``testing``,
``discovery_method``, mandatory DKIM ``selector``, no ``pct``).

Tolerant where real reporters are sloppy: upper-case words (``Pass``), stray
markup inside an element, invalid UTF-8 and empty elements are repaired by
libxml2's recovery mode and the report is marked ``repaired``. With
``strict=True`` any such repair makes the report unreadable instead.
Whatever the mode, a missing report id, date range, policy domain, source IP
or count is a reason to refuse the report, never a guess.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterable, Iterator
from typing import Final, TypedDict

from lxml import etree

from mailseal.reports.model import DkimAuth, Override, Policy, Record, Report, Schema, SpfAuth, Unreadable

__all__ = [
    "DMARC2_NAMESPACE",
    "MAX_COUNT",
    "MAX_DKIM_PER_RECORD",
    "MAX_TEXT",
    "ReportStream",
    "domain_name",
    "header_of",
    "integer",
    "parse_report",
    "parse_report_bytes",
    "word",
]

DMARC2_NAMESPACE: Final = "urn:ietf:params:xml:ns:dmarc-2.0"
MAX_TEXT: Final = 1024  # characters kept of any one value (human_result, comments...)
MAX_DKIM_PER_RECORD: Final = 32
MAX_COUNT: Final = 2**40  # a record's message count; beyond this the report is nonsense
_HEAD: Final = 65536
_TOP: Final = [
    "{*}feedback",
    "{*}record",
    "{*}report_metadata",
    "{*}policy_published",
    "{*}version",
]  # bytes searched for a document type declaration


_NAMES: dict[str, str] = {}  # tag -> local name; tags repeat, so this stays small (capped below)


def _local(tag: object) -> str:
    """The element name without its namespace ('' for comments and processing instructions)."""
    if not isinstance(tag, str):
        return ""
    name = _NAMES.get(tag)
    if name is None:
        name = tag.rpartition("}")[2]
        if len(_NAMES) < 4096:
            _NAMES[tag] = name
    return name


def _text(element: etree._Element | None) -> str:
    if element is None:
        return ""
    text = element.text if len(element) == 0 else "".join(element.itertext())
    return (text or "").strip()[:MAX_TEXT]


def _children(element: etree._Element) -> dict[str, etree._Element]:
    """First child of each name (repeated names: see ``_groups``)."""
    found: dict[str, etree._Element] = {}
    for child in element:
        name = _local(child.tag)
        if name not in found:
            found[name] = child
    return found


def _groups(element: etree._Element) -> dict[str, list[etree._Element]]:
    """Every child, by name, in document order."""
    found: dict[str, list[etree._Element]] = {}
    for child in element:
        found.setdefault(_local(child.tag), []).append(child)
    return found


def _all(element: etree._Element, name: str) -> list[etree._Element]:
    return [child for child in element if _local(child.tag) == name]


def word(text: str) -> str:
    """An enumerated value (pass, fail, none, ...) from its stripped text: reporters send ``Pass`` too.

    Interned, like domains and selectors: a report repeats a handful of them
    thousands of times, and one copy each keeps the records small.
    """
    return sys.intern(text.lower()[:64])


def _word(element: etree._Element | None) -> str:
    return word(_text(element))


def _first_word(groups: dict[str, list[etree._Element]], name: str) -> str:
    found = groups.get(name)
    return (_word(found[0]) if found else "") or "none"


def _optional(element: etree._Element | None) -> str | None:
    value = _text(element)
    return value or None


def _integer(element: etree._Element | None, where: str, *, limit: int = MAX_COUNT) -> int:
    return integer(_text(element), where, limit=limit)


def integer(value: str, where: str, *, limit: int = MAX_COUNT) -> int:
    """A whole number in ``0..limit`` from stripped text, or Unreadable saying which field is wrong."""
    if not value:
        raise Unreadable(f"{where} missing")
    try:
        number = int(value)
    except ValueError:
        raise Unreadable(f"{where} is not a whole number: {value[:40]!r}") from None
    if not 0 <= number <= limit:
        raise Unreadable(f"{where} out of range: {number}")
    return number


def domain_name(value: str) -> str:
    """A domain as the rollups key it: lower case, no trailing dot, interned."""
    return sys.intern(value.strip().rstrip(".").lower())


class _Builder:
    """Collects the parts of one report as the parser finishes each top-level element."""

    def __init__(self) -> None:
        self.namespace: str | None = None  # of <feedback>'s children (a default xmlns is inherited)
        self.version: str | None = None
        self.policy: Policy | None = None
        self.records: list[Record] = []
        self.metadata_parts: tuple[str, str | None, str, int, int, str | None, tuple[str, ...]] | None = None

    def take(self, element: etree._Element) -> None:
        if self.namespace is None:
            tag = str(element.tag)
            self.namespace = tag.partition("}")[0][1:] if tag.startswith("{") else ""
        name = _local(element.tag)
        if name == "record":
            self.records.append(_record(element, len(self.records) + 1))
        elif name == "report_metadata" and self.metadata_parts is None:
            self.metadata_parts = _metadata(element)
        elif name == "policy_published" and self.policy is None:
            self.policy = _policy(element)
        elif name == "version" and self.version is None:
            self.version = _text(element)[:16]


def _metadata(element: etree._Element) -> tuple[str, str | None, str, int, int, str | None, tuple[str, ...]]:
    parts = _children(element)
    report_id = _text(parts.get("report_id"))
    if not report_id:
        raise Unreadable("report_metadata/report_id missing")
    dates = parts.get("date_range")
    if dates is None:
        raise Unreadable("report_metadata/date_range missing")
    when = _children(dates)
    begin = _integer(when.get("begin"), "report_metadata/date_range/begin")
    end = _integer(when.get("end"), "report_metadata/date_range/end")
    if end < begin:
        raise Unreadable(f"report_metadata/date_range ends ({end}) before it begins ({begin})")
    email = _optional(parts.get("email"))
    org = _text(parts.get("org_name"))
    if not org and email and "@" in email:
        org = email.rpartition("@")[2].strip().lower()
    errors = tuple(_text(e) for e in _all(element, "error") if _text(e))[:16]
    return (org or "unknown", email, report_id, begin, end, _optional(parts.get("generator")), errors)


def _policy(element: etree._Element) -> Policy:
    parts = _children(element)
    domain = domain_name(_text(parts.get("domain")))
    if not domain:
        raise Unreadable("policy_published/domain missing")
    pct_text = _text(parts.get("pct"))
    pct = int(pct_text) if pct_text.isdigit() and len(pct_text) <= 3 else None
    return Policy(
        domain=domain,
        p=_word(parts.get("p")) or None,
        sp=_word(parts.get("sp")) or None,
        np=_word(parts.get("np")) or None,
        adkim=_word(parts.get("adkim")) or None,
        aspf=_word(parts.get("aspf")) or None,
        pct=pct,
        fo=_optional(parts.get("fo")),
        testing=_word(parts.get("testing")) or None,
        discovery_method=_word(parts.get("discovery_method")) or None,
    )


def _record(element: etree._Element, number: int) -> Record:
    where = f"record {number}"
    parts = _children(element)
    row = parts.get("row")
    if row is None:
        raise Unreadable(f"{where}: row missing")
    cells = _children(row)
    source_ip = _text(cells.get("source_ip"))
    if not source_ip:
        raise Unreadable(f"{where}: row/source_ip missing")
    count = _integer(cells.get("count"), f"{where}: row/count")
    evaluated = cells.get("policy_evaluated")
    if evaluated is None:
        raise Unreadable(f"{where}: row/policy_evaluated missing")
    verdict = _groups(evaluated)
    overrides = tuple(
        Override(_word(_children(r).get("type")) or "other", _optional(_children(r).get("comment")))
        for r in verdict.get("reason", ())
    )
    ids_element = parts.get("identifiers")
    if ids_element is None:
        ids_element = parts.get("identities")  # the drafts' name
    ids = _children(ids_element) if ids_element is not None else {}
    header_from = domain_name(_text(ids.get("header_from")))
    results = parts.get("auth_results")
    dkim: list[DkimAuth] = []
    spf: list[SpfAuth] = []
    if results is not None:
        entries = _groups(results)
        for item in entries.get("dkim", ()):
            fields = _children(item)
            domain = domain_name(_text(fields.get("domain")))
            if not domain:
                raise Unreadable(f"{where}: auth_results/dkim without domain")
            if len(dkim) == MAX_DKIM_PER_RECORD:
                raise Unreadable(f"{where}: more than {MAX_DKIM_PER_RECORD} DKIM results")
            dkim.append(
                DkimAuth(
                    domain=domain,
                    selector=(sys.intern(_text(fields.get("selector")).lower()) or None),
                    result=_word(fields.get("result")) or "none",
                    human_result=_optional(fields.get("human_result")),
                )
            )
        for item in entries.get("spf", ())[:MAX_DKIM_PER_RECORD]:
            fields = _children(item)
            spf.append(
                SpfAuth(
                    domain=domain_name(_text(fields.get("domain"))),
                    scope=_word(fields.get("scope")) or None,
                    result=_word(fields.get("result")) or "none",
                )
            )
    return Record(
        source_ip=source_ip[:64],
        count=count,
        disposition=_first_word(verdict, "disposition"),
        dkim_aligned=_first_word(verdict, "dkim"),
        spf_aligned=_first_word(verdict, "spf"),
        header_from=header_from,
        envelope_from=_optional(ids.get("envelope_from")),
        envelope_to=_optional(ids.get("envelope_to")),
        overrides=overrides,
        dkim=tuple(dkim),
        spf=tuple(spf),
    )


class _Hardening(TypedDict):
    resolve_entities: bool
    no_network: bool
    load_dtd: bool
    dtd_validation: bool
    huge_tree: bool
    remove_comments: bool
    remove_pis: bool
    collect_ids: bool


# The hardening both parsers share, in one place so they cannot drift apart: no entities,
# network, DTD or huge trees; comments, processing instructions and ID tables dropped early.
_HARDENED: Final = _Hardening(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
    collect_ids=False,
)


def _pull_parser(*, strict: bool) -> etree.XMLPullParser:
    return etree.XMLPullParser(
        events=("end",),
        tag=_TOP,  # only <feedback> and its children reach Python: libxml2 does the rest in C
        recover=not strict,
        **_HARDENED,
    )


def _whole_parser() -> etree.XMLParser:
    return etree.XMLParser(recover=True, **_HARDENED)


class ReportStream:
    """One report read as a stream: :meth:`header` first, then :meth:`records`, one at a time.

    Memory stays at one record plus libxml2's buffer whatever the report's
    size, so a caller can store records as they come (``ingest`` does). Every
    method raises :class:`Unreadable` with the reason, nothing else, for any
    content of ``chunks``; a reason found late (a truncated document) comes
    from :meth:`records` after some records were already handed out, so the
    caller must be able to undo them (the store's transaction does).
    """

    def __init__(self, chunks: Iterable[bytes], *, strict: bool = False) -> None:
        """Nothing is read until :meth:`header`."""
        self._chunks = iter(chunks)
        self._pieces = self._slices()  # one generator for the whole stream: each step takes the next piece
        self._strict = strict
        self._parser = _pull_parser(strict=strict)
        self._builder = _Builder()
        self._head = b""
        self._feedback: etree._Element | None = None
        self._seen = False
        self._done = False
        self.repaired = False  # final once records() is exhausted

    def _step(self) -> bool:
        """Feed one more chunk (or finish the document); False once it is finished."""
        if self._done:
            return False
        try:
            for chunk in self._pieces:
                self._seen = True
                if len(self._head) < _HEAD:
                    self._head += chunk[: _HEAD - len(self._head)]
                    _refuse_doctype(self._head)
                self._parser.feed(chunk)
                self._feedback = _drain(self._parser.read_events(), self._builder, self._feedback)
                return True
            if not self._seen:
                raise Unreadable("empty document")
            root = self._parser.close()
            self._feedback = _drain(self._parser.read_events(), self._builder, self._feedback)
        except etree.XMLSyntaxError as exc:
            raise Unreadable(f"not well-formed XML: {_syntax(exc)}") from None
        except etree.LxmlError as exc:
            raise Unreadable(f"XML parser refused it: {str(exc)[:200]}") from None
        self._done = True
        errors = self._parser.feed_error_log
        self.repaired = len(errors) > 0
        _check_document(root, self._feedback, repaired=self.repaired, strict=self._strict, errors=errors)
        return False

    def _slices(self) -> Iterator[bytes]:
        """The input in pieces of at most ``_CHUNK`` bytes: one big chunk must not become one big batch."""
        for chunk in self._chunks:
            for start in range(0, len(chunk), _CHUNK):
                yield chunk[start : start + _CHUNK]  # empty chunks yield nothing

    def header(self) -> Report:
        """The report without its records (``records=()``), once metadata and policy have been read."""
        builder = self._builder
        while (builder.metadata_parts is None or builder.policy is None) and self._step():
            pass
        return _header(builder, repaired=self.repaired)

    def records(self) -> Iterator[Record]:
        """Every record, in document order, each as soon as libxml2 has finished it."""
        builder = self._builder
        while True:
            if builder.records:
                batch, builder.records = builder.records, []
                yield from batch
            if not self._step() and not builder.records:
                return


def parse_report(chunks: Iterable[bytes], *, strict: bool = False) -> Report:
    """Parse one aggregate report from its XML bytes, fed in chunks, into one value with all its records.

    Raises :class:`Unreadable` with the reason when the document is not a
    readable aggregate report; nothing else for any content of ``chunks``.
    Size caps are the caller's (see ``unpack``): ``chunks`` stops or raises.
    """
    stream = ReportStream(chunks, strict=strict)
    header = stream.header()
    records = tuple(stream.records())
    return dataclasses.replace(header, records=records, repaired=stream.repaired)


def parse_report_bytes(data: bytes, *, strict: bool = False) -> Report:
    """Parse a report held in memory: streamed first, then (tolerant mode) once more as a whole.

    libxml2 repairs some broken documents (an unescaped ``<`` inside an
    element) better when it sees the whole text than when fed in pieces, so a
    tolerant read that fails streamed gets a second, whole-document attempt.
    """
    try:
        return parse_report((data[i : i + _CHUNK] for i in range(0, len(data), _CHUNK)), strict=strict)
    except Unreadable:
        if strict or not data.strip():
            raise
        first = sys.exc_info()[1]
    _refuse_doctype(data[:_HEAD])
    parser = _whole_parser()
    try:
        root = etree.fromstring(data, parser)
    except (etree.XMLSyntaxError, ValueError):
        root = None
    if root is None or root.getroottree().docinfo.internalDTD is not None or "document type" in str(first):
        assert first is not None  # noqa: S101 - set above
        raise first
    builder = _Builder()
    feedback = next((e for e in root.iter() if _local(e.tag) == "feedback"), None)
    for child in feedback if feedback is not None else ():
        if isinstance(child.tag, str):
            builder.take(child)
    _check_document(root, feedback, repaired=True, strict=False, errors=parser.error_log)
    return dataclasses.replace(_header(builder, repaired=True), records=tuple(builder.records))


_CHUNK: Final = 65536


def _refuse_doctype(head: bytes) -> None:
    if b"<!doctype" in head.lower():
        raise Unreadable("has a document type declaration (DTD and entities are refused)")


def _check_document(
    root: etree._Element | None,
    feedback: etree._Element | None,
    *,
    repaired: bool,
    strict: bool,
    errors: etree._ListErrorLog,
) -> None:
    if feedback is None:
        name = _local(root.tag) if root is not None else ""
        raise Unreadable(f"not a DMARC aggregate report (no <feedback>; root element <{name[:40]}>)")
    if root is not None and root.getroottree().docinfo.internalDTD is not None:
        raise Unreadable("has a document type declaration (DTD and entities are refused)")
    if strict and repaired:
        error = errors[0]
        raise Unreadable(f"not well-formed XML: line {error.line}: {error.message.strip()[:200]}")


def header_of(namespace: str, fragments: Iterable[bytes]) -> Report:
    """The header of a report from the text of ``<feedback>``'s non-record children (the fast reader's).

    Each fragment is read by the same hardened parser and the same rules as a
    streamed report; any complaint from libxml2 is Unreadable, so the caller
    hands the document to :class:`ReportStream` for the precise reason.
    """
    builder = _Builder()
    builder.namespace = namespace
    parser = etree.XMLParser(recover=False, **_HARDENED)
    for fragment in fragments:
        try:
            element = etree.fromstring(fragment, parser)
        except etree.XMLSyntaxError as exc:
            raise Unreadable(f"not well-formed XML: {_syntax(exc)}") from None
        builder.take(element)
    return _header(builder, repaired=False)


def _header(builder: _Builder, *, repaired: bool) -> Report:
    if builder.metadata_parts is None:
        raise Unreadable("report_metadata missing")
    if builder.policy is None:
        raise Unreadable("policy_published missing")
    version2 = builder.namespace == DMARC2_NAMESPACE or (builder.version or "").startswith("2")
    reporter, email, report_id, begin, end, generator, problems = builder.metadata_parts
    return Report(
        schema=Schema.DMARC2 if version2 else Schema.DMARC1,
        reporter=reporter,
        reporter_email=email,
        report_id=report_id,
        begin=begin,
        end=end,
        policy=builder.policy,
        records=(),
        generator=generator,
        errors=problems,
        repaired=repaired,
    )


def _drain(
    events: Iterable[tuple[str, etree._Element]], builder: _Builder, feedback: etree._Element | None
) -> etree._Element | None:
    """Hand each finished child of <feedback> to the builder and free it.

    <feedback> is normally the root; a few reporters wrap it in another
    element (an unclosed ``xs:schema``), so it is found by name, not place.
    """
    for _event, element in events:
        if feedback is None and element.getroottree().docinfo.internalDTD is not None:
            raise Unreadable("has a document type declaration (DTD and entities are refused)")
        parent = element.getparent()
        if _local(element.tag) == "feedback" and feedback is None:
            feedback = element
            continue
        if parent is None or _local(parent.tag) != "feedback":
            continue  # inside a record or the metadata: taken with its top-level element
        if feedback is not None and parent is not feedback:
            continue  # a second report glued after the first: ignored, not merged
        builder.take(element)
        element.clear()
        while element.getprevious() is not None:
            del parent[0]
    return feedback


def _syntax(exc: etree.XMLSyntaxError) -> str:
    line = getattr(exc, "lineno", None)
    message = str(exc.msg if getattr(exc, "msg", None) else exc).splitlines()[0][:200]
    return f"line {line}: {message}" if line else message
