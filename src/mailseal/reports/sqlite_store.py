"""The SQLite :class:`~mailseal.reports.store.ReportStore` (the embedded default; the reports' only importer of sqlite3).

Schema versioned with ``PRAGMA user_version`` and a list of migrations, each
applied once in its own transaction; a store newer than this mailseal is
refused rather than guessed at. WAL journal, so the web page and metrics read
while ``ingest`` writes. Any SQLite error while storing becomes
:class:`TemporaryFailure`: the caller exits 75 and the MTA (or cron) retries,
so a report is never lost to a locked or full disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from mailseal.errors import MailsealError
from mailseal.reports.model import DkimAuth, Override, Record, Report, SpfAuth, TemporaryFailure
from mailseal.reports.rollup import Rollup
from mailseal.reports.store import Added, DailyRow, Quarantined, StoredRecord, Totals

__all__ = ["SCHEMA_VERSION", "ReportStoreError", "SqliteReportStore"]


class ReportStoreError(MailsealError):
    """The report store cannot be opened (wrong file, newer schema, no permission)."""


_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (  # 1: reports, records, their DKIM results, per-day rollups, quarantine log
        """CREATE TABLE reports (
            id INTEGER PRIMARY KEY,
            reporter TEXT NOT NULL, reporter_email TEXT, report_id TEXT NOT NULL,
            domain TEXT NOT NULL, begin INTEGER NOT NULL, end INTEGER NOT NULL,
            day INTEGER NOT NULL, schema TEXT NOT NULL, policy TEXT NOT NULL,
            generator TEXT, errors TEXT NOT NULL, repaired INTEGER NOT NULL,
            records INTEGER NOT NULL, messages INTEGER NOT NULL,
            source TEXT NOT NULL, ingested_at INTEGER NOT NULL,
            UNIQUE (reporter, report_id, domain, begin, end))""",
        "CREATE INDEX reports_day ON reports (day, domain)",
        """CREATE TABLE records (
            id INTEGER PRIMARY KEY,
            report INTEGER NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
            source_ip TEXT NOT NULL, count INTEGER NOT NULL, disposition TEXT NOT NULL,
            dkim_aligned TEXT NOT NULL, spf_aligned TEXT NOT NULL, header_from TEXT NOT NULL,
            envelope_from TEXT, envelope_to TEXT, overrides TEXT NOT NULL,
            dkim TEXT NOT NULL, spf TEXT NOT NULL)""",
        "CREATE INDEX records_report ON records (report)",
        """CREATE TABLE record_signatures (
            record INTEGER NOT NULL REFERENCES records (id) ON DELETE CASCADE,
            domain TEXT NOT NULL, selector TEXT NOT NULL)""",
        "CREATE INDEX record_signatures_key ON record_signatures (domain, selector)",
        "CREATE INDEX record_signatures_record ON record_signatures (record)",
        """CREATE TABLE daily (
            day INTEGER NOT NULL, report_domain TEXT NOT NULL, domain TEXT NOT NULL,
            selector TEXT NOT NULL, receiver TEXT NOT NULL,
            messages INTEGER NOT NULL, dkim_pass INTEGER NOT NULL, dkim_fail INTEGER NOT NULL,
            aligned_pass INTEGER NOT NULL, forwarded_fail INTEGER NOT NULL,
            PRIMARY KEY (day, report_domain, domain, selector, receiver)) WITHOUT ROWID""",
        """CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY, at INTEGER NOT NULL, label TEXT NOT NULL,
            reason TEXT NOT NULL, path TEXT NOT NULL)""",
    ),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)
_NO_SELECTOR: Final = ""
_BATCH: Final = 1000  # records per executemany while a report streams in  # the rollup key for "no DKIM signature" (SQL keys cannot be NULL)


_T = TypeVar("_T", bound=tuple[object, ...])


def _overrides_json(values: tuple[Override, ...]) -> str:
    return json.dumps([(o.type, o.comment) for o in values])


def _dkim_json(values: tuple[DkimAuth, ...]) -> str:
    return json.dumps([(d.domain, d.selector, d.result) for d in values])


def _spf_json(values: tuple[SpfAuth, ...]) -> str:
    return json.dumps([(f.domain, f.result) for f in values])


class SqliteReportStore:
    """Reports in one SQLite file (created 0600 with its folder 0750 when missing)."""

    def __init__(
        self, path: str | os.PathLike[str], *, readonly: bool = False, timeout: float = 10.0
    ) -> None:
        """Open (and unless ``readonly``, create or migrate) the store at ``path``."""
        self.path = Path(path)
        self.readonly = readonly
        if self.path.is_dir():
            raise ReportStoreError(
                f"report store {self.path} is a directory; name a file (e.g. {self.path}/reports.db)"
            )
        try:
            if not readonly:
                self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            elif not self.path.exists():
                raise ReportStoreError(f"no report store at {self.path} (ingest a report first)")
            uri = f"{self.path.resolve().as_uri()}?mode={'ro' if readonly else 'rw'}"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except OSError as exc:
            raise ReportStoreError(f"cannot open report store {self.path}: {exc.strerror}") from None
        except sqlite3.Error as exc:
            raise ReportStoreError(f"cannot open report store {self.path}: {exc}") from None
        self._lock = threading.RLock()
        self._batched = False
        self._json: dict[int, tuple[object, str]] = {}  # see _encoded
        try:
            self._db.execute(f"PRAGMA busy_timeout = {max(0, round(timeout * 1000))}")
            self._db.execute("PRAGMA foreign_keys = ON")
            if not readonly:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
                self._migrate()
            else:
                self._check_schema()
        except sqlite3.OperationalError as exc:
            self._db.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise TemporaryFailure(f"report store {self.path} is busy: {exc}") from None
            raise ReportStoreError(f"cannot open report store {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            self._db.close()
            raise ReportStoreError(f"cannot open report store {self.path}: {exc}") from None
        except ReportStoreError:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"SqliteReportStore({str(self.path)!r}, readonly={self.readonly})"

    def _version(self) -> int:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        return int(version)

    def _check_schema(self) -> None:
        version = self._version()
        if version != SCHEMA_VERSION:
            what = (
                "is empty or not a mailseal report store" if version == 0 else f"has schema version {version}"
            )
            raise ReportStoreError(f"report store {self.path} {what}; this mailseal knows {SCHEMA_VERSION}")

    def _migrate(self) -> None:
        version = self._version()
        if version > SCHEMA_VERSION:
            raise ReportStoreError(
                f"report store {self.path} has schema version {version}; this mailseal knows {SCHEMA_VERSION}"
            )
        for number in range(version, SCHEMA_VERSION):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._version() == number:  # another process may have migrated meanwhile
                    for statement in _MIGRATIONS[number]:
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {number + 1}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction around several :meth:`add` calls: committed when the block ends without an exception.

        Inside it each ``add`` and ``note_quarantined`` is a savepoint, so a
        report that fails midway (an Unreadable found late) is undone alone and
        the others stay; a crash before the commit stores none of the batch, so
        a rerun stores each report exactly once. Any exception rolls the whole
        batch back (a SQLite error becomes TemporaryFailure).
        """
        if self.readonly:
            raise ReportStoreError(f"report store {self.path} was opened read-only")
        with self._lock:
            if self._batched:
                raise ReportStoreError("report store batches do not nest")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._batched = True
                try:
                    yield
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                finally:
                    self._batched = False
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise TemporaryFailure(f"report store {self.path}: {exc}") from None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A transaction of its own, or a savepoint inside the current :meth:`batch`."""
        if self.readonly:
            raise ReportStoreError(f"report store {self.path} was opened read-only")
        with self._lock:
            begin, commit, rollback = (
                ("SAVEPOINT report", "RELEASE report", "ROLLBACK TO report")
                if self._batched
                else ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
            )
            try:
                self._db.execute(begin)
                try:
                    yield self._db
                except BaseException:
                    self._db.execute(rollback)
                    if self._batched:
                        self._db.execute(commit)  # ROLLBACK TO keeps the savepoint open
                    raise
                self._db.execute(commit)
            except sqlite3.Error as exc:
                raise TemporaryFailure(f"report store {self.path}: {exc}") from None

    def _select(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, parameters).fetchall()
            except sqlite3.Error as exc:
                raise ReportStoreError(f"report store {self.path}: {exc}") from None

    def add(
        self,
        report: Report,
        *,
        source: str,
        now: int,
        records: Iterable[Record] | None = None,
        repaired: Callable[[], bool] | None = None,
    ) -> Added:
        """Store ``report`` once, in one transaction (see the module docstring for failures).

        ``records`` (default: ``report.records``) may be a stream: it is read
        in batches inside the transaction, so memory does not grow with the
        report, and any exception from it (an Unreadable found late) rolls the
        whole report back. ``repaired`` is asked once the stream is exhausted.
        A duplicate is recognised before ``records`` is read at all.
        """
        policy = report.policy
        counter = Rollup(report)
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO reports (reporter, reporter_email, report_id, domain, begin, end, day, schema,"
                " policy, generator, errors, repaired, records, messages, source, ingested_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?)"
                " ON CONFLICT (reporter, report_id, domain, begin, end) DO NOTHING",
                (
                    report.reporter,
                    report.reporter_email,
                    report.report_id,
                    policy.domain,
                    report.begin,
                    report.end,
                    counter.day,
                    str(report.schema),
                    json.dumps({k: getattr(policy, k) for k in policy.__slots__}),
                    report.generator,
                    json.dumps(report.errors),
                    int(report.repaired),
                    source[:500],
                    now,
                ),
            )
            if cursor.rowcount == 0:
                return Added.DUPLICATE
            report_key = cursor.lastrowid
            # Explicit, consecutive record ids let both tables be filled by executemany.
            (number,) = db.execute("SELECT coalesce(max(id), 0) FROM records").fetchone()
            first = number
            messages = 0
            rows: list[tuple[object, ...]] = []
            signatures: list[tuple[int, str, str]] = []
            count_in = counter.add
            encoded = self._encoded
            known = self._json.get
            for record in report.records if records is None else records:
                count_in(record)
                number += 1
                messages += record.count
                overrides, dkim, spf = record.overrides, record.dkim, record.spf
                # The memo's lookup inline (see _encoded): most records repeat their shape's tuples.
                hit = known(id(dkim))
                dkim_json = hit[1] if hit is not None and hit[0] is dkim else encoded(dkim, _dkim_json)
                hit = known(id(spf))
                spf_json = hit[1] if hit is not None and hit[0] is spf else encoded(spf, _spf_json)
                rows.append(
                    (
                        number,
                        report_key,
                        record.source_ip,
                        record.count,
                        record.disposition,
                        record.dkim_aligned,
                        record.spf_aligned,
                        record.header_from,
                        record.envelope_from,
                        record.envelope_to,
                        encoded(overrides, _overrides_json) if overrides else "[]",
                        dkim_json,
                        spf_json,
                    )
                )
                if len(dkim) == 1:  # the usual case, without a generator
                    signatures.append((number, dkim[0].domain, dkim[0].selector or _NO_SELECTOR))
                elif dkim:
                    signatures.extend((number, d.domain, d.selector or _NO_SELECTOR) for d in dkim)
                if len(rows) == _BATCH:
                    self._insert_records(db, rows, signatures)
                    rows, signatures = [], []
            self._insert_records(db, rows, signatures)
            count = number - first
            db.execute(
                "UPDATE reports SET records = ?, messages = ?, repaired = ? WHERE id = ?",
                (count, messages, int(report.repaired or (repaired is not None and repaired())), report_key),
            )
            db.executemany(
                "INSERT INTO daily (day, report_domain, domain, selector, receiver, messages, dkim_pass,"
                " dkim_fail, aligned_pass, forwarded_fail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT DO UPDATE SET messages = messages + excluded.messages,"
                " dkim_pass = dkim_pass + excluded.dkim_pass, dkim_fail = dkim_fail + excluded.dkim_fail,"
                " aligned_pass = aligned_pass + excluded.aligned_pass,"
                " forwarded_fail = forwarded_fail + excluded.forwarded_fail",
                [
                    (
                        r.day,
                        r.report_domain,
                        r.domain,
                        r.selector or _NO_SELECTOR,
                        r.receiver,
                        r.messages,
                        r.dkim_pass,
                        r.dkim_fail,
                        r.aligned_pass,
                        r.forwarded_fail,
                    )
                    for r in counter.rows()
                ],
            )
        return Added.INGESTED

    def _encoded(self, values: _T, encode: Callable[[_T], str]) -> str:
        """JSON of a record's DKIM, SPF or override tuple, memoized by identity.

        The fast reader hands out the same tuple object for every record of a
        repeated shape (see ``xmlfast``), so one encoding serves them all. The
        memo holds the tuple itself, so its id cannot be reused while it is
        remembered; bounded, cleared when full.
        """
        known = self._json.get(id(values))
        if known is not None and known[0] is values:
            return known[1]
        text = encode(values)
        if len(self._json) >= 1024:
            self._json.clear()
        self._json[id(values)] = (values, text)
        return text

    @staticmethod
    def _insert_records(
        db: sqlite3.Connection, rows: list[tuple[object, ...]], signatures: list[tuple[int, str, str]]
    ) -> None:
        """Record rows (built by :meth:`add`) and their signatures."""
        if rows:
            db.executemany(
                "INSERT INTO records (id, report, source_ip, count, disposition, dkim_aligned, spf_aligned,"
                " header_from, envelope_from, envelope_to, overrides, dkim, spf)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        if signatures:
            db.executemany(
                "INSERT INTO record_signatures (record, domain, selector) VALUES (?, ?, ?)", signatures
            )

    def note_quarantined(self, entry: Quarantined) -> None:
        """Remember a quarantined input."""
        with self._write() as db:
            db.execute(
                "INSERT INTO quarantine (at, label, reason, path) VALUES (?, ?, ?, ?)",
                (entry.at, entry.label[:500], entry.reason[:1000], entry.path),
            )

    def quarantined(self, limit: int = 50) -> list[Quarantined]:
        """The newest quarantined inputs."""
        rows = self._select(
            "SELECT at, label, reason, path FROM quarantine ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [Quarantined(*row) for row in rows]

    @staticmethod
    def _where(domain: str | None, since_day: int | None, domain_column: str) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        parameters: list[Any] = []
        if domain is not None:
            clauses.append(f"{domain_column} = ?")
            parameters.append(domain)
        if since_day is not None:
            clauses.append("day >= ?")
            parameters.append(since_day)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), parameters

    def daily(self, *, domain: str | None = None, since_day: int | None = None) -> list[DailyRow]:
        """Rollup rows, oldest day first."""
        where, parameters = self._where(domain, since_day, "report_domain")
        rows = self._select(
            "SELECT day, report_domain, domain, selector, receiver, messages, dkim_pass, dkim_fail,"  # noqa: S608 - fixed SQL, values bound
            f" aligned_pass, forwarded_fail FROM daily{where} ORDER BY day",
            parameters,
        )
        return [DailyRow(r[0], r[1], r[2], r[3] or None, *r[4:]) for r in rows]

    def totals(self, *, domain: str | None = None, since_day: int | None = None) -> Totals:
        """Reports, records, messages and the newest report's end."""
        where, parameters = self._where(domain, since_day, "domain")
        (reports, records, messages, last) = self._select(
            f"SELECT count(*), coalesce(sum(records), 0), coalesce(sum(messages), 0), max(end) FROM reports{where}",  # noqa: S608 - fixed SQL, values bound
            parameters,
        )[0]
        return Totals(int(reports), int(records), int(messages), None if last is None else int(last))

    def records(
        self, *, domain: str, selector: str | None, receiver: str | None, limit: int = 200
    ) -> list[StoredRecord]:
        """Records carrying a signature of (domain, selector), newest report first."""
        parameters: list[Any] = [domain, selector or _NO_SELECTOR]
        extra = ""
        if receiver is not None:
            extra = " AND p.reporter = ?"
            parameters.append(receiver)
        parameters.append(limit)
        rows = self._select(
            "SELECT p.reporter, p.report_id, p.begin, p.end, r.source_ip, r.count, r.disposition,"  # noqa: S608 - fixed SQL, values bound
            " r.header_from, r.dkim, r.spf, r.overrides FROM record_signatures s"
            " JOIN records r ON r.id = s.record JOIN reports p ON p.id = r.report"
            f" WHERE s.domain = ? AND s.selector = ?{extra} ORDER BY p.begin DESC, r.id LIMIT ?",
            parameters,
        )
        return [
            StoredRecord(
                reporter=row[0],
                report_id=row[1],
                begin=row[2],
                end=row[3],
                source_ip=row[4],
                count=row[5],
                disposition=row[6],
                header_from=row[7],
                dkim=tuple((d, s, res) for d, s, res in json.loads(row[8])),
                spf=tuple((d, res) for d, res in json.loads(row[9])),
                overrides=tuple(t for t, _ in json.loads(row[10])),
            )
            for row in rows
        ]

    def domains(self) -> list[str]:
        """Report domains with stored reports."""
        return [row[0] for row in self._select("SELECT DISTINCT domain FROM reports ORDER BY domain")]

    def prune(self, before_day: int) -> int:
        """Retention: drop whole days before ``before_day`` (reports, records and rollups together)."""
        with self._write() as db:
            gone = db.execute("DELETE FROM reports WHERE day < ?", (before_day,)).rowcount
            db.execute("DELETE FROM daily WHERE day < ?", (before_day,))
        return int(gone)
