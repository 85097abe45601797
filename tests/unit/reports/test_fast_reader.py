"""The fast reader (``xmlfast``) gives exactly what the lxml reader gives, or declines (NotPlain).

Every comparison is against ``xmlparse`` on the same bytes: the fast reader
may only ever be faster, never different.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailseal.reports.model import Report, Unreadable
from mailseal.reports.unpack import Limits, documents
from mailseal.reports.xmlfast import MAX_RECORD, NotPlain, PlainStream
from mailseal.reports.xmlparse import MAX_COUNT, parse_report
from support.dmarc_reports import VECTORS, Row, Sig, Spec, report_xml

# The vendored inputs the fast reader declines (a comment, an xs:schema wrapper, broken XML or
# UTF-8): the lxml reader reads them. Every other input is the plain shape and must be read fast.
DECLINED = {
    "fastmail.com!example.com!1516060800!1516147199!102675056.xml.gz",
    "ikea.com!example.de!1538690400!1538776800.xml",
    "invalid_utf_8.xml",
    "invalid_xml.xml",
    "old_draft_from_wiki.xml",
}


def fast(chunks: Iterable[bytes]) -> Report:
    stream = PlainStream(chunks)
    header = stream.header()
    return dataclasses.replace(header, records=tuple(stream.records()))


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _vectors() -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []
    for path in sorted(VECTORS.rglob("*")):
        if path.is_file() and path.suffix not in {".md", ".parsedmarc"}:
            try:
                found.extend(
                    (path.name, b"".join(document.open()))
                    for document in documents(path.read_bytes(), path.name, Limits())
                )
            except Unreadable:
                continue
    return found


@pytest.mark.parametrize(("name", "xml"), _vectors(), ids=lambda v: v if isinstance(v, str) else "")
def test_conformance_set_read_alike_or_declined(name: str, xml: bytes) -> None:
    try:
        expected: Report | str = parse_report([xml], strict=True)
    except Unreadable as exc:
        expected = exc.reason
    try:
        got = fast([xml])
    except NotPlain:
        assert name in DECLINED, f"{name} is plain and should be read fast"
        return
    assert name not in DECLINED
    assert got == expected
    assert fast(pieces(xml, [1, 7, 100, 511, 4097])) == expected  # any split of the input


def _spec(rng: random.Random, n: int, *, bis: bool) -> Spec:
    rows = []
    for i in range(n):
        sigs = [
            Sig(
                rng.choice(["example.com", "Mail.Example.COM.", "esp.example"]),
                rng.choice(["s1", "S2", None]),
            )
            for _ in range(rng.randint(0, 3))
        ]
        rows.append(
            Row(
                source_ip=f"192.0.2.{i % 256}" if i % 7 else f"2001:db8::{i:x}",
                count=rng.randint(0, 10**6),
                header_from=rng.choice(["example.com", "Example.com"]),
                sigs=sigs,
                disposition=rng.choice(["none", "quarantine", "Reject"]),
                dkim=rng.choice(["pass", "fail", "Pass"]),
                overrides=rng.choice([(), ("forwarded",), ("mailing_list", "other")]),
            )
        )
    return Spec(reporter="Yahoo! Mail", report_id=f"id-{n}", rows=rows, bis=bis, adkim=rng.choice("rs"))


@pytest.mark.parametrize("bis", [False, True])
def test_generated_reports_read_alike(bis: bool) -> None:
    rng = random.Random(5)
    for n in (0, 1, 2, 50, 700):
        xml = report_xml(_spec(rng, n, bis=bis))
        expected = parse_report([xml], strict=True)
        assert fast([xml]) == expected
        assert fast(pieces(xml, [rng.randrange(len(xml)) for _ in range(20)])) == expected


def test_repeated_records_share_their_parts_and_keep_their_own_cells() -> None:
    rows = [Row(source_ip=f"198.51.100.{i}", count=i + 1, sigs=[Sig("example.com", "s1")]) for i in range(5)]
    got = fast([report_xml(Spec(rows=rows))]).records
    assert [(r.source_ip, r.count) for r in got] == [(f"198.51.100.{i}", i + 1) for i in range(5)]
    assert all(r.dkim is got[0].dkim for r in got)  # one tuple for the repeated shape (the store's memo)


@pytest.mark.parametrize(
    ("cell", "reason"),
    [
        (f"<count>{MAX_COUNT + 1}</count>", "record 2: row/count out of range"),
        ("<count>12 3</count>", "record 2: row/count is not a whole number"),
        ("<count></count>", "record 2: row/count missing"),
    ],
)
def test_a_bad_cell_in_a_repeated_record_is_left_to_lxml_for_its_reason(cell: str, reason: str) -> None:
    rows = [Row(source_ip=f"198.51.100.{i}", count=7, sigs=[Sig("example.com", "s1")]) for i in range(3)]
    xml = report_xml(Spec(rows=rows))
    second = xml.index(b"<count>7</count>", xml.index(b"198.51.100.1<"))
    xml = xml[:second] + cell.encode() + xml[second + len(b"<count>7</count>") :]
    with pytest.raises(NotPlain):
        fast([xml])
    with pytest.raises(Unreadable, match=reason):
        parse_report([xml])


_BASE = report_xml(
    Spec(
        rows=[
            Row(source_ip="192.0.2.1", sigs=[Sig("example.com", "s1"), Sig("esp.example", None, "fail")]),
            Row(source_ip="192.0.2.2", count=3, overrides=("forwarded",)),
            Row(source_ip="192.0.2.3", sigs=[Sig("example.com", "s1"), Sig("esp.example", None, "fail")]),
            Row(source_ip="192.0.2.4", count=3, overrides=("forwarded",)),
        ]  # the last two repeat the first two's shape: the memo's path
    )
)
# The same report indented, namespaced (DMARCbis) and with the attributes Microsoft sends.
_BASE_INDENTED = (
    report_xml(
        Spec(
            bis=True, rows=[Row(source_ip=f"192.0.2.{i}", sigs=[Sig("example.com", "s1")]) for i in range(3)]
        )
    )
    .replace(b"><", b">\n  <")
    .replace(
        b"<feedback ",
        b'<feedback xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="a b" ',
        1,
    )
)
_HOSTILE = [
    b"&amp;",
    b"&lol;",
    b"&#65;",
    b"<!-- x -->",
    b"<![CDATA[x]]>",
    b"<!DOCTYPE feedback>",
    b"<?pi x?>",
    b'<x a="1">',
    b"<x/>",
    b"</x>",
    b"<count>",
    b"</record>",
    b"<record>",
    b"</feedback>",
    b"\r",
    b"\x0b",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xef\xbf\xbe",
    b"]]>",
    b"<",
    b">",
    b" ",
    b"\n",
    b"x",
    b"<reason>",
    b"<dkim>",
    b"<spf>",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.sampled_from([_BASE, _BASE_INDENTED]),
    edits=st.lists(
        st.tuples(st.integers(0, len(_BASE_INDENTED)), st.sampled_from(_HOSTILE), st.integers(0, 3)),
        max_size=3,
    ),
    cuts=st.lists(st.integers(0, len(_BASE_INDENTED) + 64), max_size=4),
)
@example(base=_BASE, edits=[(_BASE.index(b"<source_ip>") + 11, b"&amp;", 0)], cuts=[])
@example(base=_BASE, edits=[(_BASE.index(b"</feedback>") + 11, b"<feedback/>", 0)], cuts=[])
@example(base=_BASE, edits=[(_BASE.index(b"192.0.2.3") + 3, b"]]>", 0)], cuts=[])  # in a repeated record's IP
def test_whatever_the_fast_reader_accepts_lxml_reads_the_same(
    base: bytes, edits: list[tuple[int, bytes, int]], cuts: list[int]
) -> None:
    """Hostile bytes anywhere: the fast reader declines, or agrees with lxml's strict reading."""
    xml = base
    for position, token, removed in edits:
        xml = xml[:position] + token + xml[position + removed :]
    try:
        got = fast(pieces(xml, cuts))
    except NotPlain:
        return
    assert got == parse_report([xml], strict=True)


