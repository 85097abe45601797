"""What the reports say about one selector: the rotation gate for ``keys tick`` and ``keys check``.

A selector "passes at a receiver" when that receiver reported at least one
message whose DKIM signature with that selector passed, on or after the day
the key became active. The gate holds a retiring key's revocation until its
successor (the active key of the same domain and key type) passes at
``receivers`` distinct receivers, and no longer than ``deadline`` seconds
after the old key was retired: then it lets the revocation go ahead and says
so, so that a rotation never stalls on missing reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from mailseal.keys.lifecycle import GateDecision
from mailseal.keys.store import KeyEntry, KeyState
from mailseal.reports.store import ReportStore, day_of

__all__ = ["ReportsGate", "SelectorFeedback", "selector_feedback"]


@dataclass(frozen=True, slots=True)
class SelectorFeedback:
    """One selector in the reports since a day."""

    domain: str
    selector: str
    messages: int
    dkim_pass: int
    passing_receivers: tuple[str, ...]
    failing_receivers: tuple[str, ...]  # receivers where it never passed
    last_day: int | None

    def sentence(self) -> str:
        """One line for ``keys check`` and the tick report."""
        if not self.messages:
            return f"reports: no report mentions {self.selector} yet"
        rate = 100 * self.dkim_pass / self.messages
        where = ", ".join(self.passing_receivers[:5]) + (" ..." if len(self.passing_receivers) > 5 else "")
        failing = (
            f"; never passing at {', '.join(self.failing_receivers[:5])}" if self.failing_receivers else ""
        )
        last = datetime.fromtimestamp(self.last_day or 0, UTC).strftime("%Y-%m-%d")
        return (
            f"reports: {self.messages} messages signed with {self.selector}, {rate:.1f}% DKIM pass, "
            f"passing at {len(self.passing_receivers)} receivers ({where or 'none'}){failing}; last seen {last}"
        )


def selector_feedback(
    store: ReportStore, domain: str, selector: str, *, since_day: int | None
) -> SelectorFeedback:
    """Sum the rollups of (domain, selector) from ``since_day`` on, over every report domain."""
    messages = passed = 0
    passing: set[str] = set()
    seen: set[str] = set()
    last: int | None = None
    for row in store.daily(since_day=since_day):
        if row.domain != domain or row.selector != selector:
            continue
        messages += row.messages
        passed += row.dkim_pass
        seen.add(row.receiver)
        if row.dkim_pass:
            passing.add(row.receiver)
        last = row.day if last is None else max(last, row.day)
    return SelectorFeedback(
        domain, selector, messages, passed, tuple(sorted(passing)), tuple(sorted(seen - passing)), last
    )


class ReportsGate:
    """``keys tick``'s revocation condition from DMARC reports (see the module docstring)."""

    def __init__(self, store: ReportStore, *, receivers: int, deadline: int) -> None:
        """Hold revocations until the successor passes at ``receivers`` receivers, at most ``deadline`` s."""
        self.store = store
        self.receivers = receivers
        self.deadline = deadline

    def __call__(self, retiring: KeyEntry, entries: Sequence[KeyEntry], now: int) -> GateDecision:
        """Proceed, or wait with the reason."""
        successors = [
            e
            for e in entries
            if e.state is KeyState.ACTIVE and e.key_type is retiring.key_type and e.id != retiring.id
        ]
        if not successors:
            return GateDecision(proceed=True, note="no active successor to look for in the reports")
        successor = max(successors, key=lambda e: e.activated_at or e.created_at)
        since = day_of(successor.activated_at or successor.created_at)
        feedback = selector_feedback(self.store, successor.domain, successor.selector, since_day=since)
        seen = len(feedback.passing_receivers)
        if seen >= self.receivers:
            return GateDecision(
                proceed=True,
                note=f"reports show {successor.selector} passing at {seen} receivers "
                f"({', '.join(feedback.passing_receivers[:5])}): revoking",
            )
        retired = retiring.retired_at if retiring.retired_at is not None else now
        give_up = retired + self.deadline
        when = datetime.fromtimestamp(give_up, UTC).strftime("%Y-%m-%d %H:%M")
        if now >= give_up:
            return GateDecision(
                proceed=True,
                note=f"warning: reports show {successor.selector} passing at only {seen} of {self.receivers} "
                f"receivers, but the reports deadline ({when}Z) has passed: revoking anyway",
            )
        return GateDecision(
            proceed=False,
            note=f"waiting for DMARC reports: {successor.selector} seen passing at {seen} of {self.receivers} "
            f"receivers (revokes anyway after {when}Z)",
        )
