"""Staged, I/O-free verification of every DKIM-Signature in one message.

Drivers (the library, the CLI, the milter) do the I/O around it::

    v = Verification(headers, options, now=now)
    for name in v.key_queries():
        v.add_key_answer(name, await resolver.lookup_txt(name))
    for chunk in body_chunks:
        v.feed_body(chunk)
    report = v.finish()

Never raises for any content of the message or of a DNS answer: every
problem becomes a :class:`SignatureResult` with a reason. Any other
exception is a bug.

Which signatures get work, and in what order (the budget is DNS lookups and
crypto, never fields): fields added in transit go on top, so the signature
that was there first is at the bottom, and junk prepended above it must not
push it out. Fields are therefore read from the bottom up (at most
``MAX_SIGNATURE_FIELDS``), and the ones that need a key are ranked: first
those whose d= a caller names (``VerifyOptions.preferred_domains``: the
milter passes its require rules), then those aligned with From, then the
rest, bottom first within each rank. The first ``max_signatures`` get a key
lookup; the crypto checks then run in the same order until
``max_verify_work`` units (one RSA-2048 verification each,
:func:`~mailseal.core.keypolicy.verify_cost`) are spent. Everything else is
``not-evaluated``; the report holds at most ``REPORTED_PER_EVALUATED``
fields per evaluated one and counts the fields it left out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mailseal.core.address import author
from mailseal.core.algorithms import PublicKey, verify_digest
from mailseal.core.alignment import alignment
from mailseal.core.bodyhash import BodyHasher
from mailseal.core.canonicalization import Canon, canonicalize_header, relaxed_header
from mailseal.core.diagnosis import BodyKeeper, Diagnosis, DiagnosisBudget, FailureFacts, diagnose
from mailseal.core.identity import is_within
from mailseal.core.keypolicy import (
    WEAK_RSA_BITS,
    max_key_der_bytes,
    size_cost,
    size_problem,
    usage_problem,
)
from mailseal.core.keyrecord import KeyRecord, parse_key_record
from mailseal.core.message import HeaderField
from mailseal.core.options import VerifyOptions
from mailseal.core.problems import SyntaxProblem
from mailseal.core.results import (
    REASON_RESULT,
    Alignment,
    DKIMResult,
    Reason,
    SignatureResult,
    VerificationReport,
)
from mailseal.core.selection import index_by_name, select
from mailseal.core.signature import DKIMSignature, without_b_value
from mailseal.core.txtanswer import TxtAnswer, TxtStatus

SIGNATURE_FIELD = "dkim-signature"
REPORTED_PER_EVALUATED = 4  # at most this many fields reported per signature we may evaluate
MAX_SIGNATURE_FIELDS = 64
"""DKIM-Signature fields parsed per message, counted from the bottom; the rest are only counted."""
_LOOSE_TAG = re.compile(rb"(?:^|;)\s*([dsai])\s*=\s*([^;]*)")
_LOOSE_VALUE = re.compile(r"[A-Za-z0-9._@+=-]{1,255}\Z")

_DNS_REASONS = {
    TxtStatus.TIMEOUT: (Reason.DNS_TIMEOUT, "the DNS lookup of the key timed out"),
    TxtStatus.SERVFAIL: (Reason.DNS_SERVFAIL, "the DNS server failed (SERVFAIL) looking up the key"),
    TxtStatus.ERROR: (Reason.DNS_ERROR, "the DNS lookup of the key failed"),
    TxtStatus.NXDOMAIN: (Reason.KEY_NOT_FOUND, "no key record exists at"),
    TxtStatus.NO_DATA: (Reason.KEY_NOT_FOUND, "no TXT record exists at"),
}


@dataclass(slots=True)
class _Loose:
    """d=, s=, a=, i= read leniently from a signature that did not parse: for the report only."""

    domain: str | None = None
    selector: str | None = None
    algorithm: str | None = None
    auid: str | None = None


@dataclass(slots=True)
class _Candidate:
    """One DKIM-Signature field and what we have learnt about it so far.

    What the signature says is read from ``signature`` when the result is
    built; the fields below it are what the message, the key and the body
    added (typed, so mypy sees every field of the result).
    """

    position: int
    header: HeaderField
    signature: DKIMSignature | None = None
    loose: _Loose | None = None  # only when ``signature`` is None
    reason: Reason | None = None
    detail: str = ""
    decided: bool = False
    key: PublicKey | None = None
    cost: int = 0  # crypto units for key (keypolicy.size_cost), read with it
    chosen: tuple[int, ...] = ()
    rank: int = 2
    query: str = ""  # where its key lives, lower-cased (the DNS name to ask for and to match answers by)
    signed_headers: tuple[str, ...] = ()
    from_oversigned: bool = False
    alignment: Alignment = Alignment.UNKNOWN
    key_bits: int | None = None
    key_testing: bool = False
    dnssec: bool | None = None
    unsigned_body_bytes: int | None = None


class Verification:
    """Verify one message's signatures; see the module docstring for the stages and the order."""

    def __init__(
        self, headers: Sequence[HeaderField], options: VerifyOptions | None = None, *, now: int
    ) -> None:
        self._headers = tuple(headers)
        self._options = options or VerifyOptions()
        self._now = now
        self._index = index_by_name(self._headers)
        self._author = author(self._headers)
        self._author_domain = self._author.domain
        positions = self._index.get(SIGNATURE_FIELD, ())  # bottom-most first
        self._fields = len(positions)
        # Bottom first: the field that was there first cannot be pushed out by fields added above it.
        self._candidates = [self._parse(position) for position in positions[:MAX_SIGNATURE_FIELDS]]
        cap = self._options.max_signatures
        pending = [c for c in self._candidates if not c.decided]
        if len(pending) > 1:
            pending.sort(key=lambda c: (c.rank, -c.position))
        for c in pending[cap:]:
            self._decide(c, Reason.NOT_EVALUATED, f"not evaluated: only {cap} signatures are checked")
        self._pending = pending[:cap]  # the evaluation order, for key lookups and crypto
        self._work = 0  # crypto units spent (keypolicy.verify_cost)
        self._body = BodyHasher(
            [(c.signature.body_canon, c.signature.algorithm.hash_name, c.signature.body_length)
             for c in self._pending if c.signature is not None]
        )  # fmt: skip
        self._kept = BodyKeeper(self._options.diagnosis_body_limit if self._pending else 0)
        self._failure_body: tuple[bytes, bytes] | None = None  # (as given, the body): sliced once

    # -- stage 1: the signature fields -------------------------------------------

    def _parse(self, position: int) -> _Candidate:
        header = self._headers[position]
        try:
            sig = DKIMSignature.from_header(header.value)
        except SyntaxProblem as problem:
            candidate = _Candidate(position, header, loose=_loose_facts(header))
            self._decide(candidate, problem.reason, problem.detail)
            return candidate
        joined = ":".join(sig.signed_headers)  # h= names hold no ":" (they were split on it)
        # One lower() for the usual ASCII list; others name by name (a Greek sigma lowers by context).
        names = joined.lower().split(":") if joined.isascii() else [n.lower() for n in sig.signed_headers]
        chosen, _ = select(names, self._index, exclude=position)
        froms_present = len(self._index.get("from", ()))
        froms_signed = names.count("from")
        align = alignment(sig.domain, self._author_domain)
        candidate = _Candidate(
            position,
            header,
            sig,
            chosen=tuple(chosen),
            query=sig.key_query_name.lower(),
            signed_headers=tuple([self._headers[p].key for p in chosen]),
            from_oversigned=froms_signed > froms_present,
            alignment=align,
        )
        preferred = self._options.preferred_domains
        if preferred and any(is_within(sig.domain, name) for name in preferred):
            candidate.rank = 0
        elif align in (Alignment.EXACT, Alignment.ORGANIZATIONAL):
            candidate.rank = 1
        skew = self._options.clock_skew
        if sig.expiration is not None and self._now > sig.expiration + skew:
            self._decide(candidate, Reason.SIG_EXPIRED, f"the signature expired (x={sig.expiration})")
        elif sig.timestamp is not None and sig.timestamp > self._now + skew:
            self._decide(
                candidate,
                Reason.SIG_TIMESTAMP_IN_FUTURE,
                f"the signature is dated in the future (t={sig.timestamp})",
            )
        return candidate

    # -- stage 2: keys from DNS ----------------------------------------------------

    def key_queries(self) -> tuple[str, ...]:
        """The distinct DNS names whose TXT records are still needed, most wanted first."""
        names: dict[str, None] = {}
        for c in self._pending:
            if c.signature is not None and not c.decided and c.key is None:
                names[c.query] = None
        return tuple(names)

    def add_key_answer(self, name: str, answer: TxtAnswer) -> None:
        """Give the DNS answer for ``name``; every signature using that key takes it."""
        name = name.lower().removesuffix(".")
        for c in self._pending:
            sig = c.signature
            if sig is None or c.decided or c.query != name:
                continue
            c.dnssec = answer.authenticated if answer.status is TxtStatus.FOUND else None
            self._take_key(c, sig, answer)

    def _take_key(self, c: _Candidate, sig: DKIMSignature, answer: TxtAnswer) -> None:
        status = (
            answer.status if answer.records or answer.status is not TxtStatus.FOUND else TxtStatus.NO_DATA
        )
        if status is not TxtStatus.FOUND:
            reason, text = _DNS_REASONS[status]
            if reason is Reason.KEY_NOT_FOUND:
                text = f"{text} {sig.key_query_name}"
            elif answer.detail:
                text = f"{text}: {answer.detail}"
            self._decide(c, reason, text)
            return
        record: KeyRecord | None = None
        first_problem: SyntaxProblem | None = None
        for data in answer.records:
            parsed = parse_key_record(data)
            if isinstance(parsed, KeyRecord):
                record = parsed
                break
            if first_problem is None or (b"p=" in data and b"p=" not in answer.records[0]):
                first_problem = parsed  # report the record that tried to be a key, not an SPF neighbour
        if record is None:
            assert first_problem is not None  # noqa: S101 - FOUND answers carry records
            self._decide(
                c, first_problem.reason, f"key record at {sig.key_query_name}: {first_problem.detail}"
            )
            return
        where = sig.key_query_name
        problem = usage_problem(record, sig.algorithm, domain=sig.domain, auid=sig.auid, where=where)
        if problem is None and len(record.public_key_b64) * 3 // 4 > max_key_der_bytes(
            self._options.max_rsa_bits
        ):
            problem = SyntaxProblem(
                Reason.KEY_TOO_LARGE,
                f"the key at {where} is {len(record.public_key_b64) * 3 // 4} bytes, larger than any key "
                f"of at most {self._options.max_rsa_bits} bits",
            )
        if problem is not None:
            self._decide(c, problem.reason, problem.detail)
            return
        try:  # memoized with its size: read once per key, not per message
            key, size = record.public_key_sized()
        except SyntaxProblem as bad:
            self._decide(c, bad.reason, f"key record at {where}: {bad.detail}")
            return
        c.key_bits = size.bits
        c.key_testing = record.testing
        problem = size_problem(
            size, min_rsa_bits=self._options.min_rsa_bits, max_rsa_bits=self._options.max_rsa_bits
        )
        if problem is not None:
            self._decide(c, problem.reason, f"key record at {where}: {problem.detail}")
            return
        c.key, c.cost = key, size_cost(size)

    # -- stage 3: the body -----------------------------------------------------------

    def feed_body(self, chunk: bytes, start: int = 0) -> None:
        """Add the next body bytes, ``chunk[start:]`` (any chunking; memory stays flat)."""
        self._body.feed(chunk, start)
        self._kept.feed(chunk, start)

    # -- stage 4: verdicts -------------------------------------------------------------

    def finish(self, body: bytes | None = None, body_start: int = 0) -> VerificationReport:
        """Check body hashes and signatures in evaluation order; report top first, bounded.

        ``body[body_start:]`` is the whole body when the driver still holds it (for
        the diagnosis of a failure, past what was kept while streaming; sliced only
        when a signature failed).
        """
        self._body.finish()
        for c in self._pending:
            if not c.decided:
                self._check(c)
        reported = self._reported()
        budget: DiagnosisBudget | None = None  # all failures of this message share one
        results = []
        for c in reported:
            diagnosis = None
            if c.reason is not None:
                budget = budget or DiagnosisBudget()
                diagnosis = diagnose(self._failure_facts(c, body, body_start), budget)
            results.append(self._result(c, diagnosis))
        return VerificationReport(
            tuple(results), self._author_domain, self._author, left_out=self._fields - len(reported)
        )

    def _reported(self) -> list[_Candidate]:
        """The evaluated fields, then the others by rank, bottom first; shown top first."""
        if len(self._pending) == len(self._candidates):  # the usual case: every field is evaluated
            return (
                sorted(self._pending, key=lambda c: c.position) if len(self._pending) > 1 else self._pending
            )
        limit = max(self._options.max_signatures * REPORTED_PER_EVALUATED, len(self._pending))
        chosen = {id(c) for c in self._pending}
        rest = sorted(
            (c for c in self._candidates if id(c) not in chosen), key=lambda c: (c.rank, -c.position)
        )
        keep = [*self._pending, *rest][:limit]
        return sorted(keep, key=lambda c: c.position)

    def _failure_facts(self, c: _Candidate, body: bytes | None, body_start: int) -> FailureFacts:
        """What the diagnosis of a failed signature may look at (failures only pay for it)."""
        assert c.reason is not None  # noqa: S101 - failures only
        if body is not None and (self._failure_body is None or self._failure_body[0] is not body):
            self._failure_body = (body, body[body_start:] if body_start else body)
        whole = self._failure_body[1] if body is not None and self._failure_body is not None else None
        return FailureFacts(
            reason=c.reason,
            detail=c.detail,
            signature=c.signature,
            headers=self._headers,
            position=c.position,
            key=c.key,
            key_bits=c.key_bits,
            now=self._now,
            min_rsa_bits=self._options.min_rsa_bits,
            body=whole if whole is not None else self._kept.body(),
            body_size=self._kept.size if whole is None else len(whole),
        )

    def _check(self, c: _Candidate) -> None:
        sig = c.signature
        assert sig is not None  # noqa: S101 - unparsed signatures were decided earlier
        if c.key is None:
            self._decide(c, Reason.DNS_ERROR, f"no DNS answer was given for {sig.key_query_name}")
            return
        if sig.body_length is not None:
            body_length = self._body.canonical_length(sig.body_canon)
            if sig.body_length > body_length:
                self._decide(
                    c,
                    Reason.BODY_LENGTH_EXCEEDS_BODY,
                    f"l={sig.body_length} is longer than the {body_length}-byte canonical body",
                )
                return
            c.unsigned_body_bytes = body_length - sig.body_length
        spec = (sig.body_canon, sig.algorithm.hash_name, sig.body_length)
        if self._body.digest(spec) != sig.body_hash:
            self._decide(
                c, Reason.BODY_HASH_MISMATCH, "the body was changed after signing (body hash mismatch)"
            )
            return
        cost = c.cost  # charged only when the public-key operation really runs
        if self._work + cost > self._options.max_verify_work:
            self._decide(
                c,
                Reason.NOT_EVALUATED,
                f"not evaluated: the message's verification work budget "
                f"({self._options.max_verify_work} units) was spent",
            )
            return
        self._work += cost
        digest = sig.algorithm.new_hash()
        canon = sig.header_canon
        headers = self._headers
        raw = c.header.raw
        colon = raw.find(b":")
        stripped = raw[: colon + 1] + without_b_value(raw[colon + 1 :].removesuffix(b"\r\n"))
        if canon is Canon.RELAXED:  # one update of the joined fields: fewer calls per signature
            parts = [relaxed_header(headers[position].raw) for position in c.chosen]
            parts.append(relaxed_header(stripped)[:-2])
            digest.update(b"".join(parts))
        else:
            for position in c.chosen:
                digest.update(canonicalize_header(headers[position], canon))
            digest.update(stripped)
        if not verify_digest(sig.algorithm, c.key, sig.signature, digest):
            self._decide(
                c, Reason.SIGNATURE_MISMATCH, "the signature does not match the signed header fields"
            )
            return
        if sig.algorithm.legacy and not self._options.allow_rsa_sha1:
            self._decide(
                c,
                Reason.ALGORITHM_NOT_ACCEPTED,
                "the rsa-sha1 signature verifies, but rsa-sha1 is not accepted (RFC 8301)",
            )
            return
        self._decide(c, None, _pass_detail(sig, c))

    def _unsigned(self, c: _Candidate) -> tuple[str, ...]:
        """Names with an instance this signature does not cover, in order of the topmost such instance.

        Walks the names, not the fields: a thousand fields of one name cost one
        step when the topmost is uncovered (junk signatures above the real one).
        """
        covered = {*c.chosen, c.position}
        found = []
        for key, positions in self._index.items():  # positions are bottom-most first
            if not key:
                continue
            if len(positions) == 1:  # the usual case: one field of this name
                if positions[0] not in covered:
                    found.append((positions[0], key))
                continue
            for top in reversed(positions):
                if top not in covered:
                    found.append((top, key))
                    break
        if not found:
            return ()
        found.sort()
        return tuple([key for _, key in found])

    def _decide(self, c: _Candidate, reason: Reason | None, detail: str) -> None:
        c.reason, c.detail, c.decided = reason, detail, True

    def _result(self, c: _Candidate, diagnosis: Diagnosis | None) -> SignatureResult:
        """The candidate's verdict as a value; its result word comes from the one reason table."""
        result = DKIMResult.PASS if c.reason is None else REASON_RESULT[c.reason]
        sig = c.signature
        if sig is None:
            loose = c.loose or _Loose()
            return SignatureResult(
                result,
                c.reason,
                c.detail,
                domain=loose.domain,
                selector=loose.selector,
                algorithm=loose.algorithm,
                auid=loose.auid,
                diagnosis=diagnosis,
            )
        align = c.alignment
        aligned = None if align is Alignment.UNKNOWN else align is not Alignment.NONE
        return SignatureResult(
            result,
            c.reason,
            c.detail,
            domain=sig.domain,
            selector=sig.selector,
            algorithm=sig.algorithm.name,
            auid=sig.auid,
            canonicalization=sig.canonicalization,
            signed_headers=c.signed_headers,
            unsigned_headers=self._unsigned(c),
            body_length_limited=sig.body_length is not None,
            unsigned_body_bytes=c.unsigned_body_bytes,
            from_oversigned=c.from_oversigned,
            key_bits=c.key_bits,
            key_testing=c.key_testing,
            aligned=aligned,
            alignment=align,
            dnssec=c.dnssec,
            timestamp=sig.timestamp,
            expiration=sig.expiration,
            signature_b=sig.signature_b64,
            warnings=_warnings(c, sig, aligned=aligned) if result is DKIMResult.PASS else (),
            diagnosis=diagnosis,
        )