def test_a_record_over_the_cap_is_declined() -> None:
    big = Row(sigs=[Sig("example.com", "s1")], header_from="a" * (MAX_RECORD + 10))
    xml = report_xml(Spec(rows=[big]))
    with pytest.raises(NotPlain):
        fast([xml[i : i + 4096] for i in range(0, len(xml), 4096)])
    with pytest.raises(NotPlain):
        fast([xml])


@pytest.mark.parametrize(
    "bait",
    [
        b"<reason> </reason>",  # many small overrides, then no end: quadratic backtracking before
        b"<reason><type>x</type></reason> ",
        b"<x>y</x> <z/>",
    ],
)
def test_a_record_built_to_backtrack_costs_what_its_size_does(bait: bytes) -> None:
    """A record of many small elements that fails at its very end: the matcher may not try every split.

    Before the repetitions were possessive, one 64 KiB record of ``<reason> </reason>`` took
    about 1.5 s of CPU (quadratic), so a mailbox of such reports cost minutes. CPU time, not
    wall time, so a loaded host does not matter; the bound is ~100 times what a linear match takes.
    """
    import time

    head = b"<row><source_ip>192.0.2.1</source_ip><count>1</count><policy_evaluated>"
    body = head + bait * ((MAX_RECORD - len(head) - 16) // len(bait)) + b"<reason"
    xml = b"".join(report_xml(Spec(rows=[Row(sigs=[Sig("example.com", "s1")])])).partition(b"<record>")[:2])
    xml += body + b"</record></feedback>"
    started = time.process_time()
    with pytest.raises(NotPlain):
        fast([xml])
    assert time.process_time() - started < 0.25


def test_a_header_over_the_cap_is_declined() -> None:
    xml = report_xml(Spec(reporter="r" * (MAX_RECORD + 10)))
    with pytest.raises(NotPlain):
        fast([xml])


@pytest.mark.parametrize(
    "prolog",
    [
        b'<?xml version="1.0" encoding="ISO-8859-1"?>\n<feedback>',
        b'<?xml version="1.0"?>\n<feedback xsi:schemaLocation="x">',  # prefix never declared
        b'<?xml version="1.0"?>\n<feedback a="1" a="2">',
        b'<?xml version="1.0"?>\n<!DOCTYPE feedback>\n<feedback>',
        b'<?xml version="1.0" encoding="UTF-16"?>\n<feedback>',
        b'<?xml version="1.0" encoding="us-ascii"?>\n<feedback>',  # the fragments are read as UTF-8
        # namespace values libxml2 refuses in strict mode (and repairs in tolerant mode)
        b'<?xml version="1.0"?>\n<feedback xmlns="rel/ns">',
        b'<?xml version="1.0"?>\n<feedback xmlns:p="">',
        b'<?xml version="1.0"?>\n<feedback xmlns=" urn:x">',
        b'<?xml version="1.0"?>\n<feedback xmlns="urn:x y">',
        b'<?xml version="1.0"?>\n<feedback xmlns:xmlns="urn:x">',
        # attribute values that are not XML text
        b'<?xml version="1.0"?>\n<feedback xmlns:xsi="urn:x" xsi:a="\xff">',
        b'<?xml version="1.0"?>\n<feedback a="\x01">',
    ],
)
def test_prologs_outside_the_plain_shape_are_declined(prolog: bytes) -> None:
    xml = report_xml(Spec()).replace(b'<?xml version="1.0" encoding="UTF-8"?>\n<feedback>', prolog, 1)
    with pytest.raises(NotPlain):
        fast([xml])
    if b"ISO" in prolog or b"ascii" in prolog:
        assert not parse_report([xml], strict=True).repaired  # lxml reads these well
    elif b"DOCTYPE" not in prolog and b"UTF-16" not in prolog:
        with pytest.raises(Unreadable, match="not well-formed"):  # lxml's strict mode refuses the rest
            parse_report([xml], strict=True)


def test_declared_namespaces_and_a_bom_are_read() -> None:
    xml = report_xml(Spec(bis=True)).replace(
        b"<feedback ",
        b'<feedback xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="a b" ',
        1,
    )
    assert fast([b"\xef\xbb\xbf" + xml]) == parse_report([b"\xef\xbb\xbf" + xml], strict=True)


@pytest.mark.parametrize("tail", [b"</feedback>\n<feedback></feedback>", b"", b"</feedback>\nx"])
def test_a_document_that_does_not_end_plainly_is_declined(tail: bytes) -> None:
    xml = report_xml(Spec()).replace(b"</feedback>\n", tail)
    with pytest.raises(NotPlain):
        fast([xml])


@pytest.mark.parametrize("base", [_BASE, _BASE_INDENTED], ids=["compact", "indented-namespaced"])
def test_the_hostile_edit_bases_are_read_fast(base: bytes) -> None:
    """Otherwise the property above would only ever see the fast reader decline."""
    assert fast([base]) == parse_report([base], strict=True)
