"""Authentication-Results (RFC 8601) for DKIM: render dkim= clauses, spot our own.

    dkim=pass (comment) header.d=example.com header.s=sel header.i=@example.com
        header.a=rsa-sha256 header.b=abcdEFGH

header.b is the shortest prefix of b= (at least 8 characters) that tells the
signatures of this message apart (RFC 6008).
"""

from __future__ import annotations

import re

from mailseal.core.message import HeaderField
from mailseal.core.results import SignatureResult, VerificationReport

_ADDR_OK = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~@]+\Z")  # pvalue allows local-part@domain
_MIN_B_PREFIX = 8


def authentication_results(authserv_id: str, report: VerificationReport) -> str:
    """The field value (no name, no CRLF) for one message's DKIM results."""
    if not report.signatures:
        return f"{authserv_id}; dkim=none"
    prefixes = _b_prefixes(report)
    clauses = [_clause(s, prefixes[i]) for i, s in enumerate(report.signatures)]
    return f"{authserv_id};\r\n\t" + ";\r\n\t".join(clauses)


def _clause(result: SignatureResult, b_prefix: str | None) -> str:
    words = [f"dkim={result.result}"]
    comment = _comment(result)
    if comment:
        words.append(f"({comment})")
    for prop, value in (
        ("header.d", result.domain),
        ("header.s", result.selector),
        ("header.i", result.auid),
        ("header.a", result.algorithm),
        ("header.b", b_prefix),
    ):
        rendered = _pvalue(value) if value else None
        if rendered is not None:
            words.append(f"{prop}={rendered}")
    return " ".join(words)


def _comment(result: SignatureResult) -> str:
    parts = []
    if result.key_bits:
        parts.append(f"{result.key_bits}-bit key")
    if result.reason is not None:
        parts.append(result.reason.value)
    if result.key_testing:
        parts.append("test mode")
    if result.body_length_limited:
        parts.append("l= partial body")
    if result.aligned is False:
        parts.append("d= not aligned with From")
    text = "; ".join(parts)
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _pvalue(value: str) -> str | None:
    """A token or quoted-string; None (the property is left out) for anything unprintable."""
    if not value.isprintable() or any(ch in value for ch in "\r\n\t"):
        return None
    if _ADDR_OK.match(value) and value.count("@") <= 1 and not value.endswith("@"):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _b_prefixes(report: VerificationReport) -> list[str | None]:
    values = [s.signature_b for s in report.signatures]
    prefixes: list[str | None] = []
    for i, value in enumerate(values):
        if not value:
            prefixes.append(None)
            continue
        others = [v for j, v in enumerate(values) if j != i and v and v != value]
        length = _MIN_B_PREFIX
        while length < len(value) and any(o.startswith(value[:length]) for o in others):
            length += 1
        prefixes.append(value[:length])
    return prefixes


def authserv_id_of(field: HeaderField) -> str | None:
    """The authserv-id of an existing Authentication-Results field (for removal)."""
    if field.key != "authentication-results":
        return None
    text = field.value.replace(b"\r\n", b"").decode("utf-8", "replace")
    i = _skip_cfws(text, 0)
    if i < len(text) and text[i] == '"':  # a quoted-string authserv-id
        out, i = [], i + 1
        while i < len(text) and text[i] != '"':
            if text[i] == "\\" and i + 1 < len(text):
                i += 1
            out.append(text[i])
            i += 1
        return "".join(out) or None
    end = i
    while end < len(text) and text[end] not in ' \t;()"':
        end += 1
    return text[i:end] or None


def _skip_cfws(text: str, i: int) -> int:
    """Skip whitespace and (nested, backslash-escaped) comments, RFC 5322 3.2.2."""
    depth = 0
    while i < len(text):
        ch = text[i]
        if depth and ch == "\\":
            i += 2
            continue
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif not depth and ch not in " \t":
            return i
        i += 1
    return i
