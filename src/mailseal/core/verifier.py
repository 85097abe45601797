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
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mailseal.core.algorithms import KeyType, PublicKey, key_bits, key_type_of, verify_digest
from mailseal.core.alignment import alignment, from_domain
from mailseal.core.bodyhash import BodyHasher, BodyHashSpec
from mailseal.core.canonicalization import Canon, canonicalize_header, relaxed_header
from mailseal.core.identity import domain_of_auid
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
class _Candidate:
    """One DKIM-Signature field and what we have learnt about it so far."""

    position: int
    header: HeaderField
    info: dict[str, Any]
    signature: DKIMSignature | None = None
    verdict: SignatureResult | None = None
    key: PublicKey | None = None
    key_testing: bool = False
    chosen: list[int] = field(default_factory=list)


class Verification:
    """Verify one message's signatures; see the module docstring for the stages."""

    def __init__(
        self, headers: Sequence[HeaderField], options: VerifyOptions | None = None, *, now: int
    ) -> None:
        self._headers = tuple(headers)
        self._options = options or VerifyOptions()
        self._now = now
        self._index = index_by_name(self._headers)
        self._author_domain = from_domain(self._headers)
        self._candidates: list[_Candidate] = []
        specs: list[BodyHashSpec] = []
        cap = self._options.max_signatures
        evaluated = 0
        for position, header in enumerate(self._headers):
            if header.key != SIGNATURE_FIELD:
                continue
            if len(self._candidates) >= cap * REPORTED_PER_EVALUATED:
                break  # junk fields cannot make the report (and the A-R field) grow without bound
            candidate = _Candidate(position, header, {})
            self._candidates.append(candidate)
            self._parse(candidate)
            if candidate.signature is None or candidate.verdict is not None:
                continue  # decided while parsing: costs no DNS or crypto, so it does not use up the cap
            if evaluated >= cap:
                self._decide(
                    candidate, Reason.NOT_EVALUATED, f"not evaluated: only {cap} signatures are checked"
                )
                continue
            evaluated += 1
            sig = candidate.signature
            specs.append((sig.body_canon, sig.algorithm.hash_name, sig.body_length))
        self._body = BodyHasher(specs)

    # -- stage 1: the signature fields -------------------------------------------

    def _parse(self, candidate: _Candidate) -> None:
        try:
            sig = DKIMSignature.from_header(candidate.header.value)
        except SyntaxProblem as problem:
            candidate.info = _loose_info(candidate.header)
            self._decide(candidate, problem.reason, problem.detail)
            return
        candidate.signature = sig
        chosen, _ = select(sig.signed_headers, self._index, exclude=candidate.position)
        candidate.chosen = chosen
        covered = set(chosen)
        froms_present = len(self._index.get("from", ()))
        froms_signed = sum(1 for h in sig.signed_headers if h.lower() == "from")
        align = alignment(sig.domain, self._author_domain)
        candidate.info = {
            "domain": sig.domain,
            "selector": sig.selector,
            "algorithm": sig.algorithm.name,
            "auid": sig.auid,
            "canonicalization": sig.canonicalization,
            "signed_headers": tuple(self._headers[p].key for p in chosen),
            "unsigned_headers": _unique(
                h.key
                for p, h in enumerate(self._headers)
                if p not in covered and p != candidate.position and h.key
            ),
            "body_length_limited": sig.body_length is not None,
            "from_oversigned": froms_signed > froms_present,
            "alignment": align,
            "aligned": None if align is Alignment.UNKNOWN else align is not Alignment.NONE,
            "timestamp": sig.timestamp,
            "expiration": sig.expiration,
            "signature_b": sig.signature_b64,
        }
        skew = self._options.clock_skew
        if sig.expiration is not None and self._now > sig.expiration + skew:
            self._decide(candidate, Reason.SIG_EXPIRED, f"the signature expired (x={sig.expiration})")
        elif sig.timestamp is not None and sig.timestamp > self._now + skew:
            self._decide(
                candidate,
                Reason.SIG_TIMESTAMP_IN_FUTURE,
                f"the signature is dated in the future (t={sig.timestamp})",
            )

    # -- stage 2: keys from DNS ----------------------------------------------------

    def key_queries(self) -> tuple[str, ...]:
        """The distinct DNS names whose TXT records are still needed."""
        names: dict[str, None] = {}
        for c in self._candidates:
            if c.signature is not None and c.verdict is None and c.key is None:
                names[c.signature.key_query_name.lower()] = None
        return tuple(names)

    def add_key_answer(self, name: str, answer: TxtAnswer) -> None:
        """Give the DNS answer for ``name``; every signature using that key takes it."""
        name = name.lower().removesuffix(".")
        for c in self._candidates:
            sig = c.signature
            if sig is None or c.verdict is not None or sig.key_query_name.lower() != name:
                continue
            c.info["dnssec"] = answer.authenticated if answer.status is TxtStatus.FOUND else None
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
        problem = _check_record(record, sig)
        if problem is not None:
            self._decide(c, problem.reason, problem.detail)
            return
        try:
            key = record.public_key()
        except SyntaxProblem as bad:
            self._decide(c, bad.reason, f"key record at {sig.key_query_name}: {bad.detail}")
            return
        bits = key_bits(key)
        c.info["key_bits"] = bits
        c.info["key_testing"] = record.testing
        if key_type_of(key) is KeyType.RSA and bits < self._options.min_rsa_bits:
            self._decide(
                c,
                Reason.KEY_TOO_SMALL,
                f"the RSA key has {bits} bits; at least {self._options.min_rsa_bits} are required (RFC 8301)",
            )
            return
        c.key = key

    # -- stage 3: the body -----------------------------------------------------------

    def feed_body(self, chunk: bytes, start: int = 0) -> None:
        """Add the next body bytes, ``chunk[start:]`` (any chunking; memory stays flat)."""
        self._body.feed(chunk, start)

    # -- stage 4: verdicts -------------------------------------------------------------

    def finish(self) -> VerificationReport:
        """Check body hashes and signatures; one result per DKIM-Signature, top first."""
        self._body.finish()
        results = []
        for c in self._candidates:
            if c.verdict is None:
                self._check(c)
            assert c.verdict is not None  # noqa: S101 - _check always decides
            results.append(c.verdict)
        return VerificationReport(tuple(results), self._author_domain)

    def _check(self, c: _Candidate) -> None:
        sig = c.signature
        assert sig is not None  # noqa: S101 - unparsed signatures were decided earlier
        if c.key is None:
            self._decide(c, Reason.DNS_ERROR, f"no DNS answer was given for {sig.key_query_name}")
            return
        body_length = self._body.canonical_length(sig.body_canon)
        if sig.body_length is not None:
            if sig.body_length > body_length:
                self._decide(
                    c,
                    Reason.BODY_LENGTH_EXCEEDS_BODY,
                    f"l={sig.body_length} is longer than the {body_length}-byte canonical body",
                )
                return
            c.info["unsigned_body_bytes"] = body_length - sig.body_length
        spec = (sig.body_canon, sig.algorithm.hash_name, sig.body_length)
        if self._body.digest(spec) != sig.body_hash:
            self._decide(
                c, Reason.BODY_HASH_MISMATCH, "the body was changed after signing (body hash mismatch)"
            )
            return
        digest = sig.algorithm.new_hash()
        canon = sig.header_canon
        headers = self._headers
        if canon is Canon.RELAXED:  # one update of the joined fields: fewer calls per signature
            digest.update(b"".join([relaxed_header(headers[position].raw) for position in c.chosen]))
        else:
            for position in c.chosen:
                digest.update(canonicalize_header(headers[position], canon))
        raw = c.header.raw
        colon = raw.find(b":")
        stripped = raw[: colon + 1] + without_b_value(raw[colon + 1 :].removesuffix(b"\r\n"))
        digest.update(relaxed_header(stripped)[:-2] if canon is Canon.RELAXED else stripped)
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

    def _decide(self, c: _Candidate, reason: Reason | None, detail: str) -> None:
        result = DKIMResult.PASS if reason is None else REASON_RESULT[reason]
        warnings = _warnings(c.info) if result is DKIMResult.PASS else ()
        c.verdict = SignatureResult(result, reason, detail, warnings=warnings, **c.info)


