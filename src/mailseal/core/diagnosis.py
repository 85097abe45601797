"""Why a signature failed, in plain words: pure functions over what the verifier knew.

Computed only after a failure, never for a pass. A specific code is given
only when it is proven: undoing the suspected change makes the body hash or
the signature verify again, the signer's own ``z=`` copy shows the
difference, or the key demonstrably did not make ``b=``. Anything less is
said as a possibility in the sentence, under a general code
(``body-modified``, ``header-changed``, ``unknown``) whose ``confident`` flag
is False where even that is not certain. One exception, for the issue 11
contract: a field named once in ``h=`` and now absent, when the key is proven
to have made ``b=``, is ``header-removed`` with ``confident`` False.

Cost is bounded: at most ``MAX_BODY_PASSES`` canonicalize-and-hash passes
over a body the verifier kept (at most ``VerifyOptions.diagnosis_body_limit``
bytes for streaming drivers), at most ``MAX_PREFIXES`` hash snapshots, at most
``MAX_HEADER_CANDIDATES`` extra signature checks per signature (plus at most
``MAX_FOLD_CANDIDATES`` header hashes, together over at most ``FOLD_HASH_FACTOR``
times the signed header bytes, compared with an RSA ``b=`` opened once), and at most
``MESSAGE_BODY_PASSES`` / ``MESSAGE_SIGNATURE_CHECKS`` for all the failed
signatures of a message together (``DiagnosisBudget``). ``Diagnosis`` carries the
counts so tests can check the bound without a clock.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from mailseal.core.algorithms import PublicKey, rsa_key_made, rsa_signed_digest, verify_digest
from mailseal.core.canonicalization import Canon, canonicalize_body, canonicalize_header, relaxed_header
from mailseal.core.message import HeaderField, parse_header_block
from mailseal.core.quotedprintable import decode_dkim_qp
from mailseal.core.results import Reason
from mailseal.core.selection import index_by_name, select
from mailseal.core.signature import DKIMSignature, without_b_value
from mailseal.core.visible import visible

MAX_BODY_PASSES: Final = 8
MAX_PREFIXES: Final = 1000  # lines of added text looked for (a footer is a few)
MAX_INSERT_POINTS: Final = 256
MAX_TAIL: Final = 4096
MAX_HEADER_CANDIDATES: Final = 24
MAX_FOLD_CANDIDATES: Final = 256  # header hashes (no RSA) tried to find a fold a relay removed
FOLD_HASH_FACTOR: Final = 16  # ... hashing at most this many times the signed header bytes
_FOLD_COLUMN: Final = 78  # RFC 5322 2.1.1: lines SHOULD stay within 78 characters
MESSAGE_BODY_PASSES: Final = 16  # for all the signatures of one message together
MESSAGE_SIGNATURE_CHECKS: Final = 48
MAX_MIME_PARTS: Final = 64
_CRLF: Final = re.compile(rb"\r\n")
_SHOWN = 72  # characters of a quoted header value or body line in evidence


class Cause(StrEnum):
    """Stable diagnosis codes (the ``--json`` contract: never rename, only add)."""

    BODY_APPENDED = "body-appended"
    BODY_WHITESPACE = "body-whitespace"
    BODY_REENCODED = "body-reencoded"
    BODY_MODIFIED = "body-modified"
    HEADER_CHANGED = "header-changed"
    HEADER_WHITESPACE = "header-whitespace"
    SUBJECT_TAGGED = "subject-tagged"
    HEADER_REMOVED = "header-removed"
    HEADER_ADDED = "header-added"
    KEY_MISMATCH = "key-mismatch"
    KEY_REVOKED = "key-revoked"
    SIGNATURE_EXPIRED = "signature-expired"
    SIGNATURE_FUTURE = "signature-future"
    KEY_NOT_FOUND = "key-not-found"
    KEY_WEAK = "key-weak"
    KEY_INVALID = "key-invalid"
    SIGNATURE_INVALID = "signature-invalid"
    DNS_ERROR = "dns-error"
    ALGORITHM_REFUSED = "algorithm-refused"
    NOT_EVALUATED = "not-evaluated"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """What most likely happened to a failed signature, and the evidence for it.

    ``summary`` is one sentence for people, ``evidence`` a short fact (a field
    name, a byte count). ``confident`` is False when the code is a best
    reading rather than a proven one.
    """

    code: Cause
    summary: str
    evidence: str
    confident: bool = True
    bytes_examined: int = field(default=0, compare=False)
    signature_checks: int = field(default=0, compare=False)

    def to_json(self) -> dict[str, str]:
        """The ``--json`` object: exactly code, summary and evidence."""
        return {"code": self.code.value, "summary": self.summary, "evidence": self.evidence}


@dataclass(frozen=True, slots=True)
class FailureFacts:
    """What the verifier knew about one failed signature."""

    reason: Reason
    detail: str
    signature: DKIMSignature | None
    headers: tuple[HeaderField, ...]
    position: int
    key: PublicKey | None
    key_bits: int | None
    now: int
    min_rsa_bits: int
    body: bytes | None
    """The body as received, or None when it was larger than the driver kept."""
    body_size: int


class BodyKeeper:
    """Keeps references to the body chunks, up to ``limit`` bytes, for a diagnosis."""

    __slots__ = ("_chunks", "_limit", "size")

    def __init__(self, limit: int) -> None:
        """Keep at most ``limit`` bytes; 0 keeps nothing."""
        self._limit = limit
        self._chunks: list[tuple[bytes, int]] | None = [] if limit > 0 else None
        self.size = 0

    def feed(self, chunk: bytes, start: int = 0) -> None:
        """Remember ``chunk[start:]`` (a reference, not a copy) unless the body has grown past the limit."""
        self.size += len(chunk) - start
        if self._chunks is not None:
            if self.size <= self._limit:
                self._chunks.append((chunk, start))
            else:
                self._chunks = None

    def body(self) -> bytes | None:
        """The whole body, or None when it was not kept (copied only here, on a failure)."""
        if self._chunks is None:
            return None
        if len(self._chunks) == 1 and self._chunks[0][1] == 0:
            return self._chunks[0][0]
        return b"".join(chunk[start:] if start else chunk for chunk, start in self._chunks)


class DiagnosisBudget:
    """What the diagnoses of one message may spend together.

    Hostile mail can carry many failing signatures; each may use its own
    share, but never more than the message's total.
    """

    __slots__ = ("checks", "passes")

    def __init__(self) -> None:
        """A fresh budget for one message."""
        self.passes = MESSAGE_BODY_PASSES
        self.checks = MESSAGE_SIGNATURE_CHECKS


class _Work:
    """Counts what a diagnosis costs, and stops work past either budget."""

    __slots__ = ("budget", "bytes", "checks", "passes", "starved")

    def __init__(self, budget: DiagnosisBudget) -> None:
        self.budget = budget
        self.bytes = 0
        self.passes = 0
        self.checks = 0
        self.starved = False

    def body_pass(self, size: int) -> bool:
        if self.passes >= MAX_BODY_PASSES or self.budget.passes <= 0:
            self.starved = True
            return False
        self.passes += 1
        self.budget.passes -= 1
        self.bytes += size
        return True

    def signature_check(self) -> bool:
        if self.checks >= MAX_HEADER_CANDIDATES or self.budget.checks <= 0:
            self.starved = True
            return False
        self.checks += 1
        self.budget.checks -= 1
        return True


_STARVED = "; not every check ran (this message's diagnosis budget was spent)"


def diagnose(facts: FailureFacts, budget: DiagnosisBudget | None = None) -> Diagnosis:
    """Explain one failed signature (see the module docstring for what counts as proof)."""
    work = _Work(budget if budget is not None else DiagnosisBudget())
    found = _diagnose(facts, work)
    if work.starved and found.code in (Cause.BODY_MODIFIED, Cause.HEADER_CHANGED):
        found = Diagnosis(found.code, found.summary + _STARVED, found.evidence, found.confident)
    return Diagnosis(  # one exit: nothing from the message reaches a log or terminal unescaped
        found.code,
        _plain(found.summary),
        _plain(found.evidence),
        found.confident,
        bytes_examined=work.bytes,
        signature_checks=work.checks,
    )


def _diagnose(f: FailureFacts, work: _Work) -> Diagnosis:
    sig = f.signature
    reason = f.reason
    if reason is Reason.BODY_HASH_MISMATCH and sig is not None:
        return _body(f, sig, work)
    if reason is Reason.SIGNATURE_MISMATCH and sig is not None and f.key is not None:
        return _headers(f, sig, f.key, work)
    if reason is Reason.BODY_LENGTH_EXCEEDS_BODY:
        return Diagnosis(
            Cause.BODY_MODIFIED,
            "the body is shorter than the signed length l=: part of it was cut off after signing",
            _plain(f.detail),
        )
    if reason is Reason.SIG_EXPIRED and sig is not None and sig.expiration is not None:
        return _expired(f, sig)
    if reason is Reason.SIG_TIMESTAMP_IN_FUTURE and sig is not None and sig.timestamp is not None:
        return Diagnosis(
            Cause.SIGNATURE_FUTURE,
            "the signature is dated in the future: the signer's clock is probably wrong;"
            " the signer must fix its clock",
            f"t= is {_duration(sig.timestamp - f.now)} ahead of this verifier's clock",
        )
    if reason is Reason.KEY_REVOKED and sig is not None:
        return _revoked(f, sig)
    if reason is Reason.KEY_NOT_FOUND and sig is not None:
        return _not_found(f, sig)
    if reason is Reason.KEY_TOO_SMALL:
        return Diagnosis(
            Cause.KEY_WEAK,
            "the signing key is too small to be trusted (RFC 8301); the sender must publish"
            " and sign with a key of at least 2048 bits",
            f"{f.key_bits}-bit RSA key; at least {f.min_rsa_bits} bits are required",
        )
    if reason is Reason.KEY_TYPE_MISMATCH:
        return Diagnosis(
            Cause.KEY_MISMATCH,
            "the key in DNS is of another type than the one that signed: the record at this"
            " selector was replaced, or the signer uses the wrong selector",
            _plain(f.detail),
        )
    return _by_reason(f)


# -- body changes ---------------------------------------------------------------------------


def _body(f: FailureFacts, sig: DKIMSignature, work: _Work) -> Diagnosis:
    body = f.body
    note = _header_note(f, sig, work)
    if body is None:
        return Diagnosis(
            Cause.BODY_MODIFIED,
            "the body was changed after signing; it was too large to keep for a closer look" + note,
            f"body hash mismatch; the {f.body_size}-byte body is over the diagnosis limit",
        )
    # Re-encoding first: its proof (the decoded body hashes to bh=) is the most specific, and a
    # quoted-printable "=20" line can otherwise pass for text appended after the signed body.
    found = (
        _reencoded(f, sig, body, work)
        or _appended(f, sig, body, work)
        or _whitespace(sig, body, work)
        or _modified(sig, body, work)
    )
    if note:
        return Diagnosis(found.code, found.summary + note, found.evidence, found.confident)
    return found


def _body_matches(sig: DKIMSignature, candidate: bytes, work: _Work) -> bool:
    """Whether ``candidate`` (a raw body) canonicalizes to the signed body hash."""
    if not work.body_pass(len(candidate)):
        return False
    canonical = canonicalize_body(candidate, sig.body_canon)
    if sig.body_length is not None:
        canonical = canonical[: sig.body_length]
    return hashlib.new(sig.algorithm.hash_name, canonical).digest() == sig.body_hash


def _appended(f: FailureFacts, sig: DKIMSignature, body: bytes, work: _Work) -> Diagnosis | None:
    """The signed body is a prefix of the current one, or lacks only lines before the MIME end."""
    if sig.body_length is not None or not work.body_pass(len(body)):
        return None  # with l= appended text does not break the signature
    current = canonicalize_body(body, sig.body_canon)
    name = sig.algorithm.hash_name
    empty = b"\r\n" if sig.body_canon is Canon.SIMPLE else b""
    if current != empty and hashlib.new(name, empty).digest() == sig.body_hash:
        return _appended_result(current, 0, len(current), "to an empty signed body")
    work.bytes += len(current)
    digest = hashlib.new(name)
    view = memoryview(current)
    done = 0
    for end in _line_ends(current, len(current) - 1, MAX_PREFIXES):
        digest.update(view[done:end])
        done = end
        if digest.copy().digest() == sig.body_hash:
            return _appended_result(current, end, len(current), "")
    return _inserted_before_end(f, sig, current, work)


def _inserted_before_end(
    f: FailureFacts, sig: DKIMSignature, current: bytes, work: _Work
) -> Diagnosis | None:
    """A footer added just before the closing MIME boundary (RFC 2046 5.1.1)."""
    boundary = _boundary(f.headers)
    if boundary is None:
        return None
    close = current.rfind(b"\r\n--" + boundary + b"--")
    if close < 0:
        return None
    close += 2
    tail = current[close:]
    if len(tail) > MAX_TAIL:
        return None
    ends = _line_ends(current, close - 1, MAX_INSERT_POINTS)
    if not ends:
        return None
    digest = hashlib.new(sig.algorithm.hash_name)
    view = memoryview(current)
    done = 0
    for end in ends:
        digest.update(view[done:end])
        done = end
        trial = digest.copy()
        trial.update(tail)
        work.bytes += len(tail)
        if trial.digest() == sig.body_hash:
            return _appended_result(current, end, close, "before the closing MIME boundary")
    work.bytes += done
    return None


def _line_ends(data: bytes, before: int, most: int) -> list[int]:
    """Offsets just after the last ``most`` CRLFs that end before ``before``, ascending.

    Scans a growing window at the end only: the added text is at the end.
    """
    window = 64 * most
    while True:
        start = max(0, before + 1 - window)
        ends = [m.end() for m in _CRLF.finditer(data, start, before + 1) if m.end() <= before]
        if len(ends) >= most or start == 0:
            return ends[-most:]
        window *= 4


def _appended_result(current: bytes, start: int, stop: int, where: str) -> Diagnosis | None:
    """The finding, or None when only whitespace was added (that is the whitespace check's case)."""
    added = current[start:stop]
    if not added.strip():
        return None
    first = next((line for line in added.split(b"\r\n") if line.strip()), b"")
    place = f" {where}" if where else ""
    return Diagnosis(
        Cause.BODY_APPENDED,
        f"content was added to the body after signing{place} (a mailing-list footer or a"
        " disclaimer, typically); the signed part is intact",
        f"{len(added)} bytes added{place}; first line: {_show(first)}",
    )


def _whitespace(sig: DKIMSignature, body: bytes, work: _Work) -> Diagnosis | None:
    """Trailing whitespace added (simple only) or line endings changed."""
    if sig.body_canon is Canon.SIMPLE and (
        b" \r\n" in body or b"\t\r\n" in body or body.endswith((b" ", b"\t"))
    ):
        stripped = b"\r\n".join([line.rstrip(b" \t") for line in body.split(b"\r\n")])
        if _body_matches(sig, stripped, work):
            return Diagnosis(
                Cause.BODY_WHITESPACE,
                "whitespace was added at the ends of body lines after signing; under relaxed body"
                " canonicalization the message would pass: the signer's choice of simple is fragile",
                f"c={sig.canonicalization}; the body verifies once trailing spaces are removed",
            )
    if b"\r\n" in body and b"\n" in body.replace(b"\r\n", b""):
        crlf = re.sub(rb"(?<!\r)\n", b"\r\n", body)
        if _body_matches(sig, crlf, work):
            return _line_endings(sig, "some lines lost their CR (CRLF became LF)")
    if b"\r\n" in body:
        lf = body.replace(b"\r\n", b"\n")
        if _body_matches(sig, lf, work):
            return _line_endings(sig, "the signer signed bare LF line ends, which were turned into CRLF")
    return None


def _line_endings(sig: DKIMSignature, what: str) -> Diagnosis:
    return Diagnosis(
        Cause.BODY_WHITESPACE,
        f"the body's line endings were changed in transit ({what}); no canonicalization"
        " tolerates that: the signer must sign the message as it is sent (CRLF)",
        f"c={sig.canonicalization}; the body verifies with its line endings restored",
    )


def _reencoded(f: FailureFacts, sig: DKIMSignature, body: bytes, work: _Work) -> Diagnosis | None:
    """Decoding the current transfer encoding gives back the signed body."""
    encoding = _last_value(f.headers, "content-transfer-encoding").strip().lower()
    boundary = _boundary(f.headers)
    if boundary is not None:
        for encodings in (_QP, _B64, _QP | _B64):  # a relay converts the 8-bit parts, not the rest
            decoded = _decode_parts(body, boundary, 0, encodings)
            if decoded is not None and _body_matches(sig, decoded, work):
                return _reencoded_result(sig, f"the {'/'.join(sorted(encodings))} MIME parts")
        return None
    if encoding not in ("quoted-printable", "base64"):
        return None
    plain = _decode(body, encoding)
    if plain is None:
        return None
    candidates = [plain]
    if b"\n" in plain and b"\r\n" not in plain:
        candidates.append(plain.replace(b"\n", b"\r\n"))
    for candidate in candidates:
        if _body_matches(sig, candidate, work):
            return _reencoded_result(sig, f"the body ({encoding})")
    return None


def _reencoded_result(sig: DKIMSignature, what: str) -> Diagnosis:
    return Diagnosis(
        Cause.BODY_REENCODED,
        "the body was re-encoded in transit (8-bit text converted to quoted-printable or base64,"
        " e.g. by a relay without 8BITMIME); the content itself is unchanged",
        f"decoding {what} gives the signed body hash (c={sig.canonicalization})",
    )


def _decode(data: bytes, encoding: str) -> bytes | None:
    try:
        if encoding == "base64":
            return binascii.a2b_base64(data, strict_mode=False)
        return binascii.a2b_qp(data)
    except (binascii.Error, ValueError):
        return None


_QP: Final = frozenset({"quoted-printable"})
_B64: Final = frozenset({"base64"})


def _decode_parts(body: bytes, boundary: bytes, depth: int, encodings: frozenset[str]) -> bytes | None:
    """The body with each quoted-printable/base64 leaf part decoded and marked 8bit."""
    if depth > 2:
        return None
    delimiter = b"--" + boundary
    pieces = re.split(rb"(?m)(^" + re.escape(delimiter) + rb"(?:--)?[ \t]*\r?$)", body)
    if len(pieces) < 3 or len(pieces) > 2 * MAX_MIME_PARTS + 1:
        return None
    changed = False
    out = [pieces[0]]
    for i in range(1, len(pieces), 2):
        out.append(pieces[i])
        part = pieces[i + 1]
        if pieces[i].rstrip(b" \t\r").endswith(b"--") or i + 2 >= len(pieces):
            out.append(part)
            continue
        decoded = _decode_part(part, depth, encodings)
        changed = changed or decoded is not None
        out.append(decoded if decoded is not None else part)
    return b"".join(out) if changed else None


def _decode_part(part: bytes, depth: int, encodings: frozenset[str]) -> bytes | None:
    lead = b"\r\n" if part.startswith(b"\r\n") else b""
    inner = part[len(lead) :]
    headers, offset = parse_header_block(inner)
    content = inner[offset:]
    ending = b"\r\n" if content.endswith(b"\r\n") else b""
    content = content[: len(content) - len(ending)]
    sub = _boundary(headers)
    if sub is not None:
        decoded = _decode_parts(content, sub, depth + 1, encodings)
        return None if decoded is None else lead + inner[:offset] + decoded + ending
    encoding = _last_value(headers, "content-transfer-encoding").strip().lower()
    if encoding not in encodings:
        return None
    plain = _decode(content, encoding)
    if plain is None:
        return None
    fields = b"".join(
        b"Content-Transfer-Encoding: 8bit\r\n" if h.key == "content-transfer-encoding" else h.raw
        for h in headers
    )
    return lead + fields + b"\r\n" + plain + ending


def _modified(sig: DKIMSignature, body: bytes, work: _Work) -> Diagnosis:
    hint = ""
    if sig.body_canon is Canon.SIMPLE:
        hint = (
            "; under simple body canonicalization even removed trailing spaces break it,"
            " so a whitespace change cannot be ruled out"
        )
    if sig.body_length is not None:
        return Diagnosis(
            Cause.BODY_MODIFIED,
            f"the body was modified within its signed first {sig.body_length} bytes (l=)" + hint,
            f"body hash mismatch over the first l={sig.body_length} canonical bytes",
        )
    return Diagnosis(
        Cause.BODY_MODIFIED,
        "the body was modified after signing (not an addition at the end, a whitespace or"
        " line-ending change, or a re-encoding that could be undone)" + hint,
        f"body hash mismatch; the body is now {len(body)} bytes",
    )


def _header_note(f: FailureFacts, sig: DKIMSignature, work: _Work) -> str:
    """For a body failure: did the header fields survive too (the mailing-list picture)?"""
    if f.key is None:
        return ""
    if _verifies(f, sig, f.key, f.headers, work):
        return "; the signed header fields are intact"
    if rsa_key_made(f.key, sig.signature) is False:
        return "; the key in DNS did not make this signature either"
    for cause, _summary, evidence in _subject_untagged(f, sig, f.key, work):
        if cause is Cause.SUBJECT_TAGGED:
            return f"; also, the Subject gained a tag ({evidence})"
    return "; signed header fields were changed too"


# -- header changes -----------------------------------------------------------------------


def _headers(f: FailureFacts, sig: DKIMSignature, key: PublicKey, work: _Work) -> Diagnosis:
    made = rsa_key_made(key, sig.signature)
    if made is False:
        return _key_mismatch(f, sig)
    proven = next(_reconstructions(f, sig, key, work), None)
    if proven is not None:
        return Diagnosis(*proven)
    copied = _copied_differences(f, sig)
    if copied is not None:
        return copied
    simple = sig.header_canon is Canon.SIMPLE
    hint = (
        "; with simple header canonicalization any refolding or whitespace change breaks it" if simple else ""
    )
    absent = _absent_signed(f, sig)
    named = [n.lower() for n in sig.signed_headers]
    once = [n for n in absent if named.count(n) == 1]
    if made and once:
        # Not proven (no z=): a signer may name an absent field once to keep it out.
        return Diagnosis(
            Cause.HEADER_REMOVED,
            f"the signed {', '.join(once)} field is named once in h= but absent now: most likely"
            " removed after signing (a signer can also name an absent field to keep it out, so"
            " this is a best reading, not a proof)" + hint,
            f"absent: {', '.join(once)}",
            confident=False,
        )
    if absent:
        hint += f"; {', '.join(absent)} named in h= but absent (removed, or listed to prevent additions)"
    if made:
        return Diagnosis(
            Cause.HEADER_CHANGED,
            "a signed header field was changed after signing (the key in DNS did make this"
            " signature); without z= which one cannot be told" + hint,
            f"signed fields: {', '.join(sig.signed_headers)}",
        )
    return Diagnosis(
        Cause.HEADER_CHANGED,
        "a signed header field or the key changed (an Ed25519 signature cannot tell which)" + hint,
        f"signed fields: {', '.join(sig.signed_headers)}",
        confident=False,
    )


def _key_mismatch(f: FailureFacts, sig: DKIMSignature) -> Diagnosis:
    made_bits = len(sig.signature) * 8
    where = sig.key_query_name
    if f.key_bits is not None and made_bits != f.key_bits:
        evidence = f"b= is a {made_bits}-bit RSA signature; the key at {where} has {f.key_bits} bits"
    else:
        evidence = f"the key at {where} does not open b= (no PKCS#1 padding inside)"
    when = ""
    if sig.timestamp is not None and _old(f, sig):
        when = f" (signed {_duration(f.now - sig.timestamp)} ago)"
    return Diagnosis(
        Cause.KEY_MISMATCH,
        "the key published in DNS is not the one that made this signature: the selector's key"
        f" was replaced (a rotation that reused the selector?){when}, or b= was damaged",
        evidence,
    )


_Finding = tuple[Cause, str, str]


def _reconstructions(f: FailureFacts, sig: DKIMSignature, key: PublicKey, work: _Work) -> Iterator[_Finding]:
    """Undo likely changes one at a time; the first that makes the signature verify is proof."""
    yield from _subject_untagged(f, sig, key, work)
    if sig.header_canon is Canon.SIMPLE:
        yield from _unfolded(f, sig, key, work)
        yield from _fold_removed(f, sig, key)
    yield from _duplicates_removed(f, sig, key, work)
    yield from _copied_restored(f, sig, key, work)


_TAG = re.compile(rb"^([ \t]*(?:(?:re|fwd?|aw|sv|tr)[ \t]*:[ \t]*)*)(\[[^\]\r\n]{1,100}\])([ \t]?)", re.I)


def _subject_untagged(f: FailureFacts, sig: DKIMSignature, key: PublicKey, work: _Work) -> Iterator[_Finding]:
    chosen = _chosen(f.headers, sig, f.position)
    for position in chosen:
        field_ = f.headers[position]
        if field_.key != "subject":
            continue
        colon = field_.raw.find(b":")
        value = field_.raw[colon + 1 :]
        match = _TAG.match(value)
        if match is None:
            continue
        for cut in (match.end(), match.end(2)):
            raw = field_.raw[: colon + 1] + match.group(1) + value[cut:]
            trial = _replaced(f.headers, position, HeaderField(field_.name, raw))
            if _verifies(f, sig, key, trial, work):
                tag = match.group(2).decode("utf-8", "replace")
                yield (
                    Cause.SUBJECT_TAGGED,
                    f"the Subject gained the tag {_show(tag.encode())} after signing (a mailing list,"
                    " typically); nothing else in the signed header fields changed",
                    f"subject: {_show(_value(raw))} -> {_show(_value(field_.raw))}",
                )
                return


def _unfolded(f: FailureFacts, sig: DKIMSignature, key: PublicKey, work: _Work) -> Iterator[_Finding]:
    """Folding added by a relay (CRLF inserted before a space), or fold whitespace swapped."""
    folded = [p for p in _chosen(f.headers, sig, f.position) if b"\r\n" in f.headers[p].raw[:-2]]
    groups = [folded] + ([[p] for p in folded[:6]] if len(folded) > 1 else [])  # all, then each alone
    variants = [(group, b"\r\n", b"") for group in groups]
    variants += [(folded, b"\r\n\t", b"\r\n "), (folded, b"\r\n ", b"\r\n\t")]
    for group, old, new in variants:
        if not group:
            continue
        trial = list(f.headers)
        for position in group:
            trial[position] = HeaderField(
                f.headers[position].name, f.headers[position].raw[:-2].replace(old, new) + b"\r\n"
            )
        if _verifies(f, sig, key, tuple(trial), work):
            names = ", ".join(dict.fromkeys(f.headers[p].key for p in group))
            first = group[0]
            yield (
                Cause.HEADER_WHITESPACE,
                "a signed header field was refolded after signing; with simple header"
                " canonicalization that breaks the signature (relaxed would have passed)",
                f"refolded: {names}; e.g. {_show(_value(trial[first].raw), exact=True)} ->"
                f" {_show(_value(f.headers[first].raw), exact=True)}",
            )
            return


def _fold_removed(f: FailureFacts, sig: DKIMSignature, key: PublicKey) -> Iterator[_Finding]:
    """A relay unfolded a field the signer had folded: put one fold back at a blank, one try at a time.

    Simple header canonicalization only (a field's canonical form is its bytes). RSA only:
    ``b=`` is opened once and each candidate costs hashing the fields from it on, not an RSA
    check; all candidates together hash at most ``FOLD_HASH_FACTOR`` times the signed header
    bytes. Long fields first, and in each the blanks nearest column 78, where folders fold.
    """
    signed = rsa_signed_digest(key, sig.signature, sig.algorithm.new_hash().digest_size)
    if signed is None:
        return
    chosen = _chosen(f.headers, sig, f.position)
    parts = [f.headers[p].raw for p in chosen]
    raw_sig = f.headers[f.position].raw
    colon = raw_sig.find(b":")
    tail = raw_sig[: colon + 1] + without_b_value(raw_sig[colon + 1 :].removesuffix(b"\r\n"))
    budget = FOLD_HASH_FACTOR * (sum(map(len, parts)) + len(tail))
    tries = 0
    order = sorted(range(len(chosen)), key=lambda k: (len(parts[k]) <= _FOLD_COLUMN, k))
    for k in order:
        raw = parts[k]
        if b"\r\n" in raw[:-2]:
            continue
        prefix = sig.algorithm.new_hash()
        for part in parts[:k]:
            prefix.update(part)
        suffix = b"".join(parts[k + 1 :]) + tail
        start = raw.find(b":") + 2
        blanks = [i for i in range(start, len(raw) - 2) if raw[i] in b" \t"]
        blanks.sort(key=lambda i: abs(_FOLD_COLUMN - i))
        for i in blanks:
            for old in (raw[:i] + b"\r\n" + raw[i:], raw[:i] + b"\r\n\t" + raw[i + 1 :]):
                tries += 1
                budget -= len(old) + len(suffix)
                if tries > MAX_FOLD_CANDIDATES or budget < 0:
                    return
                digest = prefix.copy()
                digest.update(old)
                digest.update(suffix)
                if digest.digest() == signed:
                    yield (
                        Cause.HEADER_WHITESPACE,
                        "a signed header field was unfolded after signing; with simple header"
                        " canonicalization that breaks the signature (relaxed would have passed)",
                        f"unfolded: {f.headers[chosen[k]].key}; {_show(_value(old), exact=True)} ->"
                        f" {_show(_value(raw), exact=True)}",
                    )
                    return


def _duplicates_removed(
    f: FailureFacts, sig: DKIMSignature, key: PublicKey, work: _Work
) -> Iterator[_Finding]:
    names = dict.fromkeys(n.lower() for n in sig.signed_headers)
    index = index_by_name(f.headers)
    for name in names:
        positions = [p for p in index.get(name, ()) if p != f.position]
        if len(positions) < 2:
            continue
        for position in positions[:4]:
            trial = f.headers[:position] + f.headers[position + 1 :]
            if _verifies(f, sig, key, trial, work):
                yield (
                    Cause.HEADER_ADDED,
                    f"a second {name} field was added after signing, where the signature now"
                    " picks it up (RFC 6376 5.4.2 selects from the bottom)",
                    f"added: {name}: {_show(_value(f.headers[position].raw))}",
                )
                return


def _copied(sig: DKIMSignature) -> list[tuple[str, bytes]]:
    if not sig.copied_headers:
        return []
    out = []
    for item in sig.copied_headers.split("|")[:64]:
        name, colon, value = decode_dkim_qp(item).partition(":")
        if colon and name:
            out.append((name.strip(), value.encode("utf-8", "surrogateescape")))
    return out


def _copied_restored(f: FailureFacts, sig: DKIMSignature, key: PublicKey, work: _Work) -> Iterator[_Finding]:
    copied = _copied(sig)
    if not copied:
        return
    trial = list(f.headers)
    index = index_by_name(f.headers)
    used: dict[str, int] = {}
    for name, value in copied:
        key_ = name.lower()
        n = used.get(key_, 0)
        positions = [p for p in index.get(key_, ()) if p != f.position]
        raw = name.encode() + b":" + value + b"\r\n"
        if n < len(positions):
            trial[positions[n]] = HeaderField(name, raw)
        else:
            trial.append(HeaderField(name, raw))
        used[key_] = n + 1
    if _verifies(f, sig, key, tuple(trial), work):
        difference = _copied_differences(f, sig)
        if difference is not None:
            yield (difference.code, difference.summary, difference.evidence + "; restoring z= verifies")


def _copied_differences(f: FailureFacts, sig: DKIMSignature) -> Diagnosis | None:
    """Compare the signer's z= copies with the fields now present (RFC 6376 3.5 z=)."""
    copied = _copied(sig)
    if not copied:
        return None
    index = index_by_name(f.headers)
    used: dict[str, int] = {}
    for name, old in copied:
        key_ = name.lower()
        n = used.get(key_, 0)
        used[key_] = n + 1
        positions = [p for p in index.get(key_, ()) if p != f.position]
        if n >= len(positions):
            return Diagnosis(
                Cause.HEADER_REMOVED,
                f"the signed {key_} field was removed after signing (z= holds its copy)",
                f"removed: {key_}: {_show(old)}",
            )
        new = _value(f.headers[positions[n]].raw)
        if new == old:
            continue
        if _norm(new) == _norm(old):
            return Diagnosis(
                Cause.HEADER_WHITESPACE,
                f"the signed {key_} field was refolded or its whitespace changed after signing;"
                " with simple header canonicalization that breaks the signature",
                f"{key_}: {_show(old, exact=True)} -> {_show(new, exact=True)}",
                confident=sig.header_canon is Canon.SIMPLE,
            )
        tagged = _TAG.match(new)
        if key_ == "subject" and tagged is not None and _norm(new[tagged.end() :]) == _norm(old):
            return Diagnosis(
                Cause.SUBJECT_TAGGED,
                f"the Subject gained the tag {_show(tagged.group(2))} after signing (z= holds the original)",
                f"subject: {_show(old)} -> {_show(new)}",
            )
        return Diagnosis(
            Cause.HEADER_CHANGED,
            f"the signed {key_} field was changed after signing (z= holds the original)",
            f"{key_}: {_show(old)} -> {_show(new)}",
        )
    return None


def _absent_signed(f: FailureFacts, sig: DKIMSignature) -> list[str]:
    index = index_by_name(f.headers)
    return list(dict.fromkeys(n.lower() for n in sig.signed_headers if n.lower() not in index))[:4]


def _chosen(headers: Sequence[HeaderField], sig: DKIMSignature, position: int) -> list[int]:
    return select(sig.signed_headers, index_by_name(headers), exclude=position)[0]


def _replaced(headers: tuple[HeaderField, ...], position: int, new: HeaderField) -> tuple[HeaderField, ...]:
    return (*headers[:position], new, *headers[position + 1 :])


def _verifies(
    f: FailureFacts, sig: DKIMSignature, key: PublicKey, headers: Sequence[HeaderField], work: _Work
) -> bool:
    """Would the signature verify over these header fields? (RFC 6376 3.7, as the verifier does.)"""
    if not work.signature_check():
        return False
    return verify_digest(sig.algorithm, key, sig.signature, _header_hash(f, sig, headers))


def _header_hash(f: FailureFacts, sig: DKIMSignature, headers: Sequence[HeaderField]) -> hashlib._Hash:
    """The header hash the verifier computes over these header fields (RFC 6376 3.7)."""
    signature_field = f.headers[f.position]
    position = next((i for i, h in enumerate(headers) if h is signature_field), f.position)
    digest = sig.algorithm.new_hash()
    canon = sig.header_canon
    for chosen in select(sig.signed_headers, index_by_name(headers), exclude=position)[0]:
        digest.update(canonicalize_header(headers[chosen], canon))
    raw = signature_field.raw
    colon = raw.find(b":")
    stripped = raw[: colon + 1] + without_b_value(raw[colon + 1 :].removesuffix(b"\r\n"))
    digest.update(relaxed_header(stripped)[:-2] if canon is Canon.RELAXED else stripped)
    return digest


# -- key and policy failures -----------------------------------------------------------------


def _expired(f: FailureFacts, sig: DKIMSignature) -> Diagnosis:
    assert sig.expiration is not None  # noqa: S101 - checked by the caller
    lifetime = ""
    if sig.timestamp is not None:
        lifetime = f"; the signer allowed {_duration(sig.expiration - sig.timestamp)} after signing"
    return Diagnosis(
        Cause.SIGNATURE_EXPIRED,
        "the signature expired before it was checked (delayed delivery, or a message checked"
        " again later); nothing in the message needs to have changed" + lifetime,
        f"x= passed {_duration(f.now - sig.expiration)} ago",
    )


def _revoked(f: FailureFacts, sig: DKIMSignature) -> Diagnosis:
    age = ""
    if sig.timestamp is not None:
        age = f"; signed {_duration(f.now - sig.timestamp)} ago"
    return Diagnosis(
        Cause.KEY_REVOKED,
        "the domain revoked this key (empty p=), as is done after a key rotation: mail signed"
        " before the rotation no longer verifies; only the sender can re-sign",
        f"{sig.key_query_name} has p= empty{age}",
    )


def _not_found(f: FailureFacts, sig: DKIMSignature) -> Diagnosis:
    age = ""
    if sig.timestamp is not None and _old(f, sig):
        age = f" (signed {_duration(f.now - sig.timestamp)} ago: the key may have been removed after a rotation)"
    return Diagnosis(
        Cause.KEY_NOT_FOUND,
        f"no key is published for selector {sig.selector!r}{age}; check s= for a typo against"
        f" the domain's DNS — DNS cannot list a domain's selectors, so which others exist cannot be told",
        _plain(f.detail),
    )


def _old(f: FailureFacts, sig: DKIMSignature) -> bool:
    """Signed a day or more ago: old enough for a key rotation to be a likely story."""
    return sig.timestamp is not None and f.now - sig.timestamp >= 86400


_BY_REASON: Final = {
    "sig-": (
        Cause.SIGNATURE_INVALID,
        "the DKIM-Signature field is malformed or breaks RFC 6376; the signer must fix its software",
    ),
    "key-": (
        Cause.KEY_INVALID,
        "the key record is broken or does not allow this signature; the domain must fix its DNS record",
    ),
    "dns-": (Cause.DNS_ERROR, "the key could not be fetched from DNS just now; checking later may succeed"),
    "algorithm-not-accepted": (
        Cause.ALGORITHM_REFUSED,
        "the signature uses an algorithm this verifier does not accept (rsa-sha1, RFC 8301);"
        " the signer must move to rsa-sha256 or ed25519-sha256",
    ),
    "not-evaluated": (
        Cause.NOT_EVALUATED,
        "this signature was not checked: the message carries more signatures than are evaluated",
    ),
}


def _by_reason(f: FailureFacts) -> Diagnosis:
    for prefix, (cause, summary) in _BY_REASON.items():
        if f.reason.value.startswith(prefix):
            return Diagnosis(cause, summary, _plain(f.detail))
    return Diagnosis(Cause.UNKNOWN, "no further explanation is available", _plain(f.detail), confident=False)


# -- small helpers -------------------------------------------------------------------------------


def _boundary(headers: Sequence[HeaderField]) -> bytes | None:
    """The boundary of a multipart Content-Type (the last such field), or None."""
    value = _last_value(headers, "content-type")[:4096].encode("utf-8", "surrogateescape")
    if not re.match(rb"\s*multipart/", value, re.I):
        return None
    match = re.search(rb'boundary\s*=\s*(?:"([^"\r\n]{1,70})"|([^\s;"]{1,70}))', value, re.I)
    if match is None:
        return None
    return match.group(1) or match.group(2)


def _last_value(headers: Sequence[HeaderField], name: str) -> str:
    for h in reversed(headers):
        if h.key == name:
            return h.value.decode("utf-8", "surrogateescape").replace("\r\n", "")
    return ""


def _value(raw: bytes) -> bytes:
    colon = raw.find(b":")
    return raw[colon + 1 :].removesuffix(b"\r\n")


def _norm(value: bytes) -> bytes:
    return b" ".join(value.replace(b"\r\n", b"").split())


def _show(text: bytes, *, exact: bool = False) -> str:
    """A value quoted for logs and terminals: no control characters, bounded length.

    Folding is undone unless ``exact`` (where the whitespace is the point).
    """
    if not exact:
        text = b" ".join(text.replace(b"\r\n", b"").split())
    decoded = text.decode("utf-8", "replace").strip(" ")
    if exact:
        decoded = decoded.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")
    safe = visible(decoded)
    if len(safe) > _SHOWN:
        safe = safe[: _SHOWN - 3] + "..."
    return '"' + safe.replace('"', "'") + '"'


def _plain(text: str) -> str:
    """The verifier's detail sentence with any control character made visible."""
    return visible(text)


def _duration(seconds: int) -> str:
    seconds = max(0, seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
