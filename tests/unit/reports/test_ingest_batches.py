"""Batched ingest: several reports per transaction, each report undone alone, lines only once committed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import mailseal
import mailseal.reports.ingest
from mailseal.cli.main import main
from mailseal.reports.ingest import Ingestor, Outcome, Status
from mailseal.reports.model import TemporaryFailure
from mailseal.reports.sqlite_store import SqliteReportStore
from mailseal.reports.unpack import Item
from support.clock import FIXED_NOW
from support.dmarc_reports import Row, Sig, Spec, gz, report_xml, zipped

SRC = Path(mailseal.__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parents[2]
REPORTS = 10


def _report(number: int, records: int = 4) -> bytes:
    rows = [
        Row(source_ip=f"192.0.2.{i}", count=i + 1, sigs=[Sig("example.com", "s1")]) for i in range(records)
    ]
    xml = report_xml(Spec(report_id=f"r{number}", rows=rows))
    return gz(xml) if number % 2 else zipped(xml)


def _bad_last_record(number: int) -> bytes:
    """A report whose first 49 records are fine and whose last is not: unreadable only at the end."""
    xml = report_xml(Spec(report_id=f"bad{number}", rows=[Row(source_ip=f"192.0.2.{i}") for i in range(50)]))
    last = xml.rindex(b"<count>1</count>")
    return gz(xml[:last] + b"<count>many</count>" + xml[last + 16 :])


def _stored(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT p.report_id, (SELECT count(*) FROM records r WHERE r.report = p.id) FROM reports p"
            " ORDER BY p.report_id"
        ).fetchall()
    return [(str(a), int(b)) for a, b in rows]


def test_a_quarantined_report_in_a_batch_does_not_undo_the_others(tmp_path: Path) -> None:
    store = SqliteReportStore(tmp_path / "r.db")
    ingestor = Ingestor(store, tmp_path / "q", clock=lambda: FIXED_NOW)
    blobs = [_report(1), _bad_last_record(2), _report(3), _report(1)]
    outcomes = list(ingestor.ingest_all(Item(f"in{n}", b.__bytes__) for n, b in enumerate(blobs)))
    store.close()
    assert [o.status for o in outcomes] == [
        Status.INGESTED,
        Status.QUARANTINED,
        Status.INGESTED,
        Status.DUPLICATE,
    ]
    assert "record 50: row/count is not a whole number" in outcomes[1].detail
    assert _stored(tmp_path / "r.db") == [("r1", 4), ("r3", 4)]  # nothing of the broken one's records
    assert len(list((tmp_path / "q").glob("*.bin"))) == 1


def test_a_temporary_failure_undoes_the_batch_and_gives_out_none_of_its_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        mailseal.reports.ingest, "BATCH_SECONDS", 3600.0
    )  # one batch, however slow the machine
    store = SqliteReportStore(tmp_path / "r.db")
    ingestor = Ingestor(store, tmp_path / "q", clock=lambda: FIXED_NOW)

    def items() -> Iterator[Item]:
        yield Item("first", lambda: _report(1))
        yield Item("second", lambda: _report(2))
        raise TemporaryFailure("disk full (simulated by the test)")

    seen: list[Outcome] = []
    with pytest.raises(TemporaryFailure):
        seen.extend(ingestor.ingest_all(items()))
    assert seen == []
    assert _stored(tmp_path / "r.db") == []
    again = list(ingestor.ingest_all([Item("first", lambda: _report(1))]))  # the store is usable again
    store.close()
    assert [o.status for o in again] == [Status.INGESTED]


def _crash(store: Path, inputs: Path, kill_at: int, when: str) -> list[str]:
    child = subprocess.run(
        [sys.executable, "-m", "support.crashingest", str(store), str(kill_at), when, str(inputs)],
        env={**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, (child.stdout, child.stderr)
    lines = child.stdout.splitlines()
    assert lines[-1].startswith("killing before ")
    return lines[:-1]


@pytest.mark.parametrize(
    ("kill_at", "when"),
    [(2, "release"), (5, "release"), (1, "commit"), (2, "commit"), (3, "commit")],
    ids=[
        "mid-first-batch",
        "mid-second-batch",
        "before-first-commit",
        "before-second-commit",
        "third-commit",
    ],
)
def test_killed_during_a_batched_ingest_then_rerun_stores_every_report_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kill_at: int, when: str
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for number in range(REPORTS):
        (inputs / f"{number:02}.bin").write_bytes(_report(number, records=number + 1))
    (inputs / "05.bin").write_bytes(_bad_last_record(5))  # one quarantined among them
    store = tmp_path / "reports.db"
    first = _crash(store, inputs, kill_at, when)
    # Only lines of committed batches were given out, and each is true of the store.
    claimed = {line.split(":", 1)[0].split(" ", 1)[1] for line in first if line.startswith("ingested ")}
    assert len(first) % 3 == 0  # whole batches of 3 reports
    status = main(["reports", "ingest", "--store", str(store), "--now", str(FIXED_NOW), str(inputs)])
    second = capsys.readouterr().out.splitlines()
    assert status == 1  # the truncated report is quarantined (again)
    duplicates = {line.split(":", 1)[0].split(" ", 1)[1] for line in second if line.startswith("duplicate ")}
    assert claimed == duplicates
    expected = sorted((f"r{n}", n + 1) for n in range(REPORTS) if n != 5)
    assert _stored(store) == expected  # every report exactly once, with all its records
    assert len(second) == REPORTS
    assert sum(line.startswith("quarantined ") for line in second) == 1
