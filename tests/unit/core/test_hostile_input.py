"""Hostile and odd input found in review: each must give a value, fast, and never leak into headers."""

from __future__ import annotations

import time

import pytest

import mailseal
from mailseal import DKIMResult, PrivateKey, Reason, TxtAnswer, TxtStatus
from mailseal.core.authres import authserv_id_of
from mailseal.core.canonicalization import BodyCanonicalizer, Canon
from mailseal.core.message import HeaderField, Message
from mailseal.dns.memory import InMemoryResolver
from support.clock import FIXED_NOW
from support.messages import SAMPLE

NAME = "sel._domainkey.example.com"


def _signed(key: PrivateKey) -> bytes:
    return mailseal.sign(SAMPLE, key=key, domain="example.com", selector="sel", now=FIXED_NOW) + SAMPLE


def _record(key: PrivateKey) -> str:
    return f"v=DKIM1; k={key.key_type}; p={key.public_key_b64()}"


def test_decoded_crlf_in_i_cannot_inject_a_header(rsa_key: PrivateKey) -> None:
    signed = _signed(rsa_key).replace(b"s=sel;", b"s=sel; i==0D=0AX-Spam-Flag:=20NO@example.com;", 1)
    report = mailseal.verify_sync(signed, resolver=InMemoryResolver({NAME: _record(rsa_key)}), now=FIXED_NOW)
    assert report.signatures[0].reason is Reason.SIG_SYNTAX
    authres = mailseal.render_authentication_results("mx.example.org", report)
    assert "\n" not in authres.replace("\r\n\t", "") and "X-Spam-Flag" not in authres


def test_control_characters_of_a_broken_signature_are_not_echoed() -> None:
    message = b"X-First: 1\r\nDKIM-Signature: v=1; d=evil\nX-Spoof: 1; s=\x1b[31m; b=\r\n" + SAMPLE
    report = mailseal.verify_sync(message, resolver=InMemoryResolver({}), now=FIXED_NOW)
    (sig,) = report.signatures
    assert sig.result is DKIMResult.PERMERROR
    assert sig.domain is None and sig.selector is None
    authres = mailseal.render_authentication_results("mx", report)
    assert "\x1b" not in authres and "X-Spoof" not in authres


def test_unsupported_key_algorithm_is_a_result_not_an_exception(rsa_key: PrivateKey) -> None:
    sm2_spki = "MFkwEwYHKoZIzj0CAQYIKoEcz1UBgi0DQgAEm8u8PpOSiuUQ9S9HiyXp3aDypTHYDgtrOXgz0BgjfRiXAgSBr9fWm7PXyWBUvfyexW3tFT7zq4B0v0MlJVm3cQ=="
    report = mailseal.verify_sync(
        _signed(rsa_key), resolver=InMemoryResolver({NAME: f"v=DKIM1; k=rsa; p={sm2_spki}"}), now=FIXED_NOW
    )
    assert report.signatures[0].reason is Reason.KEY_INVALID


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b" mx.example.com; dkim=pass", "mx.example.com"),
        (b" (a (b) c) mx.example.com; dkim=pass", "mx.example.com"),
        (b" (x\\) y) mx.example.com; dkim=pass", "mx.example.com"),
        (b' "mx.example.com"; dkim=pass', "mx.example.com"),
        (b" mx.example.com 1; none", "mx.example.com"),
        (b"\r\n\t(folded) mx.example.com;", "mx.example.com"),
    ],
)
def test_authserv_id_behind_comments_and_quotes(value: bytes, expected: str) -> None:
    assert (
        authserv_id_of(HeaderField("Authentication-Results", b"Authentication-Results:" + value + b"\r\n"))
        == expected
    )


def test_a_huge_from_field_is_not_quadratic() -> None:
    message = b"From:" + b" " * 100_000 + b"x@example.com\r\n\r\nbody\r\n"
    start = time.perf_counter()
    report = mailseal.verify_sync(message, resolver=InMemoryResolver({}), now=FIXED_NOW)
    assert time.perf_counter() - start < 1.0
    assert report.from_domain is None  # longer than any real From field: alignment unknown


def test_key_name_that_cannot_exist_in_dns_is_permanent(rsa_key: PrivateKey) -> None:
    selector = ".".join(["a" * 60] * 4)  # each label fine, the whole name over 253 octets
    signed = _signed(rsa_key).replace(b"s=sel;", b"s=" + selector.encode() + b";", 1)
    (sig,) = mailseal.verify_sync(signed, resolver=InMemoryResolver({}), now=FIXED_NOW).signatures
    assert sig.result is DKIMResult.PERMERROR and sig.reason is Reason.SIG_BAD_SELECTOR


