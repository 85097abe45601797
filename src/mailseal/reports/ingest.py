"""Inputs -> stored, duplicate or quarantined: one outcome line per report, never a lost report.

Each document is read by the fast reader for the plain shape (``xmlfast``) and,
when it is not plain, again by the hardened lxml reader (``xmlparse``), which
words every reason. :meth:`Ingestor.ingest_all` stores many reports per
transaction (one savepoint each) and gives out their lines only once the
transaction is committed, so a line never claims a report a crash then lost.

A document that cannot be read is kept, as the whole input it came in (the
e-mail, the file), in the quarantine folder under its SHA-256 with the reason
beside it; the same input quarantined twice is kept once. When neither the
store nor the quarantine can take a report *now* (locked, full, read-only),
:class:`TemporaryFailure` propagates so the caller exits 75 and the sender
(the MTA, cron) tries again later.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, Final

from mailseal.core.visible import visible
from mailseal.reports.model import Record, Report, TemporaryFailure, Unreadable
from mailseal.reports.store import Added, Quarantined, ReportStore
from mailseal.reports.unpack import Document, Item, Limits, item_documents
from mailseal.reports.xmlfast import NotPlain, PlainStream
from mailseal.reports.xmlparse import ReportStream, parse_report_bytes

__all__ = ["Ingestor", "Outcome", "Status", "printable"]

_RETRY_WHOLE: Final = 8 * 1024 * 1024  # broken documents up to this size get a whole-document repair attempt
# One batch (transaction) of ingest_all ends after whichever comes first; the time bound keeps the
# store's write lock short for a concurrent ingest (an alias pipe waits for it, then exits 75).
BATCH_REPORTS: Final = 500
BATCH_RECORDS: Final = 100_000
BATCH_SECONDS: Final = 0.5


class Status(StrEnum):
    """What happened to one report."""

    INGESTED = "ingested"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"


def printable(text: str, limit: int = 300) -> str:
    """Attacker-chosen text (reporter names, file names, reasons) made safe for one terminal line."""
    return visible(text[:limit]) + ("..." if len(text) > limit else "")


def _date(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One report's fate and the line that says it."""

    status: Status
    label: str
    detail: str
    report: Report | None = None  # the header (records are streamed into the store, not kept)
    records: int = 0
    messages: int = 0

    def line(self) -> str:
        """``<status> <label>: <detail>``, control characters escaped."""
        return f"{self.status} {printable(self.label)}: {printable(self.detail, 600)}"


def _describe(report: Report, records: int, messages: int, *, repaired: bool) -> str:
    period = f"{_date(report.begin)}..{_date(report.end)}"
    note = ", repaired broken XML" if repaired else ""
    return (
        f"{report.reporter} report {report.report_id} for {report.policy.domain} ({period}), "
        f"{records} records, {messages} messages{note}"
    )


