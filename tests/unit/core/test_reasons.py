"""Every Reason is produced by some input, and maps to the RFC 8601 result we chose."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

import mailseal
from mailseal import DKIMResult, PrivateKey, Reason, TxtAnswer, TxtStatus, VerifyOptions
from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import generate_private_key
from mailseal.core.results import REASON_RESULT
from mailseal.dns.memory import InMemoryResolver
from support.clock import FIXED_NOW
from support.hostile_keys import modulus_of, odd_number, rsa_p
from support.messages import SAMPLE

NAME = "sel._domainkey.example.com"


def _record(key: PrivateKey, extra: str = "") -> str:
    return f"v=DKIM1; k={key.key_type}; {extra}p={key.public_key_b64()}"


def _signed(key: PrivateKey, **options: object) -> bytes:
    field = mailseal.sign(SAMPLE, key=key, domain="example.com", selector="sel", now=FIXED_NOW, **options)  # type: ignore[arg-type]
    return field + SAMPLE


def _edit_sig(message: bytes, pattern: str, replacement: str) -> bytes:
    head, sep, rest = message.partition(b"\r\nFrom:")
    edited = re.sub(pattern.encode(), replacement.encode(), head, count=1)
    assert edited != head, pattern
    return edited + sep + rest


Case = Callable[[PrivateKey, PrivateKey], tuple[bytes, dict[str, object], VerifyOptions | None, int]]


def _sig_case(pattern: str, replacement: str, **sign: object) -> Case:
    def build(rsa: PrivateKey, _ed: PrivateKey) -> tuple[bytes, dict[str, object], VerifyOptions | None, int]:
        return _edit_sig(_signed(rsa, **sign), pattern, replacement), {NAME: _record(rsa)}, None, FIXED_NOW

    return build


def _key_case(record: Callable[[PrivateKey, PrivateKey], object], *, signer: str = "rsa") -> Case:
    def build(rsa: PrivateKey, ed: PrivateKey) -> tuple[bytes, dict[str, object], VerifyOptions | None, int]:
        key = rsa if signer == "rsa" else ed
        return _signed(key), {NAME: record(rsa, ed)}, None, FIXED_NOW

    return build


def _small_key_case(
    rsa: PrivateKey, _ed: PrivateKey
) -> tuple[bytes, dict[str, object], VerifyOptions | None, int]:
    return _signed(rsa), {NAME: _record(rsa)}, VerifyOptions(min_rsa_bits=4096), FIXED_NOW


def _clock_case(now: int, **sign: object) -> Case:
    def build(rsa: PrivateKey, _ed: PrivateKey) -> tuple[bytes, dict[str, object], VerifyOptions | None, int]:
        return _signed(rsa, **sign), {NAME: _record(rsa)}, None, now

    return build


def _sha1_case(
    rsa: PrivateKey, _ed: PrivateKey
) -> tuple[bytes, dict[str, object], VerifyOptions | None, int]:
    """Our signer refuses rsa-sha1, so assemble one from core pieces."""
    import base64

    from mailseal.core.algorithms import RSA_SHA1, sign_digest
    from mailseal.core.canonicalization import Canon, canonicalize_body, canonicalize_header, relaxed_header
    from mailseal.core.message import Message
    from mailseal.core.signer import format_unsigned_field

    parsed = Message.from_bytes(SAMPLE)
    body_hash = RSA_SHA1.new_hash()
    body_hash.update(canonicalize_body(parsed.body, Canon.RELAXED))
    tags = [
        ("v", "1"), ("a", "rsa-sha1"), ("c", "relaxed/relaxed"), ("d", "example.com"), ("s", "sel"),
        ("h", "from:subject"), ("bh", base64.b64encode(body_hash.digest()).decode()),
    ]  # fmt: skip
    unsigned = format_unsigned_field(tags)
    digest = RSA_SHA1.new_hash()
    for field in parsed.headers:
        if field.key == "from":
            digest.update(canonicalize_header(field, Canon.RELAXED))
    for field in parsed.headers:
        if field.key == "subject":
            digest.update(canonicalize_header(field, Canon.RELAXED))
    digest.update(relaxed_header(unsigned)[:-2])
    signature = base64.b64encode(sign_digest(RSA_SHA1, rsa.key, digest))
    return unsigned + signature + b"\r\n" + SAMPLE, {NAME: _record(rsa)}, None, FIXED_NOW


def _many_case(
    rsa: PrivateKey, _ed: PrivateKey
) -> tuple[bytes, dict[str, object], VerifyOptions | None, int]:
    message = SAMPLE
    for _ in range(3):
        message = (
            mailseal.sign(message, key=rsa, domain="example.com", selector="sel", now=FIXED_NOW) + message
        )
    return message, {NAME: _record(rsa)}, VerifyOptions(max_signatures=2), FIXED_NOW


CASES: dict[Reason, Case] = {
    Reason.SIG_SYNTAX: _sig_case(r"s=sel;", "s=sel; bogus;"),
    Reason.SIG_DUPLICATE_TAG: _sig_case(r"s=sel;", "s=sel; s=sel;"),
    Reason.SIG_MISSING_TAG: _sig_case(r"s=sel;", ""),
    Reason.SIG_BAD_BASE64: _sig_case(r"bh=", "bh=!!"),
    Reason.SIG_VERSION: _sig_case(r"v=1;", "v=2;"),
    Reason.SIG_ALGORITHM_UNKNOWN: _sig_case(r"a=rsa-sha256", "a=rsa-sha512"),
    Reason.SIG_CANONICALIZATION_UNKNOWN: _sig_case(r"c=relaxed/relaxed", "c=relaxed/fancy"),
    Reason.SIG_QUERY_METHOD_UNKNOWN: _sig_case(r"s=sel;", "s=sel; q=http/well-known;"),
    Reason.SIG_BAD_DOMAIN: _sig_case(r"d=example.com", "d=exa..mple.com"),
    Reason.SIG_BAD_SELECTOR: _sig_case(r"s=sel", "s=-sel"),
    Reason.SIG_FROM_NOT_SIGNED: _sig_case(r"h=from:from:", "h="),
    Reason.SIG_AUID_NOT_IN_DOMAIN: _sig_case(r"s=sel;", "s=sel; i=alice@example.net;"),
    Reason.SIG_BAD_BODY_LENGTH: _sig_case(r"s=sel;", "s=sel; l=-5;"),
    Reason.SIG_BAD_TIMESTAMP: _sig_case(r"t=\d+", "t=yesterday"),
    Reason.SIG_EXPIRED: _clock_case(FIXED_NOW + 7200, expire_after=3600),
    Reason.SIG_TIMESTAMP_IN_FUTURE: _clock_case(FIXED_NOW - 3600),
    Reason.SIG_EXPIRY_BEFORE_TIMESTAMP: _sig_case(r"s=sel;", "s=sel; x=1000;"),
    Reason.BODY_LENGTH_EXCEEDS_BODY: _sig_case(r"s=sel;", "s=sel; l=99999;"),
    Reason.KEY_NOT_FOUND: _key_case(lambda _r, _e: TxtAnswer.failure(TxtStatus.NXDOMAIN)),
    Reason.KEY_SYNTAX: _key_case(lambda _r, _e: "v=DKIM1; k=rsa; garbage"),
    Reason.KEY_VERSION: _key_case(lambda r, _e: f"v=DKIM2; p={r.public_key_b64()}"),
    Reason.KEY_REVOKED: _key_case(lambda _r, _e: "v=DKIM1; k=rsa; p="),
    Reason.KEY_TYPE_UNKNOWN: _key_case(lambda r, _e: f"v=DKIM1; k=dsa; p={r.public_key_b64()}"),
    Reason.KEY_TYPE_MISMATCH: _key_case(lambda _r, e: _record(e)),
    Reason.KEY_HASH_NOT_ALLOWED: _key_case(lambda r, _e: _record(r, "h=sha1; ")),
    Reason.KEY_SERVICE_NOT_EMAIL: _key_case(lambda r, _e: _record(r, "s=chat; ")),
    Reason.KEY_BAD_BASE64: _key_case(lambda _r, _e: "v=DKIM1; k=rsa; p=@@@@"),
    Reason.KEY_INVALID: _key_case(lambda _r, _e: "v=DKIM1; k=ed25519; p=AAAA", signer="ed"),
    Reason.KEY_TOO_SMALL: _small_key_case,
    Reason.KEY_TOO_LARGE: _key_case(
        lambda r, _e: f"v=DKIM1; k=rsa; p={rsa_p(modulus_of(r.public_key_b64()), odd_number(2040))}"
    ),
    Reason.KEY_STRICT_SUBDOMAIN: _key_case(lambda r, _e: _record(r, "t=s; ")),
    Reason.DNS_TIMEOUT: _key_case(lambda _r, _e: TxtAnswer.failure(TxtStatus.TIMEOUT)),
    Reason.DNS_SERVFAIL: _key_case(lambda _r, _e: TxtAnswer.failure(TxtStatus.SERVFAIL)),
    Reason.DNS_ERROR: _key_case(lambda _r, _e: TxtAnswer.failure(TxtStatus.ERROR, "REFUSED")),
    Reason.BODY_HASH_MISMATCH: _sig_case(r"bh=.", "bh=A"),
    Reason.SIGNATURE_MISMATCH: _sig_case(r"b=[A-Za-z0-9+/]{4}", "b=AAAA"),
    Reason.ALGORITHM_NOT_ACCEPTED: _sha1_case,
    Reason.NOT_EVALUATED: _many_case,
}


def test_every_reason_has_a_case() -> None:
    assert set(CASES) == set(Reason)


def test_reason_table_is_total() -> None:
    assert set(REASON_RESULT) == set(Reason)


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_reason_is_produced(reason: Reason, rsa_key: PrivateKey, ed_key: PrivateKey) -> None:
    message, records, options, now = CASES[reason](rsa_key, ed_key)
    if reason is Reason.KEY_STRICT_SUBDOMAIN:
        message = _edit_sig(message, r"s=sel;", "s=sel; i=alice@sub.example.com;")
    report = mailseal.verify_sync(message, resolver=InMemoryResolver(records), options=options, now=now)  # type: ignore[arg-type]
    reasons = [s.reason for s in report.signatures]
    assert reason in reasons, [s.detail for s in report.signatures]
    sig = report.signatures[reasons.index(reason)]
    assert sig.result is REASON_RESULT[reason]
    assert sig.detail
    assert not report.passed or reason is Reason.NOT_EVALUATED


def test_pass_has_no_reason(rsa_key: PrivateKey) -> None:
    report = mailseal.verify_sync(
        _signed(rsa_key), resolver=InMemoryResolver({NAME: _record(rsa_key)}), now=FIXED_NOW
    )
    (sig,) = report.signatures
    assert sig.result is DKIMResult.PASS and sig.reason is None


def test_rsa_sha1_passes_only_with_the_legacy_switch(rsa_key: PrivateKey, ed_key: PrivateKey) -> None:
    message, records, _, now = _sha1_case(rsa_key, ed_key)
    resolver = InMemoryResolver(records)  # type: ignore[arg-type]
    assert mailseal.verify_sync(message, resolver=resolver, now=now).result is DKIMResult.POLICY
    assert mailseal.verify_sync(message, resolver=resolver, now=now, allow_rsa_sha1=True).passed


def test_signing_refuses_small_rsa_keys() -> None:
    with pytest.raises(mailseal.UsageError):
        generate_private_key(KeyType.RSA, 512)
