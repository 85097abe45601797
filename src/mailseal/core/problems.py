"""The one exception the core raises internally for bad input, never exported.

Parsers raise :class:`SyntaxProblem`; the verifier turns it into a
:class:`~mailseal.core.results.SignatureResult` at a single place, so no
content of a message or DNS answer escapes as an exception.
"""

from __future__ import annotations

from mailseal.core.results import Reason

MAX_DETAIL = 300
"""Characters of a problem's sentence kept: details quote input (a=, v=, k= values), and input is unbounded."""


class SyntaxProblem(Exception):
    """Input that breaks a rule; carries the stable reason and one plain sentence (bounded)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        if len(detail) > MAX_DETAIL:
            detail = detail[: MAX_DETAIL - 3] + "..."
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