def test_junk_signatures_do_not_use_up_the_cap_or_grow_the_report(rsa_key: PrivateKey) -> None:
    junk = b"DKIM-Signature: v=1; junk\r\n" * 200
    report = mailseal.verify_sync(
        junk + _signed(rsa_key),
        resolver=InMemoryResolver({NAME: _record(rsa_key)}),
        now=FIXED_NOW,
        max_signatures=2,
    )
    assert len(report.signatures) == 2 * 4  # four reported fields per signature we may evaluate
    assert report.left_out == 201 - 2 * 4  # and the report says how many it left out
    assert report.passed  # the real signature at the bottom is read first, whatever sits above it


def test_junk_above_a_real_signature_within_the_bound(rsa_key: PrivateKey) -> None:
    junk = b"DKIM-Signature: v=1; junk\r\n" * 5
    report = mailseal.verify_sync(
        junk + _signed(rsa_key),
        resolver=InMemoryResolver({NAME: _record(rsa_key)}),
        now=FIXED_NOW,
        max_signatures=2,
    )
    assert report.passed  # five unparseable fields do not count against the cap of two


def test_found_answer_without_records_is_no_key(rsa_key: PrivateKey) -> None:
    answer = TxtAnswer(TxtStatus.FOUND, ())
    (sig,) = mailseal.verify_sync(
        _signed(rsa_key), resolver=InMemoryResolver({NAME: answer}), now=FIXED_NOW
    ).signatures
    assert sig.reason is Reason.KEY_NOT_FOUND


def test_spf_neighbour_does_not_mask_the_key_problem(rsa_key: PrivateKey) -> None:
    records = ["v=spf1 -all", "v=DKIM1; k=rsa; p="]
    (sig,) = mailseal.verify_sync(
        _signed(rsa_key), resolver=InMemoryResolver({NAME: records}), now=FIXED_NOW
    ).signatures
    assert sig.reason is Reason.KEY_REVOKED


@pytest.mark.parametrize("canon", list(Canon))
def test_one_long_line_in_many_chunks_is_linear(canon: Canon) -> None:
    out: list[bytes] = []
    canonicalizer = BodyCanonicalizer(canon, out.append)
    chunk = b"x" * 65536
    start = time.perf_counter()
    for _ in range(256):  # 16 MB with no line end
        canonicalizer.feed(chunk)
    canonicalizer.finish()
    assert time.perf_counter() - start < 2.0
    assert sum(map(len, out)) == 16 * 1024 * 1024 + 2


def test_crlf_split_between_chunks_with_pending_pieces() -> None:
    out: list[bytes] = []
    canonicalizer = BodyCanonicalizer(Canon.SIMPLE, out.append)
    for piece in (b"ab", b"c\r", b"\nd", b"e\r", b"\n\r\n"):
        canonicalizer.feed(piece)
    canonicalizer.finish()
    assert b"".join(out) == b"abc\r\nde\r\n"


@pytest.mark.parametrize("bad", ["x;v=2", "to:cc", "with space", ""])
def test_signer_refuses_impossible_header_names(bad: str, rsa_key: PrivateKey) -> None:
    with pytest.raises(mailseal.UsageError):
        mailseal.sign(SAMPLE, key=rsa_key, domain="example.com", selector="s", oversign=[bad])


@pytest.mark.parametrize("identity", ["a\r\nb@example.com", "a b@example.com"])
def test_signer_refuses_identity_with_line_breaks_or_spaces(identity: str, rsa_key: PrivateKey) -> None:
    with pytest.raises(mailseal.UsageError):
        mailseal.sign(SAMPLE, key=rsa_key, domain="example.com", selector="s", identity=identity)


def test_negative_clock_skew_is_a_usage_error(rsa_key: PrivateKey) -> None:
    with pytest.raises(mailseal.UsageError):
        mailseal.verify_sync(
            SAMPLE, resolver=InMemoryResolver({}), options=mailseal.VerifyOptions(clock_skew=-1)
        )


def test_message_parse_of_hostile_header_block_is_fast() -> None:
    start = time.perf_counter()
    Message.from_bytes(b"X-A: " + b"\r\n " * 50_000 + b"\r\n\r\n")
    assert time.perf_counter() - start < 1.0