class _Counted:
    """Passes records through to the store and counts them on the way."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.records = records
        self.count = 0
        self.messages = 0

    def __iter__(self) -> Iterator[Record]:
        for record in self.records:
            self.count += 1
            self.messages += record.count
            yield record


class Ingestor:
    """Reads items, stores their reports, quarantines what it cannot read."""

    def __init__(
        self,
        store: ReportStore,
        quarantine: Path,
        *,
        limits: Limits | None = None,
        strict: bool = False,
        clock: Callable[[], int],
    ) -> None:
        """``quarantine`` is created (0700) on first use."""
        self.store = store
        self.quarantine_dir = quarantine
        self.limits = limits or Limits()
        self.strict = strict
        self.clock = clock

    def ingest(self, item: Item) -> Iterator[Outcome]:
        """Outcomes for every report in ``item`` (at least one line per item)."""
        try:
            found = item_documents(item, self.limits)
        except Unreadable as exc:
            yield self._quarantine(item, exc.reason)
            return
        except OSError as exc:
            yield self._quarantine(item, f"cannot read: {exc.strerror or exc}")
            return
        for document in found:
            try:
                yield self._store(item, document)
            except Unreadable as exc:
                yield self._quarantine(item, exc.reason, label=document.label)

    def ingest_all(self, items: Iterable[Item]) -> Iterator[Outcome]:
        """Outcomes for every item, stored in batches; each batch's lines come once it is committed.

        A report that cannot be read is quarantined and undone alone (its
        savepoint); the others of its batch stay. Any exception (TemporaryFailure,
        a crash) before a batch's commit leaves none of that batch stored and
        none of its lines given out, so a rerun stores each report exactly once.
        """
        pending = iter(items)
        finished = False
        while not finished:
            outcomes: list[Outcome] = []
            records = 0
            started = time.monotonic()
            finished = True
            with self.store.batch():
                for item in pending:
                    for outcome in self.ingest(item):
                        outcomes.append(outcome)
                        records += outcome.records
                    if (
                        len(outcomes) >= BATCH_REPORTS
                        or records >= BATCH_RECORDS
                        or time.monotonic() - started >= BATCH_SECONDS
                    ):
                        finished = False
                        break
            yield from outcomes

    def _store(self, item: Item, document: Document) -> Outcome:
        """Stream the document into the store: the fast reader first, then lxml (which may repair it)."""
        try:
            plain = PlainStream(document.open())
            return self._stored(item, document, plain.header(), plain.records(), repaired=lambda: False)
        except (NotPlain, Unreadable):
            pass  # undone by the store; the lxml reader reads it again and says why if it cannot
        stream = ReportStream(document.open(), strict=self.strict)
        try:
            return self._stored(
                item, document, stream.header(), stream.records(), repaired=lambda: stream.repaired
            )
        except Unreadable:
            if self.strict:
                raise
            data = bytearray()
            for chunk in document.open():
                data += chunk
                if len(data) > _RETRY_WHOLE:
                    raise
            report = parse_report_bytes(bytes(data), strict=False)
            return self._stored(
                item,
                document,
                dataclasses.replace(report, records=()),
                report.records,
                repaired=lambda: report.repaired,
            )

    def _stored(
        self,
        item: Item,
        document: Document,
        header: Report,
        records: Iterable[Record],
        *,
        repaired: Callable[[], bool],
    ) -> Outcome:
        """Add one report to the store and say what happened."""
        counted = _Counted(records)
        added = self.store.add(
            header, source=item.label, now=self.clock(), records=counted, repaired=repaired
        )
        if added is Added.INGESTED:
            return Outcome(
                Status.INGESTED,
                document.label,
                _describe(header, counted.count, counted.messages, repaired=repaired()),
                header,
                counted.count,
                counted.messages,
            )
        return Outcome(
            Status.DUPLICATE,
            document.label,
            f"{header.reporter} report {header.report_id} for {header.policy.domain} "
            f"({_date(header.begin)}..{_date(header.end)}) is already stored",
            header,
        )

    def _keep(self, item: Item) -> Path:
        """The quarantine copy of the whole input: a file is copied in chunks, a message from memory."""
        if item.path is not None:
            size = item.path.stat().st_size
            if size > self.limits.input_bytes:
                note = self.quarantine_dir / f"{hashlib.sha256(str(item.path).encode()).hexdigest()}.path"
                note.write_text(
                    f"too large to copy ({size} bytes); left in place: {item.path}\n", encoding="utf-8"
                )
                return note
            with item.path.open("rb") as source:
                return _copy_new(self.quarantine_dir, source)
        return _copy_new(self.quarantine_dir, item.read())

    def _quarantine(self, item: Item, reason: str, *, label: str | None = None) -> Outcome:
        """Keep the whole input with its reason; a failure to do so is temporary (exit 75)."""
        try:
            self.quarantine_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            kept = self._keep(item)
            with kept.with_suffix(".reason").open("a", encoding="utf-8") as notes:
                notes.write(f"{self.clock()} {printable(item.label)}: {printable(reason, 1000)}\n")
        except OSError as exc:
            raise TemporaryFailure(
                f"cannot keep {item.label} in quarantine {self.quarantine_dir}: {exc.strerror or exc}"
            ) from None
        self.store.note_quarantined(Quarantined(self.clock(), label or item.label, reason, str(kept)))
        shown = label or item.label
        return Outcome(Status.QUARANTINED, shown, f"{reason.removeprefix(shown + ': ')} (kept as {kept})")


def _copy_new(folder: Path, source: BinaryIO | bytes) -> Path:
    """Copy into ``folder`` as ``<sha256>.bin``, streamed and atomic (a crash leaves nothing half-written)."""
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".incoming-")
    digest = hashlib.sha256()
    try:
        with os.fdopen(handle, "wb") as out:
            if isinstance(source, bytes):
                digest.update(source)
                out.write(source)
            else:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        kept = folder / f"{digest.hexdigest()}.bin"
        os.replace(temporary, kept)  # the same input again: same name, one copy
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return kept
