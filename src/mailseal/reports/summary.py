"""Per domain, selector and receiver: what the reports say, joined with what the key store holds.

The join answers the administrator's questions: which selectors pass where,
which selectors signing as our domains the key store does not know (someone
else, or a forgotten server), which of our retired or revoked selectors are
still seen after retirement, which failures receivers put down to forwarding
or mailing lists (kept apart from real failures), and which domains have gone
quiet (no reports for N days: a broken ``rua`` or a dead reporter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from mailseal.keys.store import KeyEntry, KeyState, KeyStore
from mailseal.reports.store import DAY, DailyRow, ReportStore, Totals, day_of

__all__ = ["Finding", "Summary", "SummaryRow", "summarize", "to_json"]

QUIET_DAYS: Final = 3  # default: warn when a domain has had no report for this many days
_GONE: Final = frozenset({KeyState.RETIRING, KeyState.REVOKED, KeyState.REMOVED})


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """Counts for one (signing domain, selector, receiver) over the period."""

    domain: str
    selector: str | None
    receiver: str
    messages: int
    dkim_pass: int
    dkim_fail: int
    aligned_pass: int
    forwarded_fail: int
    known_selector: bool | None  # None: no key store configured
    key_state: str | None
    first_day: int
    last_day: int

    @property
    def real_fail(self) -> int:
        """DKIM failures not attributed to forwarding or a mailing list."""
        return self.dkim_fail - self.forwarded_fail


@dataclass(frozen=True, slots=True)
class Finding:
    """Something the administrator should look at: a stable code and one sentence."""

    code: str
    domain: str
    message: str


@dataclass(frozen=True, slots=True)
class Summary:
    """The summary of one selection (domain, period)."""

    totals: Totals
    rows: tuple[SummaryRow, ...]
    findings: tuple[Finding, ...]
    since_day: int | None


def _date(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def group(rows: Sequence[DailyRow]) -> dict[tuple[str, str | None, str], list[int]]:
    """Sum rollup rows per (domain, selector, receiver): messages, pass, fail, aligned, forwarded, first, last."""
    sums: dict[tuple[str, str | None, str], list[int]] = {}
    for row in rows:
        key = (row.domain, row.selector, row.receiver)
        cell = sums.get(key)
        if cell is None:
            sums[key] = [
                row.messages,
                row.dkim_pass,
                row.dkim_fail,
                row.aligned_pass,
                row.forwarded_fail,
                row.day,
                row.day,
            ]
            continue
        cell[0] += row.messages
        cell[1] += row.dkim_pass
        cell[2] += row.dkim_fail
        cell[3] += row.aligned_pass
        cell[4] += row.forwarded_fail
        cell[5] = min(cell[5], row.day)
        cell[6] = max(cell[6], row.day)
    return sums


def summarize(
    store: ReportStore,
    keys: KeyStore | None,
    *,
    domain: str | None,
    since_days: int | None,
    now: int,
    quiet_days: int = QUIET_DAYS,
) -> Summary:
    """Sum the stored rollups of the selection and join them with the key store."""
    since_day = day_of(now - since_days * DAY) if since_days is not None else None
    rows = store.daily(domain=domain, since_day=since_day)
    totals = store.totals(domain=domain, since_day=since_day)
    entries: dict[tuple[str, str], KeyEntry] = {}
    key_domains: set[str] = set()
    if keys is not None:
        for entry in keys.entries():
            entries[(entry.domain.lower(), entry.selector.lower())] = entry
            key_domains.add(entry.domain.lower())
    summary_rows = []
    for (signer, selector, receiver), cell in sorted(
        group(rows).items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2])
    ):
        found = entries.get((signer, selector)) if selector is not None else None
        summary_rows.append(
            SummaryRow(
                domain=signer,
                selector=selector,
                receiver=receiver,
                messages=cell[0],
                dkim_pass=cell[1],
                dkim_fail=cell[2],
                aligned_pass=cell[3],
                forwarded_fail=cell[4],
                known_selector=None if keys is None else found is not None,
                key_state=str(found.state) if found is not None else None,
                first_day=cell[5],
                last_day=cell[6],
            )
        )
    findings = _findings(
        store, summary_rows, entries, key_domains, domain=domain, now=now, quiet_days=quiet_days
    )
    return Summary(totals, tuple(summary_rows), tuple(findings), since_day)


def _findings(
    store: ReportStore,
    rows: Sequence[SummaryRow],
    entries: dict[tuple[str, str], KeyEntry],
    key_domains: set[str],
    *,
    domain: str | None,
    now: int,
    quiet_days: int,
) -> list[Finding]:
    found: list[Finding] = []
    seen: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        if row.selector is None:
            continue
        cell = seen.setdefault((row.domain, row.selector), [0, row.last_day, 0])
        cell[0] += row.messages
        cell[1] = max(cell[1], row.last_day)
        cell[2] += row.dkim_pass
    for (signer, selector), (messages, last_day, passed) in sorted(seen.items()):
        entry = entries.get((signer, selector))
        if entry is None and signer in key_domains:
            found.append(
                Finding(
                    "unknown-selector",
                    signer,
                    f"{selector}._domainkey.{signer} signed {messages} messages ({passed} passed) but is not in "
                    "the key store: another server or service signs as this domain",
                )
            )
        elif entry is not None and entry.state in _GONE:
            since = entry.retired_at or entry.revoked_at  # when mailseal stopped signing with it
            if since is not None and last_day > day_of(since) + DAY:
                found.append(
                    Finding(
                        "retired-selector-seen",
                        signer,
                        f"{selector} was retired on {_date(since)} ({entry.state} now) but reports of "
                        f"{_date(last_day)} still show mail signed with it: something still signs with the old key",
                    )
                )
    watched = sorted({domain} if domain else set(store.domains()) | key_domains)
    for name in watched:
        totals = store.totals(domain=name)
        if totals.last_report is None:
            found.append(
                Finding("no-reports", name, f"no DMARC aggregate report for {name} has ever arrived")
            )
        elif totals.last_report < now - quiet_days * DAY:
            days = (now - totals.last_report) // DAY
            found.append(
                Finding(
                    "no-reports",
                    name,
                    f"no report for {name} for {days} days (last period ended {_date(totals.last_report)})",
                )
            )
    return found


def to_json(summary: Summary) -> dict[str, object]:
    """The ``reports summary --json`` contract: exactly these fields."""
    return {
        "reports": summary.totals.reports,
        "records": summary.totals.records,
        "messages": summary.totals.messages,
        "rows": [
            {
                "domain": row.domain,
                "selector": row.selector,
                "receiver": row.receiver,
                "messages": row.messages,
                "dkim_pass": row.dkim_pass,
                "dkim_fail": row.dkim_fail,
                "aligned_pass": row.aligned_pass,
                "known_selector": row.known_selector,
            }
            for row in summary.rows
        ],
    }
