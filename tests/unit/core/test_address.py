"""The From reader: grammar, bounds, and the hostile shapes found in review (issue 8 items 1 and 2)."""

from __future__ import annotations

import ast
import sys
import time
import traceback
from pathlib import Path

import pytest

import mailseal
from mailseal import DKIMResult, PrivateKey
from mailseal.core import address as address_module
from mailseal.core.address import (
    MAX_COMMENT_DEPTH,
    MAX_FROM_BYTES,
    AddressProblem,
    AuthorStatus,
    Mailbox,
    author,
    parse_address_list,
)
from mailseal.core.message import HeaderField, Message
from mailseal.dns.memory import InMemoryResolver
from support.clock import FIXED_NOW
from support.messages import SAMPLE

NESTED_500 = b"(" * 500 + b")" * 500 + b" alice@bank.example"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@b.example", [("a", "b.example")]),
        ("Alice <alice@Bank.Example>", [("alice", "bank.example")]),
        ('"Smith, Alice" (work) <alice@example.com>', [("alice", "example.com")]),
        ("x (a (nested) comment) <a@b.c> (trailing)", [("a", "b.c")]),
        ("alice @ bank . example", [("alice", "bank.example")]),  # obsolete CFWS between tokens
        ("<@route.example,@r2.example:a@b.c>", [("a", "b.c")]),  # obs-route
        ("group: a@b.example, c@d.example;", [("a", "b.example"), ("c", "d.example")]),
        ("a@b.example, , c@d.example", [("a", "b.example"), ("c", "d.example")]),  # obs-mbox-list
        ('"a@bank.example"@evil.example', [('"a@bank.example"', "evil.example")]),
        ("a@[192.0.2.1]", [("a", "[192.0.2.1]")]),
        ("José <jose@exámple.com>", [("jose", "exámple.com")]),
        ("a@b.example.", [("a", "b.example")]),
        ("Alice\r\n <alice@example.com>", [("alice", "example.com")]),  # folded
        ("=?utf-8?q?Alice?= <alice@example.com>", [("alice", "example.com")]),  # encoded display name
    ],
)
def test_addresses_are_read(value: str, expected: list[tuple[str, str]]) -> None:
    assert parse_address_list(value) == tuple(Mailbox(local, domain) for local, domain in expected)


@pytest.mark.parametrize(
    "value",
    [
        "alice@bank.example\x00@evil.example",  # NUL: C readers stop at it, we would read past it
        "=?utf-8?q?alice=40bank.example?=",  # the address only inside an encoded-word
        "=?utf-8?b?YWxpY2VAYmFuay5leGFtcGxl?=",
        "<=?utf-8?q?alice=40bank.example?=>",
        "x@=?utf-8?q?bank.example?=",
        "=?utf-8?q?alice=40bank.example?=@mx.example.net",  # what Postfix makes of an encoded-only From
        '"=?utf-8?q?alice=40bank.example?="@mx.example.net',
        "a@b.example\x1b]0;owned\x07",
        "a@b.example\rX",  # a bare CR
        "Name <a@b.example",
        "a@b.example>",
        "<>",
        "(unclosed <a@b.example>",
        '"unclosed <a@b.example>',
        "grp: a@b.example",
        "a@b@c.example",
        "undisclosed",
        "a@-",
    ],
)
def test_unreadable_shapes_are_problems_not_addresses(value: str) -> None:
    with pytest.raises(AddressProblem):
        parse_address_list(value)


def _stack_depth() -> int:
    return len(traceback.extract_stack())


def test_no_function_of_the_reader_calls_itself() -> None:
    """Nesting is a counter, not a call per level: no function in core/address.py is recursive."""
    tree = ast.parse(Path(address_module.__file__).read_text())
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef):
            called = {
                n.func.id
                for n in ast.walk(function)
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            }
            assert function.name not in called, function.name


def test_comment_depth_is_bounded_without_recursion() -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(
        _stack_depth() + 30
    )  # a recursive reader would fail here long before the depth bound
    try:
        ok = "(" * MAX_COMMENT_DEPTH + ")" * MAX_COMMENT_DEPTH + " a@b.example"
        assert parse_address_list(ok) == (Mailbox("a", "b.example"),)
        deep = "(" * (MAX_COMMENT_DEPTH + 1) + ")" * (MAX_COMMENT_DEPTH + 1) + " a@b.example"
        with pytest.raises(AddressProblem, match="nested deeper"):
            parse_address_list(deep)
        with pytest.raises(AddressProblem):
            parse_address_list("(" * 100_000 + " a@b.example")
    finally:
        sys.setrecursionlimit(limit)


def _from(*values: bytes) -> tuple[HeaderField, ...]:
    return tuple(HeaderField("From", b"From:" + value + b"\r\n") for value in values)


