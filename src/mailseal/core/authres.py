"""Authentication-Results (RFC 8601) for DKIM: render dkim= clauses, spot our own.

    dkim=pass (comment) header.d=example.com header.s=sel header.i=@example.com
        header.a=rsa-sha256 header.b=abcdEFGH

header.b is the shortest prefix of b= (at least 8 characters) that tells the
signatures of this message apart (RFC 6008).
"""

from __future__ import annotations

import base64
import binascii
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


AUTHRES_SCAN_BYTES = 8192
"""Bytes of a received field read to find where its authserv-id ends (the first ``;``
outside comments and quotes). A real field has its id within the first hundred bytes;
a field whose id area runs past this bound is treated as claiming to be ours."""
AUTHRES_MAX_DEPTH = 32
"""Comment nesting read before the field is treated as claiming to be ours."""
_LABEL = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")


def claims_authserv_id(value: bytes, authserv_id: str) -> bool:
    """Whether a received Authentication-Results value could be read as ours (then it must go).

    Fails closed, because the readers downstream differ: a strict RFC 8601
    parser, a lenient one, a mail client's regular expression. The field is
    ours when ``authserv_id`` appears as a whole host name anywhere in the part
    before the first ``;`` outside comments and quotes -- inside a comment or a
    quoted-string too, with a trailing dot, with ``/version`` or any
    punctuation after it, behind control characters, NBSP or other odd
    whitespace, or with backslash escapes. It is also ours when that part
    cannot be delimited within :data:`AUTHRES_SCAN_BYTES` or
    :data:`AUTHRES_MAX_DEPTH` (a field we cannot read within our limits is
    treated as forged). Bounded work: one pass over at most the scan limit.
    """
    ours = authserv_id.casefold().rstrip(".")
    if not ours:
        return False
    head = value[:AUTHRES_SCAN_BYTES]
    end = _id_area_end(head)
    if end is None:
        return len(value) > AUTHRES_SCAN_BYTES or _too_deep(head) or _mentions(head, ours)
    return _mentions(head[:end], ours)


def _id_area_end(head: bytes) -> int | None:
    """Index of the first ``;`` outside comments and quoted-strings; None when not found or too deep."""
    depth = 0
    quoted = False
    i = 0
    n = len(head)
    while i < n:
        ch = head[i]
        if ch == 0x5C:  # backslash: quoted-pair inside comments and quotes
            i += 2
            continue
        if quoted:
            if ch == 0x22:
                quoted = False
        elif ch == 0x28:  # (
            depth += 1
            if depth > AUTHRES_MAX_DEPTH:
                return None
        elif ch == 0x29:  # )
            depth = max(depth - 1, 0)
        elif depth == 0 and ch == 0x22:
            quoted = True
        elif depth == 0 and ch == 0x3B:  # ;
            return i
        i += 1
    return None


def _too_deep(head: bytes) -> bool:
    depth = 0
    for ch in head:
        if ch == 0x28:
            depth += 1
            if depth > AUTHRES_MAX_DEPTH:
                return True
        elif ch == 0x29:
            depth = max(depth - 1, 0)
    return False


_ENCODED_WORD = re.compile(rb"=\?[^?]{0,64}\?([bBqQ])\?([^?]*)\?=")  # spaces too, as decode_header()
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def _decoded_words(area: bytes) -> bytes:
    """``area`` with its RFC 2047 encoded-words decoded, as a mail client shows the field.

    Python's email package and mail clients decode encoded-words in any
    unstructured field, so ``=?utf-8?b?bXguZXhhbXBsZS5jb20=?=;`` reads as our
    id to them. Linear: one regular-expression pass; undecodable words stay as written.
    """

    def decode(word: re.Match[bytes]) -> bytes:
        text = word.group(2)
        if word.group(1) in b"qQ":
            return _Q_ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), text.replace(b"_", b" "))
        text = b"".join(text.split())
        try:
            return base64.b64decode(text + b"=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return word.group(0)

    return _ENCODED_WORD.sub(decode, area)


def _mentions(area: bytes, ours: str) -> bool:
    """``ours`` as a whole host name in ``area``, as written or with encoded-words decoded."""
    if b"=?" in area and _mentions_text(_decoded_words(area), ours):
        return True
    return _mentions_text(area, ours)


def _mentions_text(area: bytes, ours: str) -> bool:
    """``ours`` as a whole host name in ``area`` (case-folded, escapes and odd whitespace ignored)."""
    text = area.decode("utf-8", "replace").replace("\\", "").casefold()
    start = 0
    while (at := text.find(ours, start)) >= 0:
        start = at + 1
        before = text[at - 1] if at else " "
        after_at = at + len(ours)
        while after_at < len(text) and text[after_at] == ".":
            after_at += 1  # a trailing dot: the same name, fully qualified
        after = text[after_at] if after_at < len(text) else " "
        if before in _LABEL or before == "." or after in _LABEL:
            continue  # part of a longer name (a.mx.example.com, mx.example.community)
        return True
    return False
