"""The SQLite report store: schema versioning, duplicates, rollups, retention, read-only opening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mailseal.reports.rollup import rollup
from mailseal.reports.sqlite_store import SCHEMA_VERSION, ReportStoreError, SqliteReportStore
from mailseal.reports.store import Added
from mailseal.reports.xmlparse import parse_report_bytes
from support.clock import FIXED_NOW
from support.dmarc_reports import DAY, Row, Sig, Spec, report_xml


def _report(**fields: object):  # type: ignore[no-untyped-def]
    return parse_report_bytes(report_xml(Spec(**fields)))  # type: ignore[arg-type]


def test_new_store_is_private_and_versioned(tmp_path: Path) -> None:
    store = SqliteReportStore(tmp_path / "sub" / "r.db")
    store.close()
    assert (tmp_path / "sub" / "r.db").stat().st_mode & 0o777 == 0o600
    db = sqlite3.connect(tmp_path / "sub" / "r.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(
        ReportStoreError, match=f"has schema version {SCHEMA_VERSION + 1}; this mailseal knows"
    ):
        SqliteReportStore(tmp_path / "sub" / "r.db")


def test_read_only_open_of_a_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(ReportStoreError, match="no report store at"):
        SqliteReportStore(tmp_path / "none.db", readonly=True)
    sqlite3.connect(tmp_path / "other.db").close()
    (tmp_path / "other.db").write_bytes(b"")
    with pytest.raises(ReportStoreError, match="not a mailseal report store"):
        SqliteReportStore(tmp_path / "other.db", readonly=True)


def test_duplicates_are_stored_once_whatever_the_source(tmp_path: Path) -> None:
    store = SqliteReportStore(tmp_path / "r.db")
    assert store.add(_report(), source="a", now=FIXED_NOW) is Added.INGESTED
    assert store.add(_report(), source="b", now=FIXED_NOW) is Added.DUPLICATE
    assert store.add(_report(report_id="r2"), source="c", now=FIXED_NOW) is Added.INGESTED
    assert store.add(_report(reporter="yahoo.com"), source="d", now=FIXED_NOW) is Added.INGESTED
    assert store.add(_report(begin=FIXED_NOW + DAY), source="e", now=FIXED_NOW) is Added.INGESTED
    assert store.totals().reports == 4
    assert sum(r.messages for r in store.daily()) == 4
    store.close()


def test_rollup_arithmetic_and_forwarding_apart() -> None:
    report = _report(
        adkim="s",
        rows=[
            Row(count=3, header_from="mail.example.com", sigs=[Sig("example.com", "s1")]),
            Row(count=4, header_from="example.com", sigs=[Sig("example.com", "s1"), Sig("esp.example", "e")]),
            Row(count=5, sigs=[Sig("example.com", "s1", "fail")], dkim="fail", overrides=["mailing_list"]),
            Row(count=6, sigs=[Sig("example.com", "s1", "permerror")], dkim="fail"),
        ],
    )
    rows = {(r.domain, r.selector): r for r in rollup(report)}
    ours = rows[("example.com", "s1")]
    # strict alignment: mail.example.com is not example.com
    assert (ours.messages, ours.dkim_pass, ours.dkim_fail, ours.aligned_pass, ours.forwarded_fail) == (
        18,
        7,
        11,
        4,
        5,
    )
    relaxed = {
        (r.domain, r.selector): r
        for r in rollup(
            _report(rows=[Row(count=3, header_from="mail.example.com", sigs=[Sig("example.com", "s1")])])
        )
    }
    assert relaxed[("example.com", "s1")].aligned_pass == 3
    assert rows[("esp.example", "e")].aligned_pass == 0


def test_retention_drops_whole_days(tmp_path: Path) -> None:
    store = SqliteReportStore(tmp_path / "r.db")
    for age in (1, 10, 40, 400):
        store.add(_report(report_id=f"r{age}", begin=FIXED_NOW - age * DAY), source="x", now=FIXED_NOW)
    assert store.prune(FIXED_NOW - 30 * DAY) == 2
    assert store.totals().reports == 2
    assert {r.day for r in store.daily()} == {FIXED_NOW - DAY, FIXED_NOW - 10 * DAY}
    assert store.records(domain="example.com", selector="s1", receiver=None)[0].report_id == "r1"
    assert len(store.records(domain="example.com", selector="s1", receiver="google.com")) == 2
    store.close()


def test_readers_see_the_store_while_it_is_written(tmp_path: Path) -> None:
    writer = SqliteReportStore(tmp_path / "r.db")
    writer.add(_report(), source="x", now=FIXED_NOW)
    reader = SqliteReportStore(tmp_path / "r.db", readonly=True)
    assert reader.totals().reports == 1
    assert reader.domains() == ["example.com"]
    writer.add(_report(report_id="r2"), source="x", now=FIXED_NOW)
    assert reader.totals().reports == 2
    reader.close()
    writer.close()
