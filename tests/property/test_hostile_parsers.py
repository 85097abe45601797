"""Hypothesis at the size and nesting extremes: the From reader, tag lists, key records (issue 8 tests).

Each parser of wire data must return a value or its one problem type, never
raise anything else, and stay inside its depth and size bounds.
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mailseal
from mailseal import DKIMResult, PrivateKey, Reason, VerifyOptions
from mailseal.core.address import (
    MAX_ADDRESSES,
    MAX_COMMENT_DEPTH,
    MAX_FROM_BYTES,
    AddressProblem,
    AuthorStatus,
    author,
    parse_address_list,
)
from mailseal.core.keypolicy import DEFAULT_MAX_RSA_BITS, MAX_RSA_EXPONENT_BITS, MIN_RSA_BITS
from mailseal.core.keyrecord import KeyRecord, parse_key_record
from mailseal.core.message import HeaderField
from mailseal.core.problems import MAX_DETAIL, SyntaxProblem
from mailseal.core.taglist import MAX_TAG_LIST_BYTES, MAX_TAGS, parse_tag_list
from mailseal.dns.memory import InMemoryResolver
from support.clock import FIXED_NOW
from support.hostile_keys import odd_number, rsa_p
from support.messages import SAMPLE

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# The characters RFC 5322's address grammar turns on, plus the ones attackers use.
ADDRESSY = st.text(alphabet='()<>@,;:\\".[] \t\r\nabcXYZ09-_=?\x00\x1b\x7f\u00e9\ufffd', max_size=120)
labels = st.text(alphabet="abcxyz0129", min_size=1, max_size=10) | st.just("a-b")
domains = st.lists(labels, min_size=1, max_size=4).map(".".join)
locals_ = st.text(
    alphabet="abc019!#$%&'*+/=^_`{|}~-", min_size=1, max_size=12
)  # no "?": "=?" opens an encoded-word
phrases = st.lists(st.text(alphabet="AbCz", min_size=1, max_size=8), min_size=1, max_size=3).map(" ".join)


def _field(value: str) -> HeaderField:
    return HeaderField("From", b"From:" + value.encode("utf-8", "surrogateescape") + b"\r\n")


def _nest(depth: int, inner: str = "c") -> str:
    return "(" * depth + inner + ")" * depth


@SETTINGS
@given(value=st.one_of(ADDRESSY, st.text(max_size=200)))
def test_address_reader_returns_mailboxes_or_its_problem(value: str) -> None:
    try:
        mailboxes = parse_address_list(value)
    except AddressProblem:
        return
    for mailbox in mailboxes:
        assert mailbox.domain == mailbox.domain.lower()
        assert "\x00" not in mailbox.address and "\r" not in mailbox.address


@SETTINGS
@given(value=st.one_of(ADDRESSY, st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_author_never_raises(value: str) -> None:
    who = author((_field(value),))
    assert who.status in AuthorStatus
    assert (who.domain is not None) == (who.status is AuthorStatus.SINGLE)


@SETTINGS
@given(
    depth=st.integers(min_value=1, max_value=3 * MAX_COMMENT_DEPTH),
    repeat=st.integers(min_value=1, max_value=2000),
    before=st.booleans(),
)
def test_nesting_extremes_are_bounded_not_recursive(depth: int, repeat: int, before: bool) -> None:
    comments = " ".join([_nest(depth)] * min(repeat, 50))
    value = f"{comments} alice@bank.example" if before else f"alice@bank.example {comments}"
    who = author((_field(value),))
    if len(value) + 7 > MAX_FROM_BYTES:
        assert who.status is AuthorStatus.UNREADABLE
    elif depth > MAX_COMMENT_DEPTH:
        assert who.status is AuthorStatus.UNREADABLE and "nested" in who.detail
    else:
        assert who.domain == "bank.example"


@SETTINGS
@given(
    size=st.integers(min_value=0, max_value=4 * MAX_FROM_BYTES),
    filler=st.sampled_from([" ", "x", "(", '"', "\r\n "]),
)
def test_size_extremes_are_bounded(size: int, filler: str) -> None:
    value = filler * (size // len(filler)) + " <alice@bank.example>"
    start = time.perf_counter()
    who = author((_field(value),))
    assert time.perf_counter() - start < 0.5
    if len(value) + 7 > MAX_FROM_BYTES:
        assert who.status is AuthorStatus.UNREADABLE  # never "not found": past the bound, unreadable


@SETTINGS
@given(
    mailboxes=st.lists(
        st.tuples(locals_, domains, st.one_of(st.none(), phrases), st.integers(0, 3)), min_size=1, max_size=8
    )
)
def test_well_formed_lists_read_back_every_domain_in_order(
    mailboxes: list[tuple[str, str, str | None, int]],
) -> None:
    parts = []
    for local, domain, phrase, depth in mailboxes:
        comment = f" {_nest(depth)}" if depth else ""
        parts.append(f'"{phrase}"{comment} <{local}@{domain}>' if phrase else f"{local}@{domain}{comment}")
    parsed = parse_address_list(", ".join(parts))
    assert [(m.local, m.domain) for m in parsed] == [(local, domain) for local, domain, _, _ in mailboxes]


def test_address_count_is_bounded() -> None:
    many = ", ".join(f"a{i}@x.example" for i in range(MAX_ADDRESSES + 1))
    assert author((_field(many),)).status is AuthorStatus.UNREADABLE


# -- tag lists ------------------------------------------------------------------------------------

TAGGY = st.text(alphabet="abhlsvdikpt=;: \t\r\n_-x0AZ/+\x00\x7f", max_size=200)


@SETTINGS
@given(text=st.one_of(TAGGY, st.text(max_size=200)), copies=st.integers(min_value=1, max_value=3000))
def test_tag_lists_return_tags_or_a_syntax_problem(text: str, copies: int) -> None:
    value = text * copies if len(text) * copies <= 2 * MAX_TAG_LIST_BYTES else text
    try:
        tags = parse_tag_list(value)
    except SyntaxProblem as problem:
        assert len(problem.detail) <= MAX_DETAIL
        return
    assert len(tags) <= MAX_TAGS
    assert len(value) <= MAX_TAG_LIST_BYTES


@SETTINGS
@given(count=st.integers(min_value=0, max_value=5 * MAX_TAGS), name_size=st.integers(1, 20_000))
def test_tag_count_and_name_size_are_bounded(count: int, name_size: int) -> None:
    text = "; ".join(f"t{i}=v" for i in range(count)) + "; " + "x" * name_size
    try:
        parse_tag_list(text)
    except SyntaxProblem as problem:
        assert len(problem.detail) <= MAX_DETAIL
    else:  # pragma: no cover - "x..." has no "=": always a problem
        raise AssertionError(text[:80])


# -- key records ----------------------------------------------------------------------------------


@SETTINGS
@given(data=st.one_of(st.binary(max_size=400), TAGGY.map(str.encode)), copies=st.integers(1, 400))
def test_key_records_parse_or_give_their_problem(data: bytes, copies: int) -> None:
    parsed = parse_key_record(data * copies)
    assert isinstance(parsed, KeyRecord | SyntaxProblem)
    if isinstance(parsed, SyntaxProblem):
        assert len(parsed.detail) <= MAX_DETAIL


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    modulus_bits=st.one_of(st.integers(512, 2 * DEFAULT_MAX_RSA_BITS), st.sampled_from([16_392, 40_000])),
    exponent_bits=st.one_of(st.just(17), st.integers(2, 3 * MAX_RSA_EXPONENT_BITS)),
)
def test_any_rsa_key_is_checked_within_the_caps_never_a_crypto_surprise(
    modulus_bits: int, exponent_bits: int, rsa_key: PrivateKey
) -> None:
    exponent = 65537 if exponent_bits == 17 else odd_number(exponent_bits, seed=exponent_bits)
    if exponent >= 2 ** (modulus_bits - 1) or exponent < 3:
        return  # not a public key cryptography will build
    record = f"v=DKIM1; k=rsa; p={rsa_p(odd_number(modulus_bits, seed=modulus_bits), exponent)}"
    message = mailseal.sign(SAMPLE, key=rsa_key, domain="example.com", selector="sel", now=FIXED_NOW) + SAMPLE
    start = time.perf_counter()
    (sig,) = mailseal.verify_sync(
        message,
        resolver=InMemoryResolver({"sel._domainkey.example.com": record}),
        options=VerifyOptions(),
        now=FIXED_NOW,
    ).signatures
    assert time.perf_counter() - start < 0.5
    if modulus_bits < MIN_RSA_BITS:
        assert sig.reason is Reason.KEY_TOO_SMALL
    elif modulus_bits > DEFAULT_MAX_RSA_BITS or exponent.bit_length() > MAX_RSA_EXPONENT_BITS:
        assert (sig.result, sig.reason) == (DKIMResult.PERMERROR, Reason.KEY_TOO_LARGE)
    else:  # a key inside the caps that is not the signer's: a real mismatch
        assert sig.reason is Reason.SIGNATURE_MISMATCH
