"""Verification cost has a ceiling: key size and exponent caps, a work budget per message (issue 8 item 7)."""

from __future__ import annotations

import time

import pytest

import mailseal
from mailseal import DKIMResult, PrivateKey, Reason, VerifyOptions
from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import parse_public_key
from mailseal.core.keypolicy import (
    DEFAULT_MAX_RSA_BITS,
    MAX_RSA_EXPONENT_BITS,
    RSA_BITS_LIMIT,
    verify_cost,
)
from mailseal.dns.memory import InMemoryResolver
from support.clock import FIXED_NOW
from support.hostile_keys import modulus_of, odd_number, pkcs1_p, rsa_p
from support.messages import SAMPLE

NAME = "sel._domainkey.example.com"


def _signed(key: PrivateKey, selector: str = "sel", message: bytes = SAMPLE) -> bytes:
    return mailseal.sign(message, key=key, domain="example.com", selector=selector, now=FIXED_NOW) + message


def _verify(message: bytes, records: dict[str, object], **options: object) -> mailseal.VerificationReport:
    return mailseal.verify_sync(
        message,
        resolver=InMemoryResolver(records),  # type: ignore[arg-type]
        options=VerifyOptions(**options),  # type: ignore[arg-type]
        now=FIXED_NOW,
    )


@pytest.mark.parametrize(
    ("modulus_bits", "exponent_bits"),
    [
        (3072, 3070),  # the amplification found in review: ~9 ms per signature
        (16_392, 17),  # OpenSSL refuses it when verifying: never "signature-mismatch"
        (360_000, 17),  # a 45 KB key
        (2048, MAX_RSA_EXPONENT_BITS + 1),
    ],
)
def test_keys_over_the_caps_are_permerror_key_too_large(
    rsa_key: PrivateKey, modulus_bits: int, exponent_bits: int
) -> None:
    modulus = odd_number(modulus_bits, seed=modulus_bits)
    exponent = 65537 if exponent_bits == 17 else odd_number(exponent_bits, seed=exponent_bits)
    record = f"v=DKIM1; k=rsa; p={rsa_p(modulus, exponent)}"
    start = time.perf_counter()
    report = _verify(_signed(rsa_key), {NAME: record})
    assert time.perf_counter() - start < 0.5
    (sig,) = report.signatures
    assert (sig.result, sig.reason) == (DKIMResult.PERMERROR, Reason.KEY_TOO_LARGE), sig.detail
    assert "signature" not in sig.detail


@pytest.mark.parametrize("exponent", [65536, 1])
def test_even_or_tiny_exponents_are_key_invalid(rsa_key: PrivateKey, exponent: int) -> None:
    record = f"v=DKIM1; k=rsa; p={pkcs1_p(modulus_of(rsa_key.public_key_b64()), exponent)}"
    (sig,) = _verify(_signed(rsa_key), {NAME: record}).signatures
    assert (sig.result, sig.reason) == (DKIMResult.PERMERROR, Reason.KEY_INVALID), sig.detail


def test_the_size_cap_is_configurable(rsa_key: PrivateKey) -> None:
    record = f"v=DKIM1; k=rsa; p={rsa_key.public_key_b64()}"
    assert _verify(_signed(rsa_key), {NAME: record}).passed
    (sig,) = _verify(_signed(rsa_key), {NAME: record}, max_rsa_bits=1536).signatures
    assert sig.reason is Reason.KEY_TOO_LARGE
    assert "1536" in sig.detail
    # Above OpenSSL's own ceiling the cap cannot be raised: such keys stay key-too-large.
    big = f"v=DKIM1; k=rsa; p={rsa_p(odd_number(RSA_BITS_LIMIT + 8), 65537)}"
    (sig,) = _verify(_signed(rsa_key), {NAME: big}, max_rsa_bits=10 * RSA_BITS_LIMIT).signatures
    assert sig.reason is Reason.KEY_TOO_LARGE


