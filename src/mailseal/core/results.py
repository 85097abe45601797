"""Verification results as values: RFC 8601 words, stable reason codes, coverage.

Every reason maps to exactly one result through ``REASON_RESULT``; the verifier
builds every result in one place (``Verification._decide``) by looking the
result up there, and a test checks the table is total over ``Reason``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from mailseal.core.diagnosis import Diagnosis

from mailseal.core.address import Author


class DKIMResult(StrEnum):
    """RFC 8601 section 2.7.1 result words for the ``dkim`` method."""

    NONE = "none"
    PASS = "pass"  # noqa: S105 - the RFC 8601 word, not a password
    FAIL = "fail"
    POLICY = "policy"
    NEUTRAL = "neutral"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class Reason(StrEnum):
    """Stable machine codes for why a signature did not pass (logs, JSON, tests)."""

    # The DKIM-Signature field itself (RFC 6376 section 3.5, 6.1.1).
    SIG_SYNTAX = "sig-syntax"
    SIG_DUPLICATE_TAG = "sig-duplicate-tag"
    SIG_MISSING_TAG = "sig-missing-tag"
    SIG_BAD_BASE64 = "sig-bad-base64"
    SIG_VERSION = "sig-version"
    SIG_ALGORITHM_UNKNOWN = "sig-algorithm-unknown"
    SIG_CANONICALIZATION_UNKNOWN = "sig-canonicalization-unknown"
    SIG_QUERY_METHOD_UNKNOWN = "sig-query-method-unknown"
    SIG_BAD_DOMAIN = "sig-bad-domain"
    SIG_BAD_SELECTOR = "sig-bad-selector"
    SIG_FROM_NOT_SIGNED = "sig-from-not-signed"
    SIG_AUID_NOT_IN_DOMAIN = "sig-auid-not-in-domain"
    SIG_BAD_BODY_LENGTH = "sig-bad-body-length"
    SIG_BAD_TIMESTAMP = "sig-bad-timestamp"
    SIG_EXPIRED = "sig-expired"
    SIG_TIMESTAMP_IN_FUTURE = "sig-timestamp-in-future"
    SIG_EXPIRY_BEFORE_TIMESTAMP = "sig-expiry-before-timestamp"
    BODY_LENGTH_EXCEEDS_BODY = "body-length-exceeds-body"
    # The key record (RFC 6376 section 3.6.1, 6.1.2).
    KEY_NOT_FOUND = "key-not-found"
    KEY_SYNTAX = "key-syntax"
    KEY_VERSION = "key-version"
    KEY_REVOKED = "key-revoked"
    KEY_TYPE_UNKNOWN = "key-type-unknown"
    KEY_TYPE_MISMATCH = "key-type-mismatch"
    KEY_HASH_NOT_ALLOWED = "key-hash-not-allowed"
    KEY_SERVICE_NOT_EMAIL = "key-service-not-email"
    KEY_BAD_BASE64 = "key-bad-base64"
    KEY_INVALID = "key-invalid"
    KEY_TOO_SMALL = "key-too-small"
    KEY_TOO_LARGE = "key-too-large"  # modulus or exponent over the caps (costly or refused by OpenSSL)
    KEY_STRICT_SUBDOMAIN = "key-strict-subdomain"
    # DNS (RFC 6376 section 6.1.2).
    DNS_TIMEOUT = "dns-timeout"
    DNS_SERVFAIL = "dns-servfail"
    DNS_ERROR = "dns-error"
    # The cryptographic checks (RFC 6376 section 6.1.3).
    BODY_HASH_MISMATCH = "body-hash-mismatch"
    SIGNATURE_MISMATCH = "signature-mismatch"
    # Local policy.
    ALGORITHM_NOT_ACCEPTED = "algorithm-not-accepted"
    NOT_EVALUATED = "not-evaluated"


REASON_RESULT: Final[Mapping[Reason, DKIMResult]] = {
    Reason.SIG_SYNTAX: DKIMResult.PERMERROR,
    Reason.SIG_DUPLICATE_TAG: DKIMResult.PERMERROR,
    Reason.SIG_MISSING_TAG: DKIMResult.PERMERROR,
    Reason.SIG_BAD_BASE64: DKIMResult.PERMERROR,
    Reason.SIG_VERSION: DKIMResult.PERMERROR,
    Reason.SIG_ALGORITHM_UNKNOWN: DKIMResult.PERMERROR,
    Reason.SIG_CANONICALIZATION_UNKNOWN: DKIMResult.PERMERROR,
    Reason.SIG_QUERY_METHOD_UNKNOWN: DKIMResult.PERMERROR,
    Reason.SIG_BAD_DOMAIN: DKIMResult.PERMERROR,
    Reason.SIG_BAD_SELECTOR: DKIMResult.PERMERROR,
    Reason.SIG_FROM_NOT_SIGNED: DKIMResult.PERMERROR,
    Reason.SIG_AUID_NOT_IN_DOMAIN: DKIMResult.PERMERROR,
    Reason.SIG_BAD_BODY_LENGTH: DKIMResult.PERMERROR,
    Reason.SIG_BAD_TIMESTAMP: DKIMResult.PERMERROR,
    Reason.SIG_EXPIRED: DKIMResult.PERMERROR,
    Reason.SIG_TIMESTAMP_IN_FUTURE: DKIMResult.PERMERROR,
    Reason.SIG_EXPIRY_BEFORE_TIMESTAMP: DKIMResult.PERMERROR,
    Reason.BODY_LENGTH_EXCEEDS_BODY: DKIMResult.PERMERROR,
    Reason.KEY_NOT_FOUND: DKIMResult.PERMERROR,
    Reason.KEY_SYNTAX: DKIMResult.PERMERROR,
    Reason.KEY_VERSION: DKIMResult.PERMERROR,
    Reason.KEY_REVOKED: DKIMResult.PERMERROR,
    Reason.KEY_TYPE_UNKNOWN: DKIMResult.PERMERROR,
    Reason.KEY_TYPE_MISMATCH: DKIMResult.PERMERROR,
    Reason.KEY_HASH_NOT_ALLOWED: DKIMResult.PERMERROR,
    Reason.KEY_SERVICE_NOT_EMAIL: DKIMResult.PERMERROR,
    Reason.KEY_BAD_BASE64: DKIMResult.PERMERROR,
    Reason.KEY_INVALID: DKIMResult.PERMERROR,
    Reason.KEY_TOO_SMALL: DKIMResult.PERMERROR,
    Reason.KEY_TOO_LARGE: DKIMResult.PERMERROR,
    Reason.KEY_STRICT_SUBDOMAIN: DKIMResult.PERMERROR,
    Reason.DNS_TIMEOUT: DKIMResult.TEMPERROR,
    Reason.DNS_SERVFAIL: DKIMResult.TEMPERROR,
    Reason.DNS_ERROR: DKIMResult.TEMPERROR,
    Reason.BODY_HASH_MISMATCH: DKIMResult.FAIL,
    Reason.SIGNATURE_MISMATCH: DKIMResult.FAIL,
    Reason.ALGORITHM_NOT_ACCEPTED: DKIMResult.POLICY,
    Reason.NOT_EVALUATED: DKIMResult.NEUTRAL,
}


class Alignment(StrEnum):
    """How the signing domain (d=) relates to the visible From domain (DMARC sense)."""

    EXACT = "exact"
    ORGANIZATIONAL = "organizational"
    NONE = "none"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SignatureResult:
    """The verdict on one DKIM-Signature field and what it covers.

    ``reason`` is None only for a pass. ``detail`` is one plain sentence.
    Coverage fields are filled as far as the signature could be parsed.
    """

    result: DKIMResult
    reason: Reason | None
    detail: str
    domain: str | None = None
    selector: str | None = None
    algorithm: str | None = None
    auid: str | None = None
    canonicalization: str | None = None
    signed_headers: tuple[str, ...] = ()
    unsigned_headers: tuple[str, ...] = ()
    body_length_limited: bool = False
    unsigned_body_bytes: int | None = None
    from_oversigned: bool = False
    key_bits: int | None = None
    key_testing: bool = False
    aligned: bool | None = None
    alignment: Alignment = Alignment.UNKNOWN
    dnssec: bool | None = None
    timestamp: int | None = None
    expiration: int | None = None
    signature_b: str | None = None
    warnings: tuple[str, ...] = field(default=())
    diagnosis: Diagnosis | None = None
    """Why it failed, in plain words (core/diagnosis.py); None for a pass."""

    @property
    def passed(self) -> bool:
        """True when this signature verified and is accepted by policy."""
        return self.result is DKIMResult.PASS


@dataclass(frozen=True, slots=True)
class VerificationReport:
    """Every signature's verdict for one message, plus the message-level result."""

    signatures: tuple[SignatureResult, ...]
    from_domain: str | None
    author: Author | None = None
    """What the From fields say about the author (None when the report was built by hand)."""
    left_out: int = 0
    """DKIM-Signature fields not in ``signatures`` (over the report bound): counted, never silent."""

    @property
    def result(self) -> DKIMResult:
        """Pass if any signature passes; otherwise the most telling other result."""
        if not self.signatures:
            return DKIMResult.NONE
        results = {s.result for s in self.signatures}
        for word in _PRECEDENCE:
            if word in results:
                return word
        return DKIMResult.NONE  # pragma: no cover - _PRECEDENCE is total

    @property
    def passed(self) -> bool:
        """True when at least one signature passed."""
        return any(s.passed for s in self.signatures)

    @property
    def only_temporary_errors(self) -> bool:
        """True when nothing passed and every problem was a temporary one."""
        return (
            bool(self.signatures)
            and all(
                s.result in (DKIMResult.TEMPERROR, DKIMResult.NEUTRAL)
                and (s.result is DKIMResult.TEMPERROR or s.reason is Reason.NOT_EVALUATED)
                for s in self.signatures
            )
            and any(s.result is DKIMResult.TEMPERROR for s in self.signatures)
        )


_PRECEDENCE: Final = (
    DKIMResult.PASS,
    DKIMResult.FAIL,
    DKIMResult.POLICY,
    DKIMResult.TEMPERROR,
    DKIMResult.PERMERROR,
    DKIMResult.NEUTRAL,
    DKIMResult.NONE,
)
