"""The command-line contract of ``mailseal reports ingest`` and ``reports summary --json``."""

from __future__ import annotations

import io
import json
import mailbox
import shutil
import sqlite3
from email import message_from_bytes
from pathlib import Path

import pytest

from mailseal.cli.main import main
from mailseal.reports.model import TemporaryFailure
from mailseal.reports.sqlite_store import SqliteReportStore
from mailseal.reports.xmlparse import parse_report_bytes
from support.clock import FIXED_NOW
from support.dmarc_reports import (
    DAY,
    VECTORS,
    Row,
    Sig,
    Spec,
    gz,
    key_store_with_one_key,
    report_email,
    report_xml,
    zipped,
)


@pytest.fixture
def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def run(*args: str, stdin: bytes | None = None, now: int = FIXED_NOW) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        status = main(
            ["reports", args[0], "--store", str(tmp_path / "reports.db"), "--now", str(now), *args[1:]]
        )
        out, err = capsys.readouterr()
        return status, out, err

    return run


def _write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_ingest_lines_and_exit_codes(tmp_path: Path, run) -> None:  # type: ignore[no-untyped-def]
    good = _write(tmp_path, "a.xml.gz", gz(report_xml(Spec(report_id="a"))))
    status, out, _ = run("ingest", good)
    assert status == 0
    assert out.startswith(
        f"ingested {good}: google.com report a for example.com (2026-01-01..2026-01-01), 1 records"
    )
    status, out, _ = run("ingest", good)
    assert (status, out.split(" ", 1)[0]) == (0, "duplicate")
    bad = _write(tmp_path, "b.xml", b"<feedback><report_metadata></report_metadata></feedback>")
    status, out, _ = run("ingest", good, bad)
    lines = out.splitlines()
    assert status == 1
    assert lines[0].startswith("duplicate ")
    assert lines[1].startswith(f"quarantined {bad}: report_metadata/report_id missing (kept as ")
    kept = Path(lines[1].rsplit("(kept as ", 1)[1].rstrip(")"))
    assert kept.read_bytes() == Path(bad).read_bytes()
    assert "report_metadata/report_id missing" in kept.with_suffix(".reason").read_text()


def test_ingest_from_stdin_for_an_alias(run) -> None:  # type: ignore[no-untyped-def]
    mail = report_email(
        zipped(report_xml(Spec(report_id="piped"))), content_type="application/zip", filename="r.zip"
    )
    status, out, _ = run("ingest", stdin=mail)
    assert status == 0
    assert out.startswith("ingested stdin: part 2 (r.zip): r.zip: report.xml: google.com report piped") or (
        "google.com report piped" in out
    )
    status, out, _ = run("ingest", stdin=b"not a report at all")
    assert status == 1
    assert out.startswith("quarantined stdin: neither XML, gzip, zip nor an e-mail message")
    status, out, _ = run("ingest", "--mta", stdin=b"not a report at all")
    assert status == 0  # kept in quarantine: an alias must not bounce it to the reporter
    assert out.startswith("quarantined stdin: ")


def test_ingest_exit_75_when_the_store_cannot_take_it(tmp_path: Path, run) -> None:  # type: ignore[no-untyped-def]
    good = _write(tmp_path, "a.xml", report_xml(Spec()))
    (tmp_path / "reports.db").mkdir()  # a folder where the database should be
    status, out, err = run("ingest", good)
    assert (status, out) == (75, "")
    assert "try again later" in err
    shutil.rmtree(tmp_path / "reports.db")
    (tmp_path / "quarantine-file").write_text("x")
    status, _, err = run("ingest", "--quarantine", str(tmp_path / "quarantine-file" / "q"), stdin=b"garbage")
    assert status == 75
    assert "cannot keep stdin in quarantine" in err


def test_a_locked_store_is_a_temporary_failure(tmp_path: Path) -> None:
    store = SqliteReportStore(tmp_path / "r.db", timeout=0.05)
    other = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TemporaryFailure, match="locked"):
            store.add(parse_report_bytes(report_xml(Spec())), source="x", now=FIXED_NOW)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.add(parse_report_bytes(report_xml(Spec())), source="x", now=FIXED_NOW) == "ingested"
    store.close()


def test_ingest_folders_maildir_and_mbox(tmp_path: Path, run) -> None:  # type: ignore[no-untyped-def]
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(message_from_bytes(report_email(gz(report_xml(Spec(report_id="m1"))))))
    box.add(message_from_bytes(report_email(gz(report_xml(Spec(report_id="m2"))))))
    mbox = mailbox.mbox(tmp_path / "reports.mbox", create=True)
    mbox.add(message_from_bytes(report_email(gz(report_xml(Spec(report_id="x1"))))))
    mbox.flush()
    mbox.close()
    status, out, _ = run(
        "ingest", str(tmp_path / "Maildir"), str(tmp_path / "reports.mbox"), str(VECTORS / "extract_report")
    )
    ids = [line.split(" report ", 1)[1].split(" ", 1)[0] for line in out.splitlines()]
    assert status == 0
    assert sorted(ids[:2]) == ["m1", "m2"]
    assert ids[2:] == [
        "x1",
        "11038226378739404135",
        "11038226378739404135",
        "11038226378739404135",
        "11038226378739404135",
    ]
    assert [line.split(" ", 1)[0] for line in out.splitlines()][-2:] == ["duplicate", "duplicate"]