def test_verify_cost_units(rsa_key: PrivateKey, ed_key: PrivateKey) -> None:
    import base64

    rsa_pub = parse_public_key(KeyType.RSA, base64.b64decode(rsa_key.public_key_b64()))
    ed_pub = parse_public_key(KeyType.ED25519, base64.b64decode(ed_key.public_key_b64()))
    assert verify_cost(rsa_pub) == 1
    assert verify_cost(ed_pub) == 3
    at_caps = parse_public_key(
        KeyType.RSA,
        base64.b64decode(rsa_p(odd_number(DEFAULT_MAX_RSA_BITS), odd_number(MAX_RSA_EXPONENT_BITS))),
    )
    assert 16 <= verify_cost(at_caps) <= 64  # the default budget of 64 always covers one key at the caps


def test_work_budget_per_message(rsa_key: PrivateKey) -> None:
    message = SAMPLE
    selectors = [f"s{i}" for i in range(6)]
    for selector in selectors:
        message = _signed(rsa_key, selector, message)
    record = f"v=DKIM1; k=rsa; p={rsa_key.public_key_b64()}"
    records: dict[str, object] = {f"{s}._domainkey.example.com": record for s in selectors}
    report = _verify(message, records, max_verify_work=4)
    reasons = [s.reason for s in report.signatures]
    assert reasons.count(None) == 4
    assert reasons.count(Reason.NOT_EVALUATED) == 2
    assert all("work budget" in s.detail for s in report.signatures if s.reason is Reason.NOT_EVALUATED)
    # Bottom first: the first signatures made (at the bottom) are the ones that were checked.
    assert [s.selector for s in report.signatures if s.passed] == ["s3", "s2", "s1", "s0"]


@pytest.mark.parametrize(
    "options",
    [VerifyOptions(max_verify_work=0), VerifyOptions(min_rsa_bits=2048, max_rsa_bits=1024)],
    ids=["no-budget", "cap-below-floor"],
)
def test_options_that_cannot_work_are_misuse(options: VerifyOptions) -> None:
    with pytest.raises(mailseal.UsageError):
        mailseal.verify_sync(SAMPLE, resolver=InMemoryResolver({}), options=options, now=FIXED_NOW)


def test_the_budget_pays_for_public_key_operations_only(rsa_key: PrivateKey) -> None:
    old = SAMPLE
    for selector in ("s0", "s1", "s2", "s3"):
        old = _signed(rsa_key, selector, old)
    changed = old.replace(b"\r\n\r\n", b"\r\n\r\nA line added later.\r\n", 1)  # every body hash now fails
    message = _signed(rsa_key, "fresh", changed)
    record = f"v=DKIM1; k=rsa; p={rsa_key.public_key_b64()}"
    records: dict[str, object] = {
        f"{s}._domainkey.example.com": record for s in ("s0", "s1", "s2", "s3", "fresh")
    }
    report = _verify(message, records, max_verify_work=1)
    assert [s.reason for s in report.signatures] == [None] + [Reason.BODY_HASH_MISMATCH] * 4


def test_a_key_is_decoded_and_sized_once_and_huge_p_values_are_not_remembered(rsa_key: PrivateKey) -> None:
    from mailseal.core import keyrecord
    from mailseal.core.keypolicy import key_size, size_cost, size_problem
    from mailseal.core.problems import SyntaxProblem

    record = keyrecord.KeyRecord.for_key(KeyType.RSA, rsa_key.public_key_b64())
    key, size = record.public_key_sized()
    again, same = record.public_key_sized()
    assert again is key and same is size  # the memo: one decode and one public_numbers() per key
    assert size == key_size(key) and size.rsa and size.bits == 2048 and size.exponent == 65537
    assert size_cost(size) == verify_cost(key) == 1
    assert size_problem(size, min_rsa_bits=1024, max_rsa_bits=8192) is None
    assert size_problem(size, min_rsa_bits=4096, max_rsa_bits=8192) is not None
    before = keyrecord._decode_public_key_cached.cache_info().currsize
    huge = keyrecord.KeyRecord.for_key(KeyType.RSA, "A" * (keyrecord.MAX_CACHED_P + 4))
    with pytest.raises(SyntaxProblem):
        huge.public_key_sized()
    assert keyrecord._decode_public_key_cached.cache_info().currsize == before
