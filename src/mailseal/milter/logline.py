"""What the milter writes to its log: the per-message line, escaped, and throttled warnings.

Everything quoted in a log line comes from the wire (macros, header values,
addresses), so each value is escaped: a newline or a control character in a
queue id must not start a forged log line or drive a terminal. Warnings an
attacker can repeat (protocol errors, refused connections, deadlines) go
through :class:`Throttle`, so a flood costs one line per interval, not one per
event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from mailseal.core.visible import visible

if TYPE_CHECKING:
    from mailseal.core.results import VerificationReport
    from mailseal.milter.session import MessageOutcome

_log = logging.getLogger("mailseal.milter")

THROTTLE_INTERVAL: Final = 10.0
"""Seconds between two log lines of the same kind of repeated warning."""


def escape(value: str) -> str:
    """``value`` safe inside a ``key=value`` log line: no control characters, spaces or ``=`` raw.

    Printable text is kept as is (international domain names stay readable);
    everything else becomes ``\\xNN`` / ``\\uNNNN``, so one log line is one line.
    """
    return visible(value.replace("\\", "\\\\"), also=" =")


def outcome_line(outcome: MessageOutcome) -> str:
    """One key=value line per message: no key material, no content, no local parts."""
    parts = [
        f"qid={escape(outcome.queue_id)}",
        f"client={escape(outcome.client)}",
        f"origin={outcome.origin.value if outcome.origin else '-'}",
        f"mode={outcome.mode}",
        f"sender_domain={escape(outcome.sender_domain or '-')}",
        f"action={outcome.decision.verdict.value}",
    ]
    if outcome.decision.cause:
        parts.append(f"cause={escape(outcome.decision.cause)}")
    if outcome.signed:
        parts.append("signed=" + ",".join(escape(f"{d}/{s}/{a}") for d, s, a in outcome.signed))
    if outcome.sign_note:
        parts.append(f"unsigned={escape(outcome.sign_note)}")
    if outcome.report is not None:
        parts.append(f"dkim={_report_text(outcome.report)}")
        causes = [s.diagnosis.code.value for s in outcome.report.signatures if s.diagnosis is not None]
        if causes:
            parts.append("diagnosis=" + ",".join(causes))
    if outcome.removed_authres:
        parts.append(f"removed_authres={outcome.removed_authres}")
    parts.append(f"ms={outcome.seconds * 1000:.2f}")
    return " ".join(parts)


def _report_text(report: VerificationReport) -> str:
    if not report.signatures:
        return "none"
    return ",".join(
        escape(f"{s.result.value}/{s.domain or '?'}" + (f"/{s.reason.value}" if s.reason else ""))
        for s in report.signatures
    )


class Throttle:
    """At most one line per kind of warning per interval; the next line says how many were held back."""

    def __init__(
        self,
        logger: logging.Logger = _log,
        interval: float = THROTTLE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Throttle lines sent to ``logger``, per kind, to one per ``interval`` seconds."""
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, kind: str, message: str, *args: object, exc_info: bool = False) -> None:
        """Log ``message % args`` unless a line of this ``kind`` went out less than an interval ago."""
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        if held:
            message += f" (and {held} more like it in the last {self._interval:g}s)"
        self._logger.log(level, message, *args, exc_info=exc_info)

    def reset(self) -> None:
        """Forget what was logged (each test starts with a quiet log)."""
        self._last.clear()
        self._held.clear()

    def warning(self, kind: str, message: str, *args: object) -> None:
        """A throttled warning."""
        self.log(logging.WARNING, kind, message, *args)


throttle: Final = Throttle()
"""The process's throttle for repeated warnings (one per kind per ``THROTTLE_INTERVAL``)."""
