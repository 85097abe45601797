"""Hypothesis: the report readers return a report or Unreadable for any bytes, and chunking never matters."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailseal.reports.model import Unreadable
from mailseal.reports.unpack import Limits, documents
from mailseal.reports.xmlparse import parse_report, parse_report_bytes
from support.dmarc_reports import VECTORS, Row, Sig, Spec, gz, report_xml, zipped

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
GOOD = report_xml(Spec(rows=[Row(sigs=[Sig("example.com", "s1")]), Row(count=3, sigs=[])]))
XMLISH = st.text(alphabet="<>/=\"' &;!?-[]feedbackrportmtdaIDyn\n0123456789", max_size=300)


def _read(data: bytes) -> None:
    with contextlib.suppress(Unreadable):
        for document in documents(data, "x", Limits(xml_bytes=1 << 20)):
            parse_report(document.open())


@SETTINGS
@given(st.binary(max_size=2000))
def test_any_bytes_give_a_report_or_a_reason(data: bytes) -> None:
    _read(data)


@SETTINGS
@given(XMLISH)
def test_xml_like_text_gives_a_report_or_a_reason(text: str) -> None:
    _read(text.encode())
    with contextlib.suppress(Unreadable):
        parse_report_bytes(text.encode())


@SETTINGS
@given(st.integers(min_value=0, max_value=len(GOOD)), st.binary(max_size=40))
def test_damaged_reports_and_archives_give_a_report_or_a_reason(cut: int, junk: bytes) -> None:
    damaged = GOOD[:cut] + junk + GOOD[cut:]
    for wrapped in (damaged, gz(damaged), zipped(damaged), gz(GOOD)[: cut % 200] + junk):
        _read(wrapped)


@SETTINGS
@given(st.lists(st.integers(min_value=1, max_value=len(GOOD)), max_size=12))
def test_chunking_never_changes_the_report(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    pieces = [GOOD[a:b] for a, b in zip([0, *points], [*points, len(GOOD)], strict=True)]
    assert parse_report(pieces) == parse_report([GOOD])


def test_the_vendored_large_report_is_chunk_invariant() -> None:
    data = (VECTORS / "aggregate" / "!large-example.com!1711897200!1711983600.xml").read_bytes()
    assert parse_report([data]) == parse_report(data[i : i + 997] for i in range(0, len(data), 997))
