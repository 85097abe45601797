"""DMARC aggregate reports: parsing and ingest speed vs parsedmarc, memory, and summary cost.

Run: python benchmarks/bench_reports.py [--quick] [--reports N] [--summary-records N]

Prints one table:
- records per second parsing the 2,286-record conformance report: mailseal's
  streaming parser, mailseal's full ingest (unpack + parse + SQLite store), and
  parsedmarc's ``parse_aggregate_report_xml`` (offline, local files only: no
  network lookups in either) measured in the same run, with the ratio;
- the same over a generated corpus (N reports of 1 to 5,000 records each,
  log-uniform sizes, gzip and zip mixed); parsedmarc runs on every k-th report
  of it (k shown) because it is an order of magnitude slower;
- peak Python memory (tracemalloc) while ingesting the large report and a
  report ten times its size: records stream into the store, so it stays flat;
- ``reports summary`` over a store holding one million records (median of 5).
Medians of repeats; compare ratios, not absolute times (hosts differ 3x).
"""

from __future__ import annotations

import argparse
import io
import math
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mailseal.reports.ingest import Ingestor
from mailseal.reports.model import DkimAuth, Policy, Record, Report, Schema, SpfAuth, Unreadable
from mailseal.reports.sqlite_store import SqliteReportStore
from mailseal.reports.summary import summarize, to_json
from mailseal.reports.unpack import Item, Limits, documents
from mailseal.reports.xmlfast import NotPlain, PlainStream
from mailseal.reports.xmlparse import parse_report, parse_report_bytes
from support.clock import FIXED_NOW
from support.dmarc_reports import DAY, VECTORS, Row, Sig, Spec, gz, report_xml

try:
    import parsedmarc
except ImportError:  # the benchmark still runs without the peer (pip install '.[bench]')
    parsedmarc = None

LARGE = VECTORS / "aggregate" / "!large-example.com!1711897200!1711983600.xml"


