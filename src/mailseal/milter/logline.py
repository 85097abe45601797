"""The per-message log line: one ``key=value`` line, no key material, no content, no local parts."""

from __future__ import annotations

from mailseal.core.results import VerificationReport
from mailseal.milter.session import MessageOutcome


def outcome_line(outcome: MessageOutcome) -> str:
    """One key=value line per message: no key material, no content, no local parts."""
    parts = [
        f"qid={outcome.queue_id}",
        f"client={outcome.client}",
        f"origin={outcome.origin.value if outcome.origin else '-'}",
        f"mode={outcome.mode}",
        f"sender_domain={outcome.sender_domain or '-'}",
        f"action={outcome.decision.verdict.value}",
    ]
    if outcome.decision.cause:
        parts.append(f"cause={outcome.decision.cause}")
    if outcome.signed:
        parts.append("signed=" + ",".join(f"{d}/{s}/{a}" for d, s, a in outcome.signed))
    if outcome.sign_note:
        parts.append(f"unsigned={outcome.sign_note}")
    if outcome.report is not None:
        parts.append(f"dkim={_report_text(outcome.report)}")
    if outcome.removed_authres:
        parts.append(f"removed_authres={outcome.removed_authres}")
    parts.append(f"ms={outcome.seconds * 1000:.2f}")
    return " ".join(parts)


def _report_text(report: VerificationReport) -> str:
    if not report.signatures:
        return "none"
    return ",".join(
        f"{s.result.value}/{s.domain or '?'}" + (f"/{s.reason.value}" if s.reason else "")
        for s in report.signatures
    )
