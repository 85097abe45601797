"""Signing and verification together: round trips, coverage, tampering, alignment."""

from __future__ import annotations

import pytest

import mailseal
from mailseal import Alignment, DKIMResult, PrivateKey, Reason
from mailseal.api import signing_request
from mailseal.core.message import Message
from mailseal.core.signature import DKIMSignature
from mailseal.dns.memory import InMemoryResolver
from support.clock import FIXED_NOW
from support.messages import SAMPLE

CANONS = ["simple/simple", "simple/relaxed", "relaxed/simple", "relaxed/relaxed"]


def _resolver(*keys: tuple[str, PrivateKey]) -> InMemoryResolver:
    return InMemoryResolver(
        {
            f"{sel}._domainkey.example.com": f"v=DKIM1; k={k.key_type}; p={k.public_key_b64()}"
            for sel, k in keys
        }
    )


def _sign(message: bytes, key: PrivateKey, **options: object) -> bytes:
    field = mailseal.sign(message, key=key, domain="example.com", selector="sel", now=FIXED_NOW, **options)  # type: ignore[arg-type]
    return field + message


@pytest.mark.parametrize("canon", CANONS)
@pytest.mark.parametrize("which", ["rsa", "ed"])
def test_round_trip(canon: str, which: str, rsa_key: PrivateKey, ed_key: PrivateKey) -> None:
    key = rsa_key if which == "rsa" else ed_key
    signed = _sign(SAMPLE, key, canonicalization=canon)
    report = mailseal.verify_sync(signed, resolver=_resolver(("sel", key)), now=FIXED_NOW)
    (sig,) = report.signatures
    assert sig.result is DKIMResult.PASS, sig.detail
    assert sig.canonicalization == canon
    assert sig.key_bits == (2048 if which == "rsa" else 256)


def test_sign_returns_only_the_header_field(rsa_key: PrivateKey) -> None:
    field = mailseal.sign(SAMPLE, key=rsa_key, domain="example.com", selector="sel", now=FIXED_NOW)
    assert field.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
    assert field.endswith(b"\r\n") and field.count(b"\r\n\r\n") == 0
    assert all(len(line) <= 78 for line in field.split(b"\r\n"))
    sig = DKIMSignature.from_header(Message.from_bytes(field + SAMPLE).headers[0].value)
    assert sig.timestamp == FIXED_NOW
    assert sig.body_length is None  # no l= unless asked
    assert field.rstrip(b"\r\n").split(b";")[-1].strip().startswith(b"b=")  # b= last


def test_default_header_set_and_from_oversigned(rsa_key: PrivateKey) -> None:
    field = mailseal.sign(SAMPLE, key=rsa_key, domain="example.com", selector="sel", now=FIXED_NOW)
    sig = DKIMSignature.from_header(Message.from_bytes(field).headers[0].value)
    assert sig.signed_headers == (
        "from", "from", "subject", "date", "to", "message-id", "mime-version", "content-type",
    )  # fmt: skip


def test_prepended_from_breaks_an_oversigned_signature(rsa_key: PrivateKey) -> None:
    signed = _sign(SAMPLE, rsa_key)
    sig_end = signed.index(b"From:")
    forged = signed[:sig_end] + b"From: Mallory <ceo@example.com>\r\n" + signed[sig_end:]
    report = mailseal.verify_sync(forged, resolver=_resolver(("sel", rsa_key)), now=FIXED_NOW)
    assert report.signatures[0].result is DKIMResult.FAIL


def test_prepended_from_without_oversigning_is_reported(rsa_key: PrivateKey) -> None:
    signed = _sign(SAMPLE, rsa_key, oversign=())
    sig_end = signed.index(b"From:")
    forged = signed[:sig_end] + b"From: Mallory <ceo@example.com>\r\n" + signed[sig_end:]
    (sig,) = mailseal.verify_sync(forged, resolver=_resolver(("sel", rsa_key)), now=FIXED_NOW).signatures
    # RFC 6376 bottom-up selection: the original From is still the signed one.
    assert sig.result is DKIMResult.PASS
    assert not sig.from_oversigned
    assert "from" in sig.unsigned_headers
    assert sig.aligned is None  # two From fields: alignment cannot be judged


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda m: m.replace(b"noon?", b"one?"), Reason.BODY_HASH_MISMATCH),
        (lambda m: m.replace(b"Subject: Lunch", b"Subject: Dinner"), Reason.SIGNATURE_MISMATCH),
        (lambda m: m.replace(b"Hi Bob,", b"Hi Bob ,"), Reason.BODY_HASH_MISMATCH),
    ],
)
def test_tampering_fails(edit: object, reason: Reason, rsa_key: PrivateKey) -> None:
    signed = _sign(SAMPLE, rsa_key)
    tampered = edit(signed)  # type: ignore[operator]
    (sig,) = mailseal.verify_sync(tampered, resolver=_resolver(("sel", rsa_key)), now=FIXED_NOW).signatures
    assert sig.reason is reason