def test_missing_input_is_a_usage_error(run) -> None:  # type: ignore[no-untyped-def]
    status, _, err = run("ingest", "/nonexistent/report.xml")
    assert status == 2
    assert "no such file or folder: /nonexistent/report.xml" in err


def _reports() -> list[bytes]:
    ours = Sig("example.com", "s2026")
    theirs = Sig("mailer.example.net", "k1")
    return [
        report_xml(
            Spec(
                reporter="google.com",
                report_id="g1",
                begin=FIXED_NOW - 3 * DAY,
                rows=[
                    Row(count=10, sigs=[ours]),
                    Row(
                        count=2,
                        sigs=[Sig("example.com", "s2026", "fail")],
                        dkim="fail",
                        overrides=["forwarded"],
                    ),
                    Row(count=5, sigs=[theirs], dkim="fail"),
                    Row(count=1, sigs=[], dkim="fail"),
                ],
            )
        ),
        report_xml(
            Spec(
                reporter="Outlook.com",
                report_id="o1",
                begin=FIXED_NOW - 10 * DAY,
                rows=[Row(count=7, sigs=[ours, Sig("example.com", "old")])],
                bis=True,
            )
        ),
        report_xml(
            Spec(
                reporter="google.com",
                report_id="other",
                domain="other.org",
                begin=FIXED_NOW - DAY,
                rows=[Row(count=4, header_from="other.org", sigs=[Sig("other.org", "a")])],
            )
        ),
    ]


def test_summary_json_contract(tmp_path: Path, run) -> None:  # type: ignore[no-untyped-def]
    paths = [_write(tmp_path, f"{n}.xml", data) for n, data in enumerate(_reports())]
    assert run("ingest", *paths)[0] == 0
    status, out, _ = run("summary", "--json", "--no-keys")
    assert status == 0
    summary = json.loads(out)
    assert list(summary) == ["reports", "records", "messages", "rows"]
    assert (summary["reports"], summary["records"], summary["messages"]) == (3, 6, 29)
    rows = {(r["domain"], r["selector"], r["receiver"]): r for r in summary["rows"]}
    assert all(
        list(r)
        == [
            "domain",
            "selector",
            "receiver",
            "messages",
            "dkim_pass",
            "dkim_fail",
            "aligned_pass",
            "known_selector",
        ]
        for r in summary["rows"]
    )
    assert rows[("example.com", "s2026", "google.com")] | {} == {
        "domain": "example.com",
        "selector": "s2026",
        "receiver": "google.com",
        "messages": 12,
        "dkim_pass": 10,
        "dkim_fail": 2,
        "aligned_pass": 10,
        "known_selector": None,
    }
    assert rows[("mailer.example.net", "k1", "google.com")]["aligned_pass"] == 0  # passed, but not aligned
    assert rows[("mailer.example.net", "k1", "google.com")]["dkim_pass"] == 5
    assert rows[("example.com", None, "google.com")]["dkim_fail"] == 1  # no signature at all
    assert rows[("example.com", "s2026", "Outlook.com")]["messages"] == 7
    assert rows[("example.com", "old", "Outlook.com")]["messages"] == 7

    status, out, _ = run("summary", "--json", "--no-keys", "--domain", "Example.COM", "--since", "5")
    summary = json.loads(out)
    assert (summary["reports"], summary["messages"]) == (1, 18)
    assert {r["receiver"] for r in summary["rows"]} == {"google.com"}


def test_summary_joins_with_the_key_store(tmp_path: Path, run, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    paths = [_write(tmp_path, f"{n}.xml", data) for n, data in enumerate(_reports())]
    run("ingest", *paths)
    keys = key_store_with_one_key(tmp_path / "keys.db")
    keys.close()
    status, out, _ = run("summary", "--json", "--keys-store", str(tmp_path / "keys.db"))
    rows = {(r["domain"], r["selector"], r["receiver"]): r["known_selector"] for r in json.loads(out)["rows"]}
    assert rows[("example.com", "s2026", "google.com")] is True
    assert rows[("example.com", "old", "Outlook.com")] is False
    assert rows[("mailer.example.net", "k1", "google.com")] is False
    status, out, _ = run("summary", "--keys-store", str(tmp_path / "keys.db"), "--quiet-days", "2")
    assert status == 0
    assert "warning [unknown-selector] old._domainkey.example.com signed 7 messages" in out
    assert "warning [no-reports] no report for example.com for 2 days" in out
    assert "s2026" in out and "generated" in out
