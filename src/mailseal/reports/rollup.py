"""One report -> its per-day rollup rows (pure): the DKIM and alignment arithmetic in one place.

Per record, each DKIM result counts the record's messages once for its
(signing domain, selector): ``dkim_pass`` when the result is ``pass``,
``dkim_fail`` for anything else (fail, neutral, temperror, permerror, policy,
none), so ``dkim_pass + dkim_fail == messages`` on every row. ``aligned_pass``
counts passes whose signing domain is aligned with the header From domain
under the published ``adkim`` (RFC 7489 §3.1.1: strict = the same name,
relaxed = the same organizational domain). A record without any DKIM result
counts under the header From domain with no selector, all as ``dkim_fail``.
"""

from __future__ import annotations

from collections.abc import Callable

from mailseal.core.alignment import organizational_domain
from mailseal.reports.model import Record, Report
from mailseal.reports.store import FORWARDING_OVERRIDES, DailyRow, day_of

__all__ = ["Rollup", "rollup"]

Key = tuple[str, str | None]


class Rollup:
    """Sums records into rollup rows as they stream by (one report's header fixes day, domain, receiver)."""

    def __init__(self, report: Report, org: Callable[[str], str] = organizational_domain) -> None:
        """``report`` needs only its header; its records, if any, are not read here."""
        self.report = report
        self.day = day_of(report.begin)
        self.strict = report.policy.adkim == "s"
        self.sums: dict[Key, list[int]] = {}
        self._org = org
        self._orgs: dict[str, str] = {}

    def _org_of(self, name: str) -> str:
        found = self._orgs.get(name)
        if found is None:
            found = self._orgs[name] = self._org(name) if name else ""
        return found

    def add(self, record: Record) -> None:
        """Count one record."""
        sums = self.sums
        messages = record.count
        forwarded = bool(record.overrides) and any(o.type in FORWARDING_OVERRIDES for o in record.overrides)
        if not record.dkim:
            cell = sums.setdefault((record.header_from or self.report.policy.domain, None), [0, 0, 0, 0, 0])
            cell[0] += messages
            cell[2] += messages
            if forwarded:
                cell[4] += messages
            return
        author = record.header_from
        for signature in record.dkim:
            cell = sums.setdefault((signature.domain, signature.selector), [0, 0, 0, 0, 0])
            cell[0] += messages
            if signature.result == "pass":
                cell[1] += messages
                if author and (
                    signature.domain == author
                    or (not self.strict and self._org_of(signature.domain) == self._org_of(author))
                ):
                    cell[3] += messages
            else:
                cell[2] += messages
                if forwarded:
                    cell[4] += messages

    def rows(self) -> list[DailyRow]:
        """The rollup rows counted so far."""
        return [
            DailyRow(self.day, self.report.policy.domain, domain, selector, self.report.reporter, *counts)
            for (domain, selector), counts in self.sums.items()
        ]


def rollup(report: Report, org: Callable[[str], str] = organizational_domain) -> list[DailyRow]:
    """The rollup rows one whole report adds (the caller sums them into the store)."""
    counter = Rollup(report, org)
    for record in report.records:
        counter.add(record)
    return counter.rows()