WEAK_RSA_BITS = 2048


def _warnings(info: dict[str, Any]) -> tuple[str, ...]:
    """What a pass does not cover, as short stable phrases (for JSON and A-R readers)."""
    out = []
    bits = info.get("key_bits")
    if bits is not None and str(info.get("algorithm", "")).startswith("rsa") and bits < WEAK_RSA_BITS:
        out.append(f"weak-key: {bits}-bit RSA")
    if info.get("key_testing"):
        out.append("testing: the key record has t=y")
    if info.get("body_length_limited"):
        out.append(f"partial-body: {info.get('unsigned_body_bytes', 0)} body bytes after l= are unsigned")
    if not info.get("from_oversigned"):
        out.append("from-not-oversigned: a From field added above would not break the signature")
    if info.get("aligned") is False:
        out.append("not-aligned: d= is not the From domain")
    if info.get("dnssec") is False:
        out.append("no-dnssec: the key was not DNSSEC-validated")
    return tuple(out)


def _check_record(record: KeyRecord, sig: DKIMSignature) -> SyntaxProblem | None:
    """RFC 6376 6.1.2 step 6 onwards: does this key allow this signature?"""
    where = sig.key_query_name
    if record.revoked:
        return SyntaxProblem(Reason.KEY_REVOKED, f"the key at {where} has been revoked (empty p=)")
    if record.key_type is not sig.algorithm.key_type:
        return SyntaxProblem(
            Reason.KEY_TYPE_MISMATCH,
            f"the key at {where} is {record.key_type} but the signature uses {sig.algorithm.name}",
        )
    if record.hash_algorithms is not None and sig.algorithm.hash_name not in record.hash_algorithms:
        return SyntaxProblem(
            Reason.KEY_HASH_NOT_ALLOWED,
            f"the key at {where} allows only h={':'.join(record.hash_algorithms)}",
        )
    if "*" not in record.service_types and "email" not in record.service_types:
        return SyntaxProblem(Reason.KEY_SERVICE_NOT_EMAIL, f"the key at {where} is not for email (s=)")
    if record.strict_subdomains and domain_of_auid(sig.auid).lower() != sig.domain:
        return SyntaxProblem(
            Reason.KEY_STRICT_SUBDOMAIN,
            f"the key at {where} has t=s, but i={sig.auid} is in a subdomain of d={sig.domain}",
        )
    return None


def _pass_detail(sig: DKIMSignature, c: _Candidate) -> str:
    parts = [f"verified: {sig.domain} took responsibility for this message"]
    if c.info.get("key_testing"):
        parts.append("but its key is marked as testing (t=y)")
    if sig.body_length is not None:
        unsigned = c.info.get("unsigned_body_bytes", 0)
        if unsigned:
            parts.append(f"only the first {sig.body_length} body bytes are signed ({unsigned} are not)")
    return "; ".join(parts)


def _unique(names: Any) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _loose_info(header: HeaderField) -> dict[str, Any]:
    """d=, s=, a=, i= read leniently from an unparseable signature, for the report."""
    info: dict[str, Any] = {}
    for match in _LOOSE_TAG.finditer(header.value):
        value = match.group(2).strip().decode("utf-8", "replace")
        if not _LOOSE_VALUE.match(value):
            continue  # never echo control characters or odd bytes from a broken field
        key = {"d": "domain", "s": "selector", "a": "algorithm", "i": "auid"}[match.group(1).decode()]
        info.setdefault(key, value)
    return info