@pytest.mark.parametrize(("canon", "passes"), [("relaxed/relaxed", True), ("simple/simple", False)])
def test_whitespace_change_relaxed_vs_simple(canon: str, passes: bool, rsa_key: PrivateKey) -> None:
    signed = _sign(SAMPLE, rsa_key, canonicalization=canon)
    changed = signed.replace(b"meet at  noon", b"meet at \t noon").replace(
        b"Subject: Lunch", b"Subject:  Lunch"
    )
    assert mailseal.verify_sync(changed, resolver=_resolver(("sel", rsa_key)), now=FIXED_NOW).passed is passes


def test_unsigned_header_is_reported(rsa_key: PrivateKey) -> None:
    signed = _sign(SAMPLE, rsa_key, headers=["from", "to"])
    (sig,) = mailseal.verify_sync(signed, resolver=_resolver(("sel", rsa_key)), now=FIXED_NOW).signatures
    assert sig.passed
    assert "subject" in sig.unsigned_headers and "from" not in sig.unsigned_headers
    assert sig.signed_headers == ("from", "to")


def test_body_length_reports_appended_bytes(rsa_key: PrivateKey) -> None:
    signed = _sign(SAMPLE, rsa_key, body_length=True)
    appended = signed + b"Click here: http://evil.example/\r\n"
    (sig,) = mailseal.verify_sync(appended, resolver=_resolver(("sel", rsa_key)), now=FIXED_NOW).signatures
    assert sig.passed and sig.body_length_limited
    # The two trailing empty lines, ignored at signing time, now count as well.
    assert sig.unsigned_body_bytes == len(b"\r\n\r\nClick here: http://evil.example/\r\n")
    assert "not" in sig.detail


def test_multiple_signatures_in_one_call(rsa_key: PrivateKey, ed_key: PrivateKey) -> None:
    requests = [
        signing_request(key=rsa_key, domain="example.com", selector="rsa"),
        signing_request(key=ed_key, domain="example.com", selector="ed"),
    ]
    fields = mailseal.sign_many(SAMPLE, requests, now=FIXED_NOW)
    assert fields.count(b"DKIM-Signature:") == 2
    report = mailseal.verify_sync(
        fields + SAMPLE, resolver=_resolver(("rsa", rsa_key), ("ed", ed_key)), now=FIXED_NOW
    )
    assert [s.algorithm for s in report.signatures] == ["rsa-sha256", "ed25519-sha256"]
    assert all(s.passed for s in report.signatures)


def test_one_bad_signature_does_not_hide_a_good_one(rsa_key: PrivateKey, ed_key: PrivateKey) -> None:
    signed = _sign(SAMPLE, rsa_key)
    both = mailseal.sign(signed, key=ed_key, domain="example.com", selector="ed", now=FIXED_NOW) + signed
    report = mailseal.verify_sync(both, resolver=_resolver(("sel", rsa_key)), now=FIXED_NOW)
    assert [s.result for s in report.signatures] == [DKIMResult.PERMERROR, DKIMResult.PASS]
    assert report.passed and report.result is DKIMResult.PASS


@pytest.mark.parametrize(
    ("from_line", "alignment"),
    [
        (b"From: a@example.com", Alignment.EXACT),
        (b"From: a@news.example.com", Alignment.ORGANIZATIONAL),
        (b"From: a@example.net", Alignment.NONE),
        (b"From: a@example.net, b@example.com", Alignment.UNKNOWN),
    ],
)
def test_alignment(from_line: bytes, alignment: Alignment, rsa_key: PrivateKey) -> None:
    message = SAMPLE.replace(b"From: Alice Example <alice@example.com>", from_line)
    (sig,) = mailseal.verify_sync(
        _sign(message, rsa_key), resolver=_resolver(("sel", rsa_key)), now=FIXED_NOW
    ).signatures
    assert sig.passed
    assert sig.alignment is alignment
    assert sig.aligned is {Alignment.EXACT: True, Alignment.ORGANIZATIONAL: True, Alignment.NONE: False}.get(
        alignment
    )


def test_identity_and_expiry_tags(rsa_key: PrivateKey) -> None:
    signed = _sign(SAMPLE, rsa_key, identity="alice@mail.example.com", expire_after=3600)
    (sig,) = mailseal.verify_sync(signed, resolver=_resolver(("sel", rsa_key)), now=FIXED_NOW + 60).signatures
    assert sig.passed and sig.auid == "alice@mail.example.com" and sig.expiration == FIXED_NOW + 3600