@pytest.mark.parametrize(
    ("headers", "status", "domains"),
    [
        (_from(b" Alice <alice@bank.example>"), AuthorStatus.SINGLE, ("bank.example",)),
        (
            _from(b" a@evil.example", b" b@bank.example"),
            AuthorStatus.MULTIPLE,
            ("evil.example", "bank.example"),
        ),
        (_from(b" a@evil.example, b@bank.example"), AuthorStatus.MULTIPLE, ("evil.example", "bank.example")),
        ((), AuthorStatus.MISSING, ()),
        (_from(b" " + NESTED_500), AuthorStatus.UNREADABLE, ()),
        (_from(b" " + b"x" * MAX_FROM_BYTES + b" <alice@bank.example>"), AuthorStatus.UNREADABLE, ()),
        (_from(b" alice@bank.example\x00@evil.example"), AuthorStatus.UNREADABLE, ()),
        (_from(b" =?utf-8?q?alice=40bank.example?="), AuthorStatus.UNREADABLE, ()),
        (_from(b" a@evil.example", b" =?utf-8?q?alice=40bank.example?="), AuthorStatus.UNREADABLE, ()),
        (_from(b" undisclosed-recipients:;"), AuthorStatus.UNREADABLE, ()),
        (_from(*[b" a@x.example"] * 17), AuthorStatus.UNREADABLE, ()),
        (_from(b" " + b", ".join(b"a@x%d.example" % i for i in range(65))), AuthorStatus.UNREADABLE, ()),
    ],
)
def test_author_status(
    headers: tuple[HeaderField, ...], status: AuthorStatus, domains: tuple[str, ...]
) -> None:
    who = author(headers)
    assert who.status is status
    assert who.domains == domains
    assert (who.domain is not None) == (status is AuthorStatus.SINGLE)
    assert who.determined == (status in (AuthorStatus.SINGLE, AuthorStatus.MULTIPLE))


def test_reading_is_linear_in_the_field_size() -> None:
    shapes = [
        b"(" * 4000 + b"a@b.example",
        b'"' + b"\\a" * 4000 + b'" <a@b.example>',
        b"a." * 4000 + b"@b.example",
        b"<" * 8000,
        b"x " * 4000 + b"<a@b.example>",
        b"a@b" + b".c" * 4000,
        b"(" * 16 + b"x" * 8000,
    ]
    for shape in shapes:
        start = time.perf_counter()
        author(_from(b" " + shape[: MAX_FROM_BYTES - 10]))
        assert time.perf_counter() - start < 0.5, shape[:20]


# -- through the library: a value, never RecursionError (issue 8 item 1) --------------------------


def _with_from(value: bytes) -> bytes:
    return (
        b"From: "
        + value
        + b"\r\n"
        + b"".join(
            line + b"\r\n" for line in SAMPLE.split(b"\r\n")[:-1] if not line.lower().startswith(b"from:")
        )
    )


def test_nested_comment_from_gives_a_report_not_a_recursion_error(rsa_key: PrivateKey) -> None:
    message = _with_from(NESTED_500)
    signed = (
        mailseal.sign(message, key=rsa_key, domain="bank.example", selector="sel", now=FIXED_NOW) + message
    )
    record = f"v=DKIM1; k=rsa; p={rsa_key.public_key_b64()}"
    report = mailseal.verify_sync(
        signed, resolver=InMemoryResolver({"sel._domainkey.bank.example": record}), now=FIXED_NOW
    )
    assert report.result is DKIMResult.PASS  # the signature is still checked
    assert report.from_domain is None
    assert report.author is not None and report.author.status is AuthorStatus.UNREADABLE
    (sig,) = report.signatures
    assert sig.aligned is None  # alignment unknown: never claimed for an unreadable From
    unsigned = mailseal.verify_sync(message, resolver=InMemoryResolver({}), now=FIXED_NOW)
    assert unsigned.result is DKIMResult.NONE


def test_sign_accepts_a_hostile_from_without_recursion(rsa_key: PrivateKey) -> None:
    message = _with_from(NESTED_500)
    assert author(Message.from_bytes(message).headers).status is AuthorStatus.UNREADABLE
    field = mailseal.sign(message, key=rsa_key, domain="example.com", selector="sel", now=FIXED_NOW)
    assert field.startswith(b"DKIM-Signature:")  # the library signs what it is given; the milter decides


def test_the_author_memo_holds_only_ordinary_sized_from_fields() -> None:
    """Memoized by the field's bytes, so a hostile From cannot grow the memo past its bound."""
    from mailseal.core.address import MAX_CACHED_FROM, _one_from, author

    small = HeaderField("From", b"From: Alice <alice@example.com>\r\n")
    big = HeaderField("From", b"From: " + b"x" * MAX_CACHED_FROM + b"@example.com\r\n")
    _one_from.cache_clear()
    assert author([small]) == author([small]) == _one_from.__wrapped__(small.raw)
    assert _one_from.cache_info().currsize == 1
    assert author([big]).domain == "example.com"
    assert _one_from.cache_info().currsize == 1  # the large field was read, not remembered
    assert _one_from.cache_info().maxsize == 4096
