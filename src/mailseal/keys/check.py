"""``keys check``: what the authoritative servers and a resolver serve at a key's name, judged.

:func:`analyse` is pure: the answers of each authoritative server (records
as their character-strings, TTL, DNSSEC signatures), the resolver's answer,
and what the store expects go in; :class:`Finding` values (level, stable
code, message, plain fix) come out. :func:`gather` does the lookups through
:mod:`mailseal.dns`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from mailseal.core.algorithms import KeyType, PublicKey, key_bits, key_type_of
from mailseal.core.keypolicy import (
    DEFAULT_MAX_RSA_BITS,
    MIN_RSA_BITS,
    WEAK_RSA_BITS,
    allows_email,
    allows_hash,
    key_size_problem,
)
from mailseal.core.keyrecord import TXT_STRING_MAX, KeyRecord
from mailseal.core.problems import SyntaxProblem
from mailseal.core.results import Reason
from mailseal.core.txtanswer import TxtAnswer, TxtStatus
from mailseal.dns.authoritative import DnssecStatus, ServerAnswer, authoritative_servers, query_txt
from mailseal.dns.resolver import DnsResolver
from mailseal.keys.store import KeyEntry, KeyState

__all__ = ["Code", "Finding", "Level", "Lookups", "analyse", "exit_status", "gather"]

LONG_TTL: Final = 86400
SHORT_TTL: Final = 60


class Level(StrEnum):
    """How bad a finding is; the worst one decides the exit status."""

    PASS = "pass"  # noqa: S105 - a verdict word, not a password
    INFO = "info"
    WARN = "warn"
    FAIL = "fail"


_RANK: Final = {Level.PASS: 0, Level.INFO: 0, Level.WARN: 1, Level.FAIL: 2}


class Code(StrEnum):
    """Stable finding codes (scripts and tests match on these, never on the message)."""

    RECORD_FOUND = "record-found"
    NO_RECORD = "no-record"
    DNS_ERROR = "dns-error"
    NOT_AUTHORITATIVE = "not-authoritative"
    SERVERS_DISAGREE = "servers-disagree"
    SYNTAX = "syntax"
    KEY_MATCHES = "key-matches"
    KEY_MISMATCH = "key-mismatch"
    NOT_IN_STORE = "not-in-store"
    KEY_TOO_SMALL = "key-too-small"
    KEY_TOO_LARGE = "key-too-large"
    KEY_WEAK = "key-weak"
    TESTING_FLAG = "testing-flag"
    NOT_FOR_EMAIL = "not-for-email"
    HASH_EXCLUDED = "hash-excluded"
    SPLIT_INTO_RECORDS = "split-into-records"
    QUOTES_IN_RECORD = "quotes-in-record"
    TRUNCATED = "truncated"
    SEVERAL_RECORDS = "several-records"
    REVOKED = "revoked"
    REVOCATION_PENDING = "revocation-pending"
    STILL_PUBLISHED = "still-published"
    TTL = "ttl"
    TTL_LONG = "ttl-long"
    TTL_SHORT = "ttl-short"
    DNSSEC_SIGNED = "dnssec-signed"
    DNSSEC_UNSIGNED = "dnssec-unsigned"
    DNSSEC_EXPIRED = "dnssec-expired"
    DNSSEC_VALIDATED = "dnssec-validated"
    DNSSEC_NOT_VALIDATED = "dnssec-not-validated"
    RESOLVER_AGREES = "resolver-agrees"
    RESOLVER_DIFFERS = "resolver-differs"
    RESOLVER_ERROR = "resolver-error"


@dataclass(frozen=True, slots=True)
class Finding:
    """One observation about a published key, with the fix in plain words."""

    level: Level
    code: Code
    message: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Lookups:
    """Everything :func:`analyse` judges: one key name as each server and the resolver see it."""

    name: str
    authoritative: tuple[ServerAnswer, ...]
    resolver: TxtAnswer | None
    problem: str = ""  # why the authoritative servers could not be found or asked


def exit_status(findings: Sequence[Finding]) -> int:
    """0 when all pass, 3 with warnings, 1 with failures (``keys check``'s documented exit codes)."""
    worst = max((_RANK[f.level] for f in findings), default=0)
    return {0: 0, 1: 3, 2: 1}[worst]


def gather(
    name: str,
    *,
    authoritative: Sequence[str] | None = None,
    resolvers: Sequence[str] | None = None,
    port: int = 53,
    timeout: float = 5.0,
    now: float | None = None,
) -> Lookups:
    """Look ``name`` up at each authoritative server (DO bit) and through the resolver (AD bit)."""
    problem = ""
    if authoritative:
        servers = tuple(authoritative)
    else:
        found = authoritative_servers(name, nameservers=resolvers, port=port, timeout=timeout)
        servers, problem = found.servers, found.problem
    answers = tuple(query_txt(s, name, dnssec=True, timeout=timeout, now=now) for s in servers)
    resolver = DnsResolver(resolvers, timeout=timeout, want_dnssec=True).lookup_txt_sync(name)
    return Lookups(name, answers, resolver, problem)


def analyse(lookups: Lookups, expected: KeyEntry | None) -> list[Finding]:
    """Judge ``lookups`` against the store's ``expected`` key (``None``: not in the store)."""
    findings: list[Finding] = []
    answered = [a for a in lookups.authoritative if a.status in _ANSWERED]
    if lookups.problem:
        findings.append(Finding(Level.FAIL, Code.DNS_ERROR, lookups.problem, _FIX_SERVERS))
    for answer in lookups.authoritative:
        if answer.status not in _ANSWERED:
            findings.append(
                Finding(Level.FAIL, Code.DNS_ERROR, f"authoritative server {answer.detail}", _FIX_SERVERS)
            )
        elif not answer.authoritative:
            findings.append(
                Finding(
                    Level.WARN,
                    Code.NOT_AUTHORITATIVE,
                    f"{answer.server} answered without the AA flag: it is not authoritative for the zone",
                    "remove it from the zone's NS records or make it serve the zone (lame delegation)",
                )
            )
    distinct = {a.joined for a in answered}
    if len(distinct) > 1:
        served = "; ".join(f"{a.server}: {_summary(a.joined)}" for a in answered)
        findings.append(
            Finding(
                Level.WARN,
                Code.SERVERS_DISAGREE,
                f"the authoritative servers serve different records ({served})",
                "wait for the zone transfer to the secondaries (compare SOA serials), or fix the one that lags",
            )
        )
    if answered:
        reference = max(answered, key=lambda a: len(a.records))
        findings += _content(reference, expected, lookups.name)
        findings += _dnssec(answered, lookups.resolver)
    findings += _resolver(lookups.resolver, answered)
    return findings


_ANSWERED: Final = frozenset({TxtStatus.FOUND, TxtStatus.NO_DATA, TxtStatus.NXDOMAIN})
_FIX_SERVERS: Final = (
    "make every authoritative server answer for the zone (check it runs and serves the zone)"
)


def _summary(records: tuple[bytes, ...]) -> str:
    if not records:
        return "no record"
    return ", ".join(repr(_preview(r.decode("ascii", "backslashreplace"))) for r in records)


def _preview(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _our_record(expected: KeyEntry | None) -> KeyRecord | None:
    if expected is None:
        return None
    try:
        return KeyRecord.from_txt(expected.record_text.encode("ascii"))
    except SyntaxProblem:  # pragma: no cover - the store holds what mailseal formatted
        return None


def _is_dkim(record: bytes) -> bool:
    text = record.lstrip()
    return text.startswith(b"v=DKIM1") or (b"p=" in text and (b"k=" in text or text.startswith(b"p=")))


def _content(answer: ServerAnswer, expected: KeyEntry | None, name: str) -> list[Finding]:
    state = expected.state if expected is not None else None
    records = answer.joined
    if not records:
        return _nothing_there(answer, expected, name)
    if state is KeyState.REMOVED and expected is not None and set(records) <= _ours(expected):
        return [
            Finding(
                Level.WARN,
                Code.STILL_PUBLISHED,
                f"{name} still serves mailseal's record although the key was removed",
                "run `mailseal keys tick`; it deletes the record once it can reach the primary",
            )
        ]
    findings = [
        Finding(Level.PASS, Code.RECORD_FOUND, f"{name} has {len(records)} TXT record(s) at {answer.server}")
    ]
    dkim = [r for r in records if _is_dkim(r)]
    if len(records) > 1:
        joined = _joined_pieces(records)
        if joined is not None:
            return [
                *findings,
                Finding(
                    Level.FAIL,
                    Code.SPLIT_INTO_RECORDS,
                    f"the key record was published as {len(records)} separate TXT records; DNS returns them "
                    "in any order and verifiers read each one alone",
                    "publish ONE TXT record whose value is several quoted strings: "
                    + "; ".join(f'"{s}"' for s in _split_hint(joined)),
                ),
            ]
        findings.append(
            Finding(
                Level.FAIL,
                Code.SEVERAL_RECORDS,
                f"{name} has {len(records)} TXT records ({_summary(records)}); RFC 6376 §3.6.2.2 leaves "
                "verifiers free to use any one of them",
                "keep exactly one TXT record at this name: delete the others",
            )
        )
    for record in dkim or records[:1]:
        findings += _one_record(record, answer, expected)
    findings += _ttl(answer)
    return findings


def _ours(expected: KeyEntry) -> set[bytes]:
    return {expected.record_text.encode(), expected.revoked_text.encode()}


def _nothing_there(answer: ServerAnswer, expected: KeyEntry | None, name: str) -> list[Finding]:
    what = "does not exist (NXDOMAIN)" if answer.status is TxtStatus.NXDOMAIN else "has no TXT record"
    if expected is not None and expected.state in (KeyState.GENERATED, KeyState.REMOVED):
        return [Finding(Level.PASS, Code.NO_RECORD, f"{name} {what}, as expected for a {expected.state} key")]
    fix = "publish the key: `mailseal keys publish DOMAIN SELECTOR` (or add the record `mailseal keys record` prints)"
    if expected is None:
        fix = "publish the key record at this name, or check the selector and domain for typos"
    return [
        Finding(
            Level.FAIL, Code.NO_RECORD, f"{name} {what} at {answer.server}: mail signed with it fails", fix
        )
    ]


def _joined_pieces(records: tuple[bytes, ...]) -> bytes | None:
    """If the records only make a key record when concatenated (in some order), that record."""
    if len(records) > 4 or any(_parses(r) for r in records):
        return None
    for order in itertools.permutations(records):
        candidate = b"".join(order)
        if _parses(candidate):
            return candidate
    return None


def _parses(record: bytes) -> bool:
    try:
        parsed = KeyRecord.from_txt(record)
        if parsed.public_key_b64:
            parsed.public_key()
    except SyntaxProblem:
        return False
    return True


def _split_hint(record: bytes) -> list[str]:
    text = record.decode("ascii", "backslashreplace")
    pieces = [text[i : i + TXT_STRING_MAX] for i in range(0, len(text), TXT_STRING_MAX)]
    return [p if len(p) <= 30 else p[:12] + "..." + p[-12:] for p in pieces]


def _one_record(record: bytes, answer: ServerAnswer, expected: KeyEntry | None) -> list[Finding]:
    findings: list[Finding] = []
    if b'"' in record or b"\\" in record:
        findings.append(
            Finding(
                Level.FAIL,
                Code.QUOTES_IN_RECORD,
                "the record contains quote or backslash characters: the strings were pasted with their "
                "quotes into a field that adds its own",
                "paste the value without the surrounding quotes (or as separate strings, if the DNS "
                "provider asks for them), so the record reads v=DKIM1; k=...; p=... with no quotes",
            )
        )
    try:
        parsed = KeyRecord.from_txt(record)
    except SyntaxProblem as problem:
        return [
            *findings,
            Finding(
                Level.FAIL,
                Code.SYNTAX,
                f"the record does not parse ({problem.reason}): {problem.detail}",
                "publish the record exactly as `mailseal keys record DOMAIN SELECTOR` prints it",
            ),
        ]
    if parsed.revoked:
        return findings + _revoked(expected)
    try:
        key = parsed.public_key()
    except SyntaxProblem as problem:
        return findings + _bad_key(record, answer, parsed, problem)
    findings += _strength(key)
    findings += _restrictions(parsed)
    findings += _against_store(parsed, expected)
    return findings


def _revoked(expected: KeyEntry | None) -> list[Finding]:
    if expected is not None and expected.state in (KeyState.REVOKED, KeyState.REMOVED):
        return [Finding(Level.PASS, Code.REVOKED, "the key is published as revoked (empty p=), as planned")]
    return [
        Finding(
            Level.FAIL,
            Code.REVOKED,
            "the record has an empty p=: the key is revoked and every signature made with it fails",
            "sign with another selector, or publish this key again if it was revoked by mistake",
        )
    ]


def _bad_key(record: bytes, answer: ServerAnswer, parsed: KeyRecord, problem: SyntaxProblem) -> list[Finding]:
    cut = next((strings for strings in answer.records if b"".join(strings) == record), ())
    if len(cut) == 1 and len(cut[0]) == TXT_STRING_MAX and _looks_cut(parsed.public_key_b64):
        return [
            Finding(
                Level.FAIL,
                Code.TRUNCATED,
                f"the record is exactly {TXT_STRING_MAX} bytes and its key is cut short: only the first "
                "string of a longer record was published",
                "publish the whole record as one TXT record with several quoted strings "
                "(`mailseal keys record DOMAIN SELECTOR` prints it that way)",
            )
        ]
    return [
        Finding(
            Level.FAIL,
            Code.SYNTAX,
            f"p= is not a usable {parsed.key_type} key ({problem.reason}): {problem.detail}",
            "publish the record exactly as `mailseal keys record DOMAIN SELECTOR` prints it",
        )
    ]


def _looks_cut(value: str) -> bool:
    """Base64 characters only: a key cut short, not a garbled one."""
    return bool(_BASE64.fullmatch(value))


_BASE64: Final = re.compile(r"[A-Za-z0-9+/]+=*")


def _strength(key: PublicKey) -> list[Finding]:
    """The verifier's own size rules (``core/keypolicy.py``), as findings with a fix."""
    problem = key_size_problem(key, min_rsa_bits=MIN_RSA_BITS, max_rsa_bits=DEFAULT_MAX_RSA_BITS)
    bits = key_bits(key)
    if problem is not None and problem.reason is Reason.KEY_TOO_SMALL:
        return [
            Finding(
                Level.FAIL,
                Code.KEY_TOO_SMALL,
                f"the RSA key has {bits} bits; RFC 8301 forbids verifiers to accept keys under {MIN_RSA_BITS}",
                "rotate to a 2048-bit key: `mailseal keys rotate DOMAIN`",
            )
        ]
    if problem is not None:
        return [
            Finding(
                Level.FAIL,
                Code.KEY_TOO_LARGE if problem.reason is Reason.KEY_TOO_LARGE else Code.SYNTAX,
                f"{problem.detail}: verifiers that cap verification cost (mailseal among them) refuse it",
                "rotate to a 2048-bit key with e=65537: `mailseal keys rotate DOMAIN`",
            )
        ]
    if key_type_of(key) is KeyType.RSA and bits < WEAK_RSA_BITS:
        return [
            Finding(
                Level.WARN,
                Code.KEY_WEAK,
                f"the RSA key has {bits} bits; {WEAK_RSA_BITS} is the recommended size (RFC 8301 §3.2)",
                "rotate to a 2048-bit key: `mailseal keys rotate DOMAIN`",
            )
        ]
    return []


def _restrictions(parsed: KeyRecord) -> list[Finding]:
    findings = []
    if parsed.testing:
        findings.append(
            Finding(
                Level.WARN,
                Code.TESTING_FLAG,
                "t=y is set: verifiers may treat the domain as testing DKIM and ignore failures",
                "remove t=y from the record once signing works",
            )
        )
    if not allows_email(parsed):
        findings.append(
            Finding(
                Level.FAIL,
                Code.NOT_FOR_EMAIL,
                f"s={':'.join(parsed.service_types)} does not include email: verifiers must not use this key",
                "remove the s= tag (or set s=email)",
            )
        )
    if not allows_hash(parsed, "sha256"):
        findings.append(
            Finding(
                Level.FAIL,
                Code.HASH_EXCLUDED,
                f"h={':'.join(parsed.hash_algorithms or ())} excludes sha256, the only hash signers may use",
                "remove the h= tag (or set h=sha256)",
            )
        )
    return findings


def _against_store(parsed: KeyRecord, expected: KeyEntry | None) -> list[Finding]:
    ours = _our_record(expected)
    if expected is None or ours is None:
        return [
            Finding(
                Level.INFO,
                Code.NOT_IN_STORE,
                "this key is not in mailseal's key store, so it cannot be compared with a private key",
            )
        ]
    findings = []
    if (parsed.key_type, parsed.public_key_b64) != (ours.key_type, ours.public_key_b64):
        findings.append(
            Finding(
                Level.FAIL,
                Code.KEY_MISMATCH,
                f"the published key is not the public half of the private key in the store "
                f"({expected.selector}, {expected.key_type}): every signature made with it fails",
                f"replace the record with the one `mailseal keys record {expected.domain} {expected.selector}` prints",
            )
        )
    else:
        findings.append(
            Finding(Level.PASS, Code.KEY_MATCHES, "the published key matches the private key in the store")
        )
    if expected.state is KeyState.REVOKED:
        findings.append(
            Finding(
                Level.WARN,
                Code.REVOCATION_PENDING,
                "the store says this key is revoked but DNS still serves the key",
                "run `mailseal keys tick`; it publishes the revocation",
            )
        )
    return findings


def _ttl(answer: ServerAnswer) -> list[Finding]:
    if answer.ttl > LONG_TTL:
        return [
            Finding(
                Level.WARN,
                Code.TTL_LONG,
                f"TTL {answer.ttl} s: resolvers keep this answer up to {answer.ttl // 3600} hours, so a "
                "rotation or revocation takes that long to be seen",
                "lower the TTL to 3600 (an hour) or less",
            )
        ]
    if answer.ttl < SHORT_TTL:
        return [
            Finding(
                Level.INFO,
                Code.TTL_SHORT,
                f"TTL {answer.ttl} s: every verifier asks the servers again almost every message",
                "a TTL of 300 to 3600 s is usual",
            )
        ]
    return [Finding(Level.PASS, Code.TTL, f"TTL {answer.ttl} s")]


def _dnssec(answered: Sequence[ServerAnswer], resolver: TxtAnswer | None) -> list[Finding]:
    statuses = {a.dnssec for a in answered if a.records}
    if not statuses or statuses == {DnssecStatus.NOT_CHECKED}:
        return []
    if DnssecStatus.EXPIRED in statuses:
        detail = next(a.detail for a in answered if a.dnssec is DnssecStatus.EXPIRED)
        return [
            Finding(
                Level.FAIL,
                Code.DNSSEC_EXPIRED,
                f"the answer is signed but no signature is valid now ({detail}); validating resolvers answer "
                "SERVFAIL, and verifiers then fail the message temporarily",
                "re-sign the zone (check the signer runs and the clocks are right)",
            )
        ]
    if DnssecStatus.UNSIGNED in statuses:
        return [
            Finding(
                Level.INFO,
                Code.DNSSEC_UNSIGNED,
                "the answer is not DNSSEC-signed: a verifier cannot tell a forged key from the real one",
                "sign the zone with DNSSEC and publish its DS record at the parent",
            )
        ]
    findings = [
        Finding(Level.PASS, Code.DNSSEC_SIGNED, "the answer is DNSSEC-signed and the signature is current")
    ]
    if resolver is not None and resolver.status is TxtStatus.FOUND:
        if resolver.authenticated:
            findings.append(
                Finding(Level.PASS, Code.DNSSEC_VALIDATED, "the resolver validated the answer (AD bit set)")
            )
        else:
            findings.append(
                Finding(
                    Level.INFO,
                    Code.DNSSEC_NOT_VALIDATED,
                    "the resolver did not mark the answer validated (AD clear): it does not validate, or the "
                    "chain of trust is broken (no DS record at the parent zone)",
                    "publish the zone's DS record at the parent; check with a validating resolver",
                )
            )
    return findings


def _resolver(resolver: TxtAnswer | None, answered: Sequence[ServerAnswer]) -> list[Finding]:
    if resolver is None:
        return []
    if resolver.status not in _ANSWERED:
        return [
            Finding(
                Level.FAIL if resolver.status is TxtStatus.SERVFAIL else Level.WARN,
                Code.RESOLVER_ERROR,
                f"the resolver could not answer: {resolver.detail or resolver.status}"
                + (
                    " (with a signed zone, SERVFAIL often means DNSSEC validation failed)"
                    if resolver.status is TxtStatus.SERVFAIL
                    else ""
                ),
                "query the resolver directly (dig +dnssec) to see why",
            )
        ]
    if not answered:
        return []
    authoritative = {frozenset(a.joined) for a in answered}
    if frozenset(resolver.records) in authoritative:
        return [Finding(Level.PASS, Code.RESOLVER_AGREES, "the resolver serves the same record(s)")]
    return [
        Finding(
            Level.WARN,
            Code.RESOLVER_DIFFERS,
            f"the resolver serves {_summary(resolver.records)}, not what the authoritative servers serve: "
            f"it has an older answer cached for up to {resolver.ttl} more seconds",
            "wait for the cached answer to expire; lower the TTL before the next change",
        )
    ]
