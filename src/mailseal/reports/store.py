"""The report store: what it answers (per-day rollups, records, totals) and the Protocol backends implement.

Ingesting a report adds it once (duplicates: same reporter, report id,
policy domain and date range) and adds its messages to per-day rollups keyed
by (day, report domain, signing domain, selector, receiver); every summary,
chart and metric reads the rollups, so their cost grows with days x selectors
x receivers, not with records. Backends: :mod:`mailseal.reports.sqlite_store`.
A server database implements the same Protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Protocol

from mailseal.reports.model import Record, Report

__all__ = [
    "DAY",
    "FORWARDING_OVERRIDES",
    "Added",
    "DailyRow",
    "Quarantined",
    "ReportStore",
    "StoredRecord",
    "Totals",
    "day_of",
]

DAY: Final = 86400
# policy_evaluated/reason types that say "this failed because it was relayed, not forged" (RFC 7489 C).
FORWARDING_OVERRIDES: Final = frozenset(
    {"forwarded", "mailing_list", "trusted_forwarder", "arc", "local_policy"}
)


def day_of(epoch: int) -> int:
    """The UTC day (its first second) a report's period begins in: the rollups' time axis."""
    return epoch - epoch % DAY


class Added(StrEnum):
    """What storing a report did."""

    INGESTED = "ingested"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class DailyRow:
    """Messages of one day for one (report domain, signing domain, selector, receiver).

    ``selector`` is None for messages that carried no DKIM signature at all
    (then ``domain`` is the header From domain). ``forwarded_fail`` counts the
    DKIM failures the receiver attributed to forwarding or a mailing list.
    """

    day: int
    report_domain: str
    domain: str
    selector: str | None
    receiver: str
    messages: int
    dkim_pass: int
    dkim_fail: int
    aligned_pass: int
    forwarded_fail: int


@dataclass(frozen=True, slots=True)
class Totals:
    """Reports, records and messages stored for a period."""

    reports: int
    records: int
    messages: int
    last_report: int | None  # end of the newest report's period (epoch), None when there is none


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One stored record with the report it came from (the web page's drill-down)."""

    reporter: str
    report_id: str
    begin: int
    end: int
    source_ip: str
    count: int
    disposition: str
    header_from: str
    dkim: tuple[tuple[str, str | None, str], ...]  # (domain, selector, result)
    spf: tuple[tuple[str, str], ...]  # (domain, result)
    overrides: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Quarantined:
    """An input kept in the quarantine folder, and why."""

    at: int
    label: str
    reason: str
    path: str


class ReportStore(Protocol):
    """Where reports and their rollups live."""

    def add(
        self,
        report: Report,
        *,
        source: str,
        now: int,
        records: Iterable[Record] | None = None,
        repaired: Callable[[], bool] | None = None,
    ) -> Added:
        """Store a report once, all or nothing; ``records`` may stream (default: ``report.records``).

        Raises TemporaryFailure when it cannot be stored now, and lets any
        exception from ``records`` through after undoing the partial report.
        """
        ...

    def batch(self) -> AbstractContextManager[None]:
        """One transaction around several adds, each add undone alone when it fails (a savepoint).

        Committed when the block ends normally; any exception, or a crash, before
        then leaves none of the batch stored.
        """
        ...

    def note_quarantined(self, entry: Quarantined) -> None:
        """Remember an input that went to quarantine (the page lists them)."""
        ...

    def quarantined(self, limit: int = 50) -> list[Quarantined]:
        """The most recent quarantined inputs."""
        ...

    def daily(self, *, domain: str | None = None, since_day: int | None = None) -> list[DailyRow]:
        """Rollup rows (report domain ``domain``; days from ``since_day`` on)."""
        ...

    def totals(self, *, domain: str | None = None, since_day: int | None = None) -> Totals:
        """Reports, records and messages of the same selection."""
        ...

    def records(
        self, *, domain: str, selector: str | None, receiver: str | None, limit: int = 200
    ) -> list[StoredRecord]:
        """Records that carry a signature of (domain, selector) [from receiver], newest first."""
        ...

    def domains(self) -> list[str]:
        """Report domains with anything stored."""
        ...

    def prune(self, before_day: int) -> int:
        """Drop reports (and rollups) of days before ``before_day``; returns how many reports went."""
        ...

    def close(self) -> None:
        """Release the backend."""
        ...
