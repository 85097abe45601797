"""The conformance set (parsedmarc's samples, vendored): every report parsed or refused as expected."""

from __future__ import annotations

import pytest

from mailseal.reports.model import Report, Schema, Unreadable
from mailseal.reports.unpack import Limits, documents
from mailseal.reports.xmlparse import parse_report, parse_report_bytes
from support.dmarc_reports import VECTORS

# file -> (records, messages, repaired by the tolerant reader, readable by the strict one)
EXPECTED: dict[str, tuple[int, int, bool, bool]] = {
    "aggregate/!example.com!1538204542!1538463818.xml": (1, 1, False, True),
    "aggregate/!large-example.com!1711897200!1711983600.xml": (2286, 2286, False, True),
    "aggregate/addisonfoods.com!example.com!1536105600!1536191999.xml": (1, 1, False, True),
    "aggregate/empty_reason.xml": (1, 2, False, True),
    "aggregate/example.net!example.com!1529366400!1529452799.xml": (1, 1, False, True),
    "aggregate/ikea.com!example.de!1538690400!1538776800.xml": (1, 1, True, False),
    "aggregate/invalid_utf_8.xml": (1, 1, True, False),
    "aggregate/invalid_xml.xml": (1, 1, True, False),
    "aggregate/old_draft_from_wiki.xml": (1, 2, False, True),
    "aggregate/protection.outlook.com!example.com!1711756800!1711843200.xml": (1, 1, False, True),
    "aggregate/rfc9990-example.net!example.com!1700000000!1700086399.xml": (2, 7, False, True),
    "aggregate/rfc9990-sample.xml": (1, 123, False, True),
    "aggregate/usssa.com!example.com!1538784000!1538870399.xml": (2, 2, False, True),
    "aggregate/veeam.com!example.com!1530133200!1530219600.xml": (1, 1, False, True),
    "aggregate_invalid/report_with_upper_cased_pass.xml": (1, 1, False, True),
    "extract_report/nice-input.xml": (20, 3047, False, True),
    "extract_report/changed-input.xml": (20, 3047, False, True),
}
# wrapped reports: file -> records in each report inside
WRAPPED: dict[str, list[int]] = {
    "aggregate/fastmail.com!example.com!1516060800!1516147199!102675056.xml.gz": [1],
    "aggregate/estadocuenta1.infonacot.gob.mx!example.com!1536853302!1536939702!2940.xml.zip": [1],
    "aggregate/Report domain- borschow.com Submitter- google.com Report-ID- 949348866075514174.eml": [1],
    "aggregate/mimecast-weird-gzip.eml": [1],
    "aggregate/twilight.eml": [1],
    "extract_report/nice-input.xml.gz": [20],
    "extract_report/nice-input.xml.zip": [20],
}


def _documents(name: str) -> list[Report]:
    data = (VECTORS / name).read_bytes()
    return [parse_report_bytes(b"".join(d.open())) for d in documents(data, name, Limits())]


def test_every_file_of_the_set_is_covered() -> None:
    files = {str(p.relative_to(VECTORS)) for p in VECTORS.rglob("*") if p.is_file()}
    files -= {"README.md", "LICENSE.parsedmarc", "empty.xml"}
    assert files == set(EXPECTED) | set(WRAPPED)
    xml = [name for name in EXPECTED if name.startswith("aggregate/")]
    assert (len(xml), sum(EXPECTED[name][0] for name in xml)) == (14, 2301)  # the README's counts


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tolerant_reader_reads_every_report(name: str) -> None:
    records, messages, repaired, _ = EXPECTED[name]
    report = parse_report_bytes((VECTORS / name).read_bytes())
    assert (len(report.records), report.messages, report.repaired) == (records, messages, repaired)
    assert all(r.dkim_aligned in {"pass", "fail"} for r in report.records)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_strict_reader_refuses_only_the_broken_ones_with_a_reason(name: str) -> None:
    records, _, _, readable = EXPECTED[name]
    data = (VECTORS / name).read_bytes()
    if readable:
        assert len(parse_report_bytes(data, strict=True).records) == records
    else:
        with pytest.raises(Unreadable, match=r"^not well-formed XML: line \d+: "):
            parse_report_bytes(data, strict=True)


@pytest.mark.parametrize("name", sorted(WRAPPED))
def test_wrapped_reports_are_found_in_mail_zip_and_gzip(name: str) -> None:
    assert [len(r.records) for r in _documents(name)] == WRAPPED[name]


def test_xml_gzip_and_zip_of_one_report_give_identical_records() -> None:
    plain = parse_report_bytes((VECTORS / "extract_report/nice-input.xml").read_bytes())
    (gzipped,) = _documents("extract_report/nice-input.xml.gz")
    (zipped,) = _documents("extract_report/nice-input.xml.zip")
    assert plain == gzipped == zipped
    (piece,) = documents((VECTORS / "extract_report/nice-input.xml.gz").read_bytes(), "x", Limits())
    assert b"".join(piece.open()) == (VECTORS / "extract_report/nice-input.xml").read_bytes()


def test_streamed_in_any_chunk_size_gives_the_same_report() -> None:
    data = (VECTORS / "extract_report/nice-input.xml").read_bytes()
    whole = parse_report([data])
    for size in (1, 7, 100, 4096):
        assert parse_report(data[i : i + size] for i in range(0, len(data), size)) == whole


def test_dmarcbis_fields_and_schema() -> None:
    report = parse_report_bytes((VECTORS / "aggregate/rfc9990-sample.xml").read_bytes())
    assert report.schema is Schema.DMARC2
    assert (report.policy.np, report.policy.testing, report.policy.discovery_method, report.policy.pct) == (
        "none",
        "n",
        "treewalk",
        None,
    )
    assert report.records[0].dkim[0].selector == "abc123"
    unnamespaced = parse_report_bytes(
        (VECTORS / "aggregate/rfc9990-example.net!example.com!1700000000!1700086399.xml").read_bytes()
    )
    assert unnamespaced.schema is Schema.DMARC2  # <version>2.0</version> without the namespace
    old = parse_report_bytes((VECTORS / "aggregate/old_draft_from_wiki.xml").read_bytes())
    assert (old.schema, old.policy.pct, old.reporter) == (Schema.DMARC1, 100, "acme.com")


def test_upper_case_words_are_read_as_the_rfc_words() -> None:
    report = parse_report_bytes((VECTORS / "aggregate_invalid/report_with_upper_cased_pass.xml").read_bytes())
    record = report.records[0]
    assert (record.disposition, record.dkim_aligned, record.spf_aligned, record.dkim[0].result) == (
        "none",
        "pass",
        "pass",
        "pass",
    )
    assert report.reporter == "example.com"  # trailing blank of "example.com " dropped


def test_empty_reason_and_empty_org_name() -> None:
    report = parse_report_bytes((VECTORS / "aggregate/empty_reason.xml").read_bytes())
    assert report.records[0].overrides[0].type == "other"  # an empty <type> is kept, not dropped
    nameless = parse_report_bytes((VECTORS / "aggregate/invalid_utf_8.xml").read_bytes())
    assert nameless.reporter == "accurateplastics.com"  # empty org_name: the reporter's e-mail domain


def test_empty_file_is_unreadable() -> None:
    with pytest.raises(Unreadable, match="empty"):
        documents((VECTORS / "empty.xml").read_bytes(), "empty.xml", Limits())
    with pytest.raises(Unreadable, match="empty document"):
        parse_report([b""])