def median_seconds(work: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peer_parse(xml: bytes) -> Any:
    """parsedmarc's aggregate parser as a library, with every network lookup off."""
    assert parsedmarc is not None
    return parsedmarc.parse_aggregate_report_xml(xml, offline=True, always_use_local_files=True)


def ingest_blob(store: SqliteReportStore, blob: bytes, label: str) -> int:
    """Full ingest of one blob; returns the records stored."""
    ingestor = Ingestor(store, Path(tempfile.gettempdir()) / "bench-quarantine", clock=lambda: FIXED_NOW)
    total = 0
    for outcome in ingestor.ingest(Item(label, lambda: blob)):
        total += outcome.records
    return total


def ingest_all(store: SqliteReportStore, blobs: list[tuple[bytes, int]]) -> int:
    """Full ingest of many blobs, batched as ``mailseal reports ingest`` does; returns the records stored."""
    ingestor = Ingestor(store, Path(tempfile.gettempdir()) / "bench-quarantine", clock=lambda: FIXED_NOW)
    items = (Item(f"c{number}", blob.__bytes__) for number, (blob, _) in enumerate(blobs))
    return sum(outcome.records for outcome in ingestor.ingest_all(items))


def fast_parse(chunks: list[bytes]) -> int:
    """Records read by the fast reader (the plain shape)."""
    stream = PlainStream(chunks)
    stream.header()
    return sum(1 for _ in stream.records())


def unpack_parse(blob: bytes) -> int:
    """What ingest does short of storing: unpack, then the fast reader (lxml if it declines)."""
    total = 0
    for document in documents(blob, "c", Limits()):
        try:
            total += fast_parse(list(document.open()))
        except NotPlain:  # the lxml reader, as ingest does
            total += len(parse_report(document.open()).records)
    return total


def corpus(count: int, seed: int = 7) -> list[tuple[bytes, int]]:
    """``count`` reports of 1..5,000 records (log-uniform), each gzip or zip; (blob, records)."""
    rng = random.Random(seed)
    found = []
    for n in range(count):
        records = max(1, min(5000, int(math.exp(rng.uniform(0, math.log(5000))))))
        rows = [
            Row(
                source_ip=f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                count=rng.randint(1, 50),
                sigs=[
                    Sig("example.com", rng.choice(["s2025", "s2026"]), rng.choice(["pass"] * 9 + ["fail"]))
                ],
            )
            for i in range(records)
        ]
        xml = report_xml(Spec(reporter=f"receiver{n % 20}.example", report_id=f"c{n}", rows=rows))
        if n % 2:
            blob = gz(xml)
        else:
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr("r.xml", xml)
            blob = buffer.getvalue()
        found.append((blob, records))
    return found


def memory_of_ingest(xml: bytes) -> int:
    """Peak traced memory while ingesting one plain XML report into a fresh store."""
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteReportStore(Path(folder) / "r.db")
        tracemalloc.start()
        ingest_blob(store, xml, "m")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        store.close()
    return peak


def fill_store(store: SqliteReportStore, records: int) -> None:
    """``records`` records in reports of 1,000, over 90 days, 20 receivers, 4 selectors."""
    per = 1000
    rng = random.Random(3)
    selectors = [
        ("example.com", "s2025"),
        ("example.com", "s2026"),
        ("esp.example", "k1"),
        ("example.com", None),
    ]
    for n in range(records // per):
        rows = []
        for i in range(per):
            domain, selector = selectors[i % 4]
            dkim = (DkimAuth(domain, selector, "pass" if rng.random() < 0.9 else "fail"),) if selector else ()
            rows.append(
                Record(
                    f"10.0.{i // 256}.{i % 256}",
                    rng.randint(1, 20),
                    "none",
                    "pass",
                    "pass",
                    "example.com",
                    dkim=dkim,
                    spf=(SpfAuth("example.com", None, "pass"),),
                )
            )
        report = Report(
            Schema.DMARC1,
            f"receiver{n % 20}.example",
            None,
            f"fill{n}",
            FIXED_NOW - (n % 90) * DAY,
            FIXED_NOW - (n % 90) * DAY + DAY - 1,
            Policy("example.com"),
            tuple(rows),
        )
        store.add(report, source="bench", now=FIXED_NOW)


def conformance_agreement() -> list[tuple[str, str, str]]:
    """Records per input of the vendored conformance set: ours and parsedmarc's (used as a library)."""
    import logging

    logging.disable(logging.CRITICAL)  # parsedmarc logs every failure
    found = []
    for path in sorted(
        p for p in VECTORS.rglob("*") if p.is_file() and p.suffix not in {".md", ".parsedmarc"}
    ):
        try:
            ours = str(
                sum(
                    len(parse_report_bytes(b"".join(d.open())).records)
                    for d in documents(path.read_bytes(), path.name, Limits())
                )
            )
        except Unreadable as exc:
            ours = f"refused ({exc.reason[:40]})"
        theirs = "-"
        if parsedmarc is not None:
            try:
                parsed = parsedmarc.parse_report_file(str(path), offline=True, always_use_local_files=True)
                theirs = str(len(parsed["report"]["records"]))
            except Exception as exc:
                theirs = f"refused ({type(exc).__name__})"
        found.append((str(path.relative_to(VECTORS)), ours, theirs))
    return found


def main(argv: list[str] | None = None) -> int:
    """Run everything and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small corpus and store (a smoke run)")
    parser.add_argument("--reports", type=int, help="generated corpus size (default 10,000; --quick 200)")
    parser.add_argument(
        "--summary-records", type=int, help="records in the summary store (default 1,000,000)"
    )
    args = parser.parse_args(argv)
    count = args.reports or (200 if args.quick else 10_000)
    fill = args.summary_records or (100_000 if args.quick else 1_000_000)
    repeats = 3 if args.quick else 5
    xml = LARGE.read_bytes()
    records = len(parse_report_bytes(xml).records)
    rows: list[tuple[str, str, str]] = []

    chunks = [xml[i : i + 65536] for i in range(0, len(xml), 65536)]
    assert fast_parse(chunks) == records
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteReportStore(Path(folder) / "r.db")
        copies = iter(range(1000))

        def full_ingest() -> None:
            # a new report id each time, so every repeat stores the report (not a duplicate)
            copy = xml.replace(b"<report_id>", f"<report_id>{next(copies)}-".encode(), 1)
            assert ingest_blob(store, copy, "large") == records

        # Warm both sides first (imports, the Public Suffix List, parsedmarc's local databases),
        # then take turns, round after round, so a busy machine hits them alike.
        work: dict[str, Callable[[], object]] = {
            "fast": lambda: fast_parse(chunks),
            "lxml": lambda: parse_report(chunks),
            "ingest": full_ingest,
        }
        if parsedmarc:
            work["peer"] = lambda: peer_parse(xml)
        large: dict[str, list[float]] = {name: [] for name in work}
        for warm in work.values():
            warm()
        for _ in range(repeats):
            for name, run in work.items():
                start = time.perf_counter()
                run()
                large[name].append(time.perf_counter() - start)
        store.close()
    ours, lxml_reader, ingest = (statistics.median(large[k]) for k in ("fast", "lxml", "ingest"))
    rows.append(
        ("2,286-record report: mailseal parse, lxml reader", f"{records / lxml_reader:,.0f} records/s", "")
    )
    rows.append(
        (
            "2,286-record report: mailseal parse, fast reader",
            f"{records / ours:,.0f} records/s",
            f"{lxml_reader / ours:.1f}x the lxml reader",
        )
    )
    rows.append(
        ("2,286-record report: mailseal ingest (parse + store)", f"{records / ingest:,.0f} records/s", "")
    )
    if parsedmarc:
        peer = statistics.median(large["peer"])
        rounds = ", ".join(f"{p / i:.1f}" for p, i in zip(large["peer"], large["ingest"], strict=True))
        rows.append(
            (
                "2,286-record report: parsedmarc parse",
                f"{records / peer:,.0f} records/s",
                f"mailseal ingest {peer / ingest:.1f}x (rounds {rounds}), parse {peer / ours:.1f}x",
            )
        )

    blobs = corpus(count)
    total = sum(n for _, n in blobs)
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteReportStore(Path(folder) / "c.db")
        start = time.perf_counter()
        assert ingest_all(store, blobs) == total
        ingested = time.perf_counter() - start
        store.close()
    start = time.perf_counter()
    assert sum(unpack_parse(blob) for blob, _ in blobs) == total
    parsed = time.perf_counter() - start
    rows.append(
        (
            f"corpus {count:,} reports / {total:,} records: mailseal unpack + parse",
            f"{total / parsed:,.0f} records/s",
            "",
        )
    )
    rows.append(
        (
            f"corpus {count:,} reports / {total:,} records: mailseal ingest",
            f"{total / ingested:,.0f} records/s",
            "",
        )
    )
    if parsedmarc:
        # The same sample through each, in turn, several rounds: one load, one input, medians.
        step = max(1, count // 100)
        sample = blobs[::step]
        sample_records = sum(n for _, n in sample)
        timings: dict[str, list[float]] = {"ingest": [], "parse": [], "peer": []}
        for blob, _ in sample[:5]:  # warm parsedmarc's path for zip and gzip (mailseal's ran above)
            peer_parse(parsedmarc.extract_report(blob).encode())
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as folder:
                store = SqliteReportStore(Path(folder) / "s.db")
                start = time.perf_counter()
                ingest_all(store, sample)
                timings["ingest"].append(time.perf_counter() - start)
                store.close()
            start = time.perf_counter()
            for blob, _ in sample:
                unpack_parse(blob)
            timings["parse"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for blob, _ in sample:
                peer_parse(parsedmarc.extract_report(blob).encode())
            timings["peer"].append(time.perf_counter() - start)
        mine_ingest, mine_parse, peer_seconds = (
            statistics.median(timings[k]) for k in ("ingest", "parse", "peer")
        )
        rounds = ", ".join(f"{p / i:.1f}" for p, i in zip(timings["peer"], timings["ingest"], strict=True))
        rows.append(
            (
                f"corpus sample (every {step}th report, {sample_records:,} records): mailseal ingest",
                f"{sample_records / mine_ingest:,.0f} records/s",
                "",
            )
        )
        rows.append(
            (
                "corpus sample, the same reports: mailseal unpack + parse",
                f"{sample_records / mine_parse:,.0f} records/s",
                "",
            )
        )
        rows.append(
            (
                "corpus sample, the same reports: parsedmarc extract + parse",
                f"{sample_records / peer_seconds:,.0f} records/s",
                f"mailseal ingest {peer_seconds / mine_ingest:.1f}x (rounds {rounds}), "
                f"parse {peer_seconds / mine_parse:.1f}x",
            )
        )

    small = memory_of_ingest(xml)
    big_xml = report_xml(
        Spec(
            rows=[
                Row(source_ip=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", sigs=[Sig("example.com", "s1")])
                for i in range(22860)
            ]
        )
    )
    big = memory_of_ingest(big_xml)
    rows.append(
        (
            f"peak memory ingesting the large report ({len(xml) / 1e6:.1f} MB XML)",
            f"{small / 1e6:.1f} MB",
            f"{small / len(xml):.2f}x the XML",
        )
    )
    rows.append(
        (
            f"peak memory ingesting 22,860 records ({len(big_xml) / 1e6:.1f} MB XML)",
            f"{big / 1e6:.1f} MB",
            f"{big / len(big_xml):.2f}x the XML",
        )
    )

    with tempfile.TemporaryDirectory() as folder:
        store = SqliteReportStore(Path(folder) / "s.db")
        fill_store(store, fill)
        store.close()
        reader = SqliteReportStore(Path(folder) / "s.db", readonly=True)
        took = median_seconds(
            lambda: to_json(summarize(reader, None, domain=None, since_days=None, now=FIXED_NOW)), repeats
        )
        daily = len(reader.daily())
        reader.close()
    rows.append(
        (
            f"reports summary --json over {fill:,} records ({daily:,} rollup rows)",
            f"{took * 1000:.1f} ms",
            "target < 200 ms",
        )
    )

    agreement = conformance_agreement()
    same = sum(
        mine == peer_says or (mine.startswith("refused") and peer_says.startswith("refused"))
        for _, mine, peer_says in agreement
    )
    print(
        f"conformance set: {len(agreement)} inputs; mailseal and parsedmarc agree on {same} (records per input)"
    )
    for name, mine, peer_says in agreement:
        if mine != peer_says:
            print(f"  {name}: mailseal {mine}, parsedmarc {peer_says}")
    print()
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement':<{width}}  {'result':>20}  note")
    for what, result, note in rows:
        print(f"{what:<{width}}  {result:>20}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
