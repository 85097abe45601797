"""Hypothesis: round trips, idempotence, chunking invariance, parsers never raise."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mailseal
from mailseal import PrivateKey
from mailseal.core.canonicalization import BodyCanonicalizer, Canon, canonicalize_body, relaxed_header
from mailseal.core.keyrecord import KeyRecord
from mailseal.core.message import Message
from mailseal.core.problems import SyntaxProblem
from mailseal.core.signature import DKIMSignature
from mailseal.core.taglist import parse_tag_list
from mailseal.dns.memory import InMemoryResolver
from support.clock import FIXED_NOW

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

line_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), max_size=40
)
body_lines = st.lists(st.one_of(line_text, st.sampled_from(["", " ", "\t", "  x  "])), max_size=12)
header_value = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs", "Cc"]),
    min_size=1,
    max_size=30,
)


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    headers = [b"From: " + draw(header_value).encode() + b" <a@example.com>"]
    for name in draw(st.lists(st.sampled_from(["Subject", "To", "X-Thing", "Cc", "subject"]), max_size=5)):
        value = draw(header_value).encode()
        if draw(st.booleans()):
            value += b"\r\n\t" + draw(header_value).encode()  # folded
        headers.append(name.encode() + b": " + value)
    body = "\r\n".join(draw(body_lines)).encode()
    if draw(st.booleans()):
        body += b"\r\n"
    return b"\r\n".join(headers) + b"\r\n\r\n" + body


@SETTINGS
@given(
    message=messages(),
    canon=st.sampled_from(["simple/simple", "relaxed/relaxed", "relaxed/simple", "simple/relaxed"]),
)
def test_sign_verify_round_trip(message: bytes, canon: str, ed_key: PrivateKey) -> None:
    field = mailseal.sign(
        message, key=ed_key, domain="example.com", selector="s", canonicalization=canon, now=FIXED_NOW
    )
    resolver = InMemoryResolver({"s._domainkey.example.com": f"k=ed25519; p={ed_key.public_key_b64()}"})
    report = mailseal.verify_sync(field + message, resolver=resolver, now=FIXED_NOW)
    assert report.passed, report.signatures[0].detail


@given(body=st.binary(max_size=300), canon=st.sampled_from(list(Canon)))
def test_body_canonicalization_is_idempotent(body: bytes, canon: Canon) -> None:
    once = canonicalize_body(body, canon)
    assert canonicalize_body(once, canon) == once


@given(raw=st.binary(max_size=200).map(lambda b: b"Name:" + b.replace(b"\r\n", b"\r\n ")))
def test_relaxed_header_is_idempotent(raw: bytes) -> None:
    once = relaxed_header(raw)
    assert relaxed_header(once[:-2]) == once


@given(
    body=st.binary(max_size=400),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    canon=st.sampled_from(list(Canon)),
)
def test_chunking_invariance(body: bytes, cuts: list[int], canon: Canon) -> None:
    points = sorted({c for c in cuts if c <= len(body)})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    out: list[bytes] = []
    canonicalizer = BodyCanonicalizer(canon, out.append)
    for chunk in chunks:
        canonicalizer.feed(chunk)
    canonicalizer.finish()
    assert b"".join(out) == canonicalize_body(body, canon)


@given(data=st.binary(max_size=500))
def test_message_parser_never_raises(data: bytes) -> None:
    message = Message.from_bytes(data)
    assert all(h.raw for h in message.headers)


TAGGY = st.text(alphabet="abhlsvdiptxkcq=;: \t\r\n0123456789/+AZ", max_size=120)


@given(text=st.one_of(TAGGY, st.text(max_size=80)))
def test_tag_list_parser_never_raises_unexpectedly(text: str) -> None:
    with contextlib.suppress(SyntaxProblem):
        parse_tag_list(text)


@given(data=st.one_of(st.binary(max_size=200), TAGGY.map(str.encode)))
def test_signature_and_key_parsers_never_raise_unexpectedly(data: bytes) -> None:
    for parse in (DKIMSignature.from_header, KeyRecord.from_txt):
        with contextlib.suppress(SyntaxProblem):
            parse(data)


@given(data=st.binary(max_size=600), record=st.one_of(st.binary(max_size=100), TAGGY.map(str.encode)))
def test_verify_never_raises(data: bytes, record: bytes) -> None:
    message = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s; h=from; bh=; b=AAAA\r\n" + data
    report = mailseal.verify_sync(
        message, resolver=InMemoryResolver({"s._domainkey.example.com": record}), now=FIXED_NOW
    )
    assert all(s.detail for s in report.signatures)


@pytest.mark.parametrize("seed", [b"Subject: x\r\n\r\n", b"\r\n"])
def test_verify_fixed_odd_inputs(seed: bytes) -> None:
    assert not mailseal.verify_sync(seed, resolver=InMemoryResolver({}), now=FIXED_NOW).signatures


@given(data=st.one_of(st.binary(max_size=300), st.text(alphabet=" \t\r\nab", max_size=60).map(str.encode)))
def test_c_and_python_relaxed_lines_agree(data: bytes) -> None:
    from mailseal.core import canonicalization

    if not canonicalization.SPEEDUPS:
        if os.environ.get("MAILSEAL_REQUIRE_SPEEDUPS"):
            pytest.fail("the C speedup was not built, but MAILSEAL_REQUIRE_SPEEDUPS is set")
        pytest.skip("the C speedup is not built (pip install -e . with a C compiler builds it)")
    assert canonicalization.relaxed_lines(data) == canonicalization.relaxed_lines_py(data)


@given(
    raw=st.one_of(
        st.binary(max_size=200).map(lambda b: b"Na me \t:" + b),
        st.text(alphabet=" \t\r\nab:", max_size=60).map(lambda t: ("X:" + t).encode()),
    )
)
def test_c_and_python_relaxed_header_agree(raw: bytes) -> None:
    from mailseal.core import canonicalization

    if not canonicalization.SPEEDUPS:
        if os.environ.get("MAILSEAL_REQUIRE_SPEEDUPS"):
            pytest.fail("the C speedup was not built, but MAILSEAL_REQUIRE_SPEEDUPS is set")
        pytest.skip("the C speedup is not built (pip install -e . with a C compiler builds it)")
    assert canonicalization.relaxed_header(raw) == canonicalization.relaxed_header_py(raw)


@given(value=st.text(alphabet="bh =;\t\r\nAZ/+", max_size=60).map(str.encode))
def test_b_value_removal_matches_the_rfc_pattern(value: bytes) -> None:
    import re

    from mailseal.core.signature import without_b_value, without_b_value_py

    pattern = re.compile(rb"((?:^|;)[ \t\r\n]*b[ \t\r\n]*=)[^;]*")
    assert without_b_value(value) == without_b_value_py(value) == pattern.sub(rb"\1", value, count=1)
