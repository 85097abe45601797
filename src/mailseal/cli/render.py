"""Human and JSON renderings of verification reports; JSON names are the field names."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from mailseal.core.address import AuthorStatus
from mailseal.core.keypolicy import WEAK_RSA_BITS
from mailseal.core.options import RECOMMENDED_HEADERS
from mailseal.core.results import Alignment, DKIMResult, SignatureResult, VerificationReport

_IMPORTANT = frozenset(RECOMMENDED_HEADERS[:6]) | {"message-id", "content-type", "mime-version"}


def to_json(label: str, report: VerificationReport, authres: str) -> dict[str, Any]:
    """The ``--json`` object for one message."""
    signatures = []
    for sig in report.signatures:
        item = {f.name: getattr(sig, f.name) for f in dataclasses.fields(sig)}
        item["result"] = sig.result.value
        item["reason"] = sig.reason.value if sig.reason is not None else None
        item["alignment"] = sig.alignment.value
        item["signed_headers"] = list(sig.signed_headers)
        item["unsigned_headers"] = list(sig.unsigned_headers)
        item["warnings"] = list(sig.warnings)
        item["diagnosis"] = sig.diagnosis.to_json() if sig.diagnosis is not None else None
        signatures.append(item)
    return {
        "file": label,
        "result": report.result.value,
        "from_domain": report.from_domain,
        "author": report.author.status.value if report.author is not None else None,
        "left_out": report.left_out,
        "signatures": signatures,
        "authentication_results": authres.replace("\r\n\t", " "),
    }


def explain(label: str, report: VerificationReport, authres: str) -> str:
    """Plain-words explanation of every signature, for people debugging delivery."""
    lines = [f"{label}: {report.result}"]
    if not report.signatures:
        lines.append("  no DKIM-Signature header field: nothing vouches for this message")
    for number, sig in enumerate(report.signatures, 1):
        lines.extend(_explain_one(number, sig))
    if report.left_out:
        lines.append(
            f"  {report.left_out} more DKIM-Signature field(s) left out of this report "
            "(over the per-message limit; not evaluated)"
        )
    if report.author is not None and report.author.status in (AuthorStatus.UNREADABLE, AuthorStatus.MISSING):
        lines.append(
            f"  the author cannot be told ({report.author.detail}): no signature is aligned with From"
        )
    if report.passed:
        lines.append(
            "  A pass proves the signing domain took responsibility for the signed parts of this message"
            " and that they were not altered; it does not prove who wrote it."
        )
    lines.extend(("  Authentication-Results: " + authres.replace("\r\n\t", "\n      ")).split("\n"))
    return "\n".join(printable(line) for line in lines)


# C0 and C1 controls, DEL, and the bidirectional overrides that reorder what a terminal shows.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control characters shown as escapes: a header name cannot drive the terminal.

    An ESC sequence in a header name or value (``\\x1b]0;...``) would otherwise
    set the terminal title or colours of whoever reads the explanation.
    """
    return _UNPRINTABLE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _explain_one(number: int, sig: SignatureResult) -> list[str]:
    head = f"  signature {number}: {sig.result}"
    ids = [
        f"d={sig.domain}" if sig.domain else "",
        f"s={sig.selector}" if sig.selector else "",
        sig.algorithm or "",
    ]
    head += " - " + " ".join(i for i in ids if i)
    if sig.key_bits:
        head += f" ({sig.key_bits}-bit key)"
    out = [head]
    reason = f" [{sig.reason}]" if sig.reason is not None else ""
    out.append(f"    {sig.detail}{reason}")
    if sig.diagnosis is not None:
        d = sig.diagnosis
        out.append(f"    why: {d.summary} [{d.code}: {d.evidence}]")
    if sig.result is DKIMResult.PASS:  # coverage and alignment mean something only for a verified signature
        if sig.signed_headers:
            out.append(f"    signed header fields: {', '.join(sig.signed_headers)}")
        notable = [h for h in sig.unsigned_headers if h in _IMPORTANT]
        if notable:
            out.append(f"    NOT signed, could have been changed or added: {', '.join(notable)}")
        if sig.unsigned_headers:
            out.append(f"    all unsigned header fields: {', '.join(sig.unsigned_headers)}")
        if sig.body_length_limited:
            extra = (
                f"; {sig.unsigned_body_bytes} bytes were appended after signing"
                if sig.unsigned_body_bytes
                else ""
            )
            out.append(
                f"    l= limits the signature to part of the body: text after it is not covered{extra}"
            )
        out.append(
            "    From is oversigned: a second From added later would break the signature"
            if sig.from_oversigned
            else "    From is not oversigned: a From field added above it would not break the signature"
        )
        out.append(f"    {_alignment_words(sig)}")
        if sig.dnssec is not None:
            out.append(
                "    the key's DNS answer was DNSSEC-validated"
                if sig.dnssec
                else "    the key's DNS answer was not DNSSEC-validated (a DNS spoofer could substitute it)"
            )
        if sig.key_testing:
            out.append("    the key is in testing mode (t=y): treat this like unsigned mail")
        if (
            sig.key_bits is not None
            and sig.key_bits < WEAK_RSA_BITS
            and sig.algorithm
            and sig.algorithm.startswith("rsa")
        ):
            out.append(f"    a {sig.key_bits}-bit RSA key is weak; 2048 bits is the norm today")
    return out


def _alignment_words(sig: SignatureResult) -> str:
    if sig.alignment is Alignment.EXACT:
        return "d= is the From domain (aligned)"
    if sig.alignment is Alignment.ORGANIZATIONAL:
        return "d= shares the From domain's organizational domain (relaxed alignment)"
    if sig.alignment is Alignment.NONE:
        return "d= is NOT the From domain: this pass says nothing about the visible sender"
    return "alignment unknown: not exactly one readable From address, or a name with no comparable form"
