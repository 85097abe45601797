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
from mailseal.reports.model import Report
from mailseal.reports.store import FORWARDING_OVERRIDES, DailyRow, day_of

__all__ = ["rollup"]

Key = tuple[str, str | None]


def rollup(report: Report, org: Callable[[str], str] = organizational_domain) -> list[DailyRow]:
    """The rollup rows one report adds (the caller sums them into the store)."""
    day = day_of(report.begin)
    strict = report.policy.adkim == "s"
    sums: dict[Key, list[int]] = {}
    orgs: dict[str, str] = {}

    def org_of(name: str) -> str:
        found = orgs.get(name)
        if found is None:
            found = orgs[name] = org(name) if name else ""
        return found

    for record in report.records:
        forwarded = any(o.type in FORWARDING_OVERRIDES for o in record.overrides)
        signatures = record.dkim or ()
        if not signatures:
            cell = sums.setdefault((record.header_from or report.policy.domain, None), [0, 0, 0, 0, 0])
            cell[0] += record.count
            cell[2] += record.count
            if forwarded:
                cell[4] += record.count
            continue
        for signature in signatures:
            cell = sums.setdefault((signature.domain, signature.selector), [0, 0, 0, 0, 0])
            cell[0] += record.count
            if signature.result == "pass":
                cell[1] += record.count
                author = record.header_from
                if author and (
                    signature.domain == author or (not strict and org_of(signature.domain) == org_of(author))
                ):
                    cell[3] += record.count
            else:
                cell[2] += record.count
                if forwarded:
                    cell[4] += record.count
    return [
        DailyRow(day, report.policy.domain, domain, selector, report.reporter, *counts)
        for (domain, selector), counts in sums.items()
    ]
