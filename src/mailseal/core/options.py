"""Signing and verification options, with defaults that protect users."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mailseal.core.canonicalization import Canon
from mailseal.core.keypolicy import DEFAULT_MAX_RSA_BITS, MIN_RSA_BITS

# RFC 6376 5.4.1 recommends these; we sign each one that is present.
RECOMMENDED_HEADERS: Final = (
    "from", "reply-to", "subject", "date", "to", "cc",
    "resent-date", "resent-from", "resent-sender", "resent-to", "resent-cc", "resent-message-id",
    "in-reply-to", "references", "message-id", "sender",
    "mime-version", "content-type", "content-transfer-encoding", "content-id", "content-description",
    "list-id", "list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner",
    "list-archive", "list-unsubscribe-post",
)  # fmt: skip

DEFAULT_MAX_SIGNATURES: Final = 8
DEFAULT_CLOCK_SKEW: Final = 300
DEFAULT_MAX_VERIFY_WORK: Final = 64
"""Crypto work per message, in RSA-2048 verifications: 8 signatures with 4096-bit keys, or one at the caps."""
DEFAULT_DIAGNOSIS_BODY_LIMIT: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class SignOptions:
    """How to sign. ``headers=None`` means the recommended set, as present.

    ``oversign`` names are listed once more than they occur, so a field of that
    name added later (a second From above ours) breaks the signature (RFC 6376
    8.15). ``body_length`` adds l= (it lets anyone append to the body: off by
    default). ``expire_after`` adds x= that many seconds after t=.
    """

    header_canon: Canon = Canon.RELAXED
    body_canon: Canon = Canon.RELAXED
    headers: tuple[str, ...] | None = None
    oversign: tuple[str, ...] = ("from",)
    body_length: bool = False
    auid: str | None = None
    expire_after: int | None = None


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    """How to judge signatures.

    ``max_signatures`` caps the signatures that get a key lookup and
    ``max_verify_work`` the crypto work (in RSA-2048 verifications, see
    :func:`mailseal.core.keypolicy.verify_cost`) one message can cause; the
    rest are reported as not evaluated. ``preferred_domains`` are evaluated
    first (e.g. the domains of require rules), then signatures aligned with
    From, bottom first. ``allow_rsa_sha1`` is a legacy switch: RFC 8301 says
    rsa-sha1 signatures must not be counted as valid. RSA keys outside
    ``min_rsa_bits``..``max_rsa_bits`` are refused (``core/keypolicy.py`` says
    why 8192). ``clock_skew`` (seconds) is allowed on x= and t=. ``diagnosis_body_limit``
    is how much of a streamed body the verifier keeps to explain a body-hash
    failure (0: keep none; drivers holding the whole body pass it to ``finish``).
    """

    max_signatures: int = DEFAULT_MAX_SIGNATURES
    allow_rsa_sha1: bool = False
    min_rsa_bits: int = MIN_RSA_BITS
    clock_skew: int = DEFAULT_CLOCK_SKEW
    max_rsa_bits: int = DEFAULT_MAX_RSA_BITS
    max_verify_work: int = DEFAULT_MAX_VERIFY_WORK
    preferred_domains: tuple[str, ...] = ()
    diagnosis_body_limit: int = DEFAULT_DIAGNOSIS_BODY_LIMIT