def _warnings(c: _Candidate, sig: DKIMSignature, *, aligned: bool | None) -> tuple[str, ...]:
    """What a pass does not cover, as short stable phrases (for JSON and A-R readers)."""
    out = []
    if c.key_bits is not None and sig.algorithm.name.startswith("rsa") and c.key_bits < WEAK_RSA_BITS:
        out.append(f"weak-key: {c.key_bits}-bit RSA")
    if c.key_testing:
        out.append("testing: the key record has t=y")
    if sig.body_length is not None:
        out.append(f"partial-body: {c.unsigned_body_bytes or 0} body bytes after l= are unsigned")
    if not c.from_oversigned:
        out.append("from-not-oversigned: a From field added above would not break the signature")
    if aligned is False:
        out.append("not-aligned: d= is not the From domain")
    if c.dnssec is False:
        out.append("no-dnssec: the key was not DNSSEC-validated")
    return tuple(out)


def _pass_detail(sig: DKIMSignature, f: _Candidate) -> str:
    verified = f"verified: {sig.domain} took responsibility for this message"
    if not f.key_testing and not f.unsigned_body_bytes:
        return verified
    parts = [verified]
    if f.key_testing:
        parts.append("but its key is marked as testing (t=y)")
    if sig.body_length is not None and f.unsigned_body_bytes:
        unsigned = f.unsigned_body_bytes
        parts.append(f"only the first {sig.body_length} body bytes are signed ({unsigned} are not)")
    return "; ".join(parts)


def _loose_facts(header: HeaderField) -> _Loose:
    """d=, s=, a=, i= read leniently from an unparseable signature, for the report."""
    found: dict[str, str] = {}
    for match in _LOOSE_TAG.finditer(header.value):
        value = match.group(2).strip().decode("utf-8", "replace")
        if not _LOOSE_VALUE.match(value):
            continue  # never echo control characters or odd bytes from a broken field
        found.setdefault(match.group(1).decode(), value)
    return _Loose(
        domain=found.get("d"), selector=found.get("s"), algorithm=found.get("a"), auid=found.get("i")
    )
