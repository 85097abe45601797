"""The one exception the core raises internally for bad input, never exported.

Parsers raise :class:`SyntaxProblem`; the verifier turns it into a
:class:`~mailseal.core.results.SignatureResult` at a single place, so no
content of a message or DNS answer escapes as an exception.
"""

from __future__ import annotations

from mailseal.core.results import Reason


class SyntaxProblem(Exception):
    """Input that breaks a rule; carries the stable reason and one plain sentence."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