@pytest.mark.parametrize(
    "kwargs",
    [
        {"identity": "alice@example.net"},
        {"domain": "not a domain"},
        {"selector": "bad selector"},
        {"algorithm": "ed25519-sha256"},
        {"algorithm": "rsa-sha1"},
        {"canonicalization": "fancy/simple"},
        {"expire_after": 0},
    ],
)
def test_sign_usage_errors(kwargs: dict[str, object], rsa_key: PrivateKey) -> None:
    args: dict[str, object] = {"key": rsa_key, "domain": "example.com", "selector": "sel", **kwargs}
    with pytest.raises(mailseal.UsageError):
        mailseal.sign(SAMPLE, **args)  # type: ignore[arg-type]


def test_sign_refuses_message_without_from(rsa_key: PrivateKey) -> None:
    with pytest.raises(mailseal.UsageError, match="From"):
        mailseal.sign(b"Subject: x\r\n\r\nbody\r\n", key=rsa_key, domain="example.com", selector="s")


def test_lf_only_message_signs_and_verifies(rsa_key: PrivateKey) -> None:
    lf = SAMPLE.replace(b"\r\n", b"\n")
    field = mailseal.sign(lf, key=rsa_key, domain="example.com", selector="sel", now=FIXED_NOW)
    report = mailseal.verify_sync(
        field.replace(b"\r\n", b"\n") + lf, resolver=_resolver(("sel", rsa_key)), now=FIXED_NOW
    )
    assert report.passed
    assert mailseal.verify_sync(field + SAMPLE, resolver=_resolver(("sel", rsa_key)), now=FIXED_NOW).passed


def test_no_signature_is_none() -> None:
    report = mailseal.verify_sync(SAMPLE, resolver=InMemoryResolver({}), now=FIXED_NOW)
    assert report.result is DKIMResult.NONE and not report.signatures


def test_async_verify_matches_sync(rsa_key: PrivateKey) -> None:
    import asyncio

    signed = _sign(SAMPLE, rsa_key)
    report = asyncio.run(mailseal.verify(signed, resolver=_resolver(("sel", rsa_key)), now=FIXED_NOW))
    assert report.passed


def test_authentication_results(rsa_key: PrivateKey, ed_key: PrivateKey) -> None:
    signed = _sign(SAMPLE, rsa_key)
    signed = mailseal.sign(signed, key=ed_key, domain="example.com", selector="ed", now=FIXED_NOW) + signed
    report = mailseal.verify_sync(signed, resolver=_resolver(("sel", rsa_key), ("ed", ed_key)), now=FIXED_NOW)
    text = mailseal.render_authentication_results("mx.example.org", report)
    assert text.startswith("mx.example.org;")
    clauses = text.split(";")[1:]
    assert len(clauses) == 2
    assert (
        "dkim=pass" in clauses[0] and "header.s=ed" in clauses[0] and "header.a=ed25519-sha256" in clauses[0]
    )
    assert "header.d=example.com" in clauses[1] and "header.b=" in clauses[1]
    empty = mailseal.render_authentication_results(
        "mx", mailseal.verify_sync(SAMPLE, resolver=InMemoryResolver({}))
    )
    assert empty == "mx; dkim=none"


def test_an_empty_caching_resolver_is_still_used(rsa_key: PrivateKey) -> None:
    """Regression: a cache with no entries is falsy; it must not be swapped for the system resolver."""
    from mailseal.dns.cache import CachingResolver

    inner = _resolver(("sel", rsa_key))
    cache = CachingResolver(inner)
    assert len(cache) == 0
    assert mailseal.verify_sync(_sign(SAMPLE, rsa_key), resolver=cache, now=FIXED_NOW).passed
    assert inner.queries == ["sel._domainkey.example.com"]


def test_pass_warnings_say_what_is_not_covered(rsa_key: PrivateKey) -> None:
    message = SAMPLE.replace(b"alice@example.com", b"alice@example.net")
    signed = _sign(message, rsa_key, oversign=(), body_length=True)
    (sig,) = mailseal.verify_sync(
        signed + b"extra\r\n", resolver=_resolver(("sel", rsa_key)), now=FIXED_NOW
    ).signatures
    assert sig.passed
    codes = {w.split(":")[0] for w in sig.warnings}
    assert codes == {"partial-body", "from-not-oversigned", "not-aligned", "no-dnssec"}
    clean = mailseal.verify_sync(_sign(SAMPLE, rsa_key), resolver=_resolver(("sel", rsa_key)), now=FIXED_NOW)
    assert {w.split(":")[0] for w in clean.signatures[0].warnings} == {"no-dnssec"}
