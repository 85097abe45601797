"""Signing table precedence, pattern checks, key resolution and sender extraction."""

from __future__ import annotations

import pytest

from mailseal import PrivateKey
from mailseal.core.message import Message
from mailseal.keys.source import KeySet, SigningKey
from mailseal.milter.signing_table import (
    PatternError,
    RuleKind,
    SigningTable,
    choose_keys,
    envelope_sender,
    header_sender,
    parse_rule,
)

TABLE = SigningTable(
    [
        parse_rule("*", ["default"]),
        parse_rule(".example.com", ["org-wide"]),
        parse_rule(".mail.example.com", ["mail-subtree"]),
        parse_rule("example.com", ["apex"]),
        parse_rule("*@shop.example.com", ["shop"]),
        parse_rule("sales-*@example.com", ["sales"]),
        parse_rule("sales-eu-*@example.com", ["sales-eu"]),
        parse_rule("*-team@example.com", ["teams"]),
        parse_rule("alice@example.com", ["alice"]),
    ]
)


@pytest.mark.parametrize(
    ("sender", "rule"),
    [
        ("alice@example.com", "alice@example.com"),  # exact address beats every pattern
        ("ALICE@Example.COM", "alice@example.com"),  # case does not matter
        ("sales-uk@example.com", "sales-*@example.com"),
        ("sales-eu-fr@example.com", "sales-eu-*@example.com"),  # more literal characters win
        ("sales-team@example.com", "sales-*@example.com"),  # 6 literals beat 5; order does not matter
        ("dev-team@example.com", "*-team@example.com"),
        ("bob@example.com", "example.com"),  # the exact domain beats .example.com
        ("bob@shop.example.com", "*@shop.example.com"),  # *@domain is an exact-domain rule
        ("bob@eu.example.com", ".example.com"),
        ("bob@a.b.mail.example.com", ".mail.example.com"),  # longest suffix wins
        ("bob@mail.example.com", ".mail.example.com"),  # .d covers d itself
        ("bob@example.org", "*"),
        ("bob@notexample.com", "*"),  # a suffix match must be on a label boundary
        ("no-at-sign", "*"),
    ],
)
def test_most_specific_rule_wins(sender: str, rule: str) -> None:
    found = TABLE.match(sender)
    assert found is not None
    assert found.pattern == rule


def test_without_a_default_unlisted_senders_match_nothing() -> None:
    table = SigningTable([parse_rule("example.com", ["k"])])
    assert table.match("x@example.org") is None
    assert table.match("x@sub.example.com") is None  # "example.com" does not cover subdomains


def test_equal_specificity_goes_to_the_first_listed() -> None:
    table = SigningTable([parse_rule("a*@x.example", ["first"]), parse_rule("*a@x.example", ["second"])])
    rule = table.match("aa@x.example")
    assert rule is not None
    assert rule.keys == ("first",)


@pytest.mark.parametrize(
    ("pattern", "kind"),
    [
        ("*", RuleKind.DEFAULT),
        ("bob@example.com", RuleKind.ADDRESS),
        ("b*b@example.com", RuleKind.LOCAL_PATTERN),
        ("*@example.com", RuleKind.DOMAIN),
        ("example.com", RuleKind.DOMAIN),
        (".example.com", RuleKind.SUBDOMAINS),
    ],
)
def test_rule_kinds(pattern: str, kind: RuleKind) -> None:
    assert parse_rule(pattern, ["k"]).kind is kind


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("*.example.com", "wildcard is allowed only in the local part"),
        ("bob@*.example.com", "not a domain name"),
        ("@example.com", "local part"),
        ("bob@", "not a domain name"),
        ("not a domain", "not a domain name"),
    ],
)
def test_bad_patterns_explain_themselves(pattern: str, words: str) -> None:
    with pytest.raises(PatternError, match=words):
        parse_rule(pattern, ["k"])


def test_a_rule_needs_keys() -> None:
    with pytest.raises(PatternError, match="names no keys"):
        parse_rule("example.com", [])


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("example.com", "*@example.com"),
        ("*", "*"),
        ("A@example.com", "a@example.com"),
        ("x*@e.com", "X*@e.com"),
    ],
)
def test_rules_with_the_same_meaning_are_refused(first: str, second: str) -> None:
    with pytest.raises(PatternError):
        SigningTable([parse_rule(first, ["k"]), parse_rule(second, ["k"])])


def test_choose_keys_reports_missing_keys_and_fills_the_sender_domain(rsa_key: PrivateKey) -> None:
    keyset = KeySet(
        {
            "fixed": (SigningKey("fixed", "example.com", "s1", rsa_key),),
            "per-sender": (SigningKey("per-sender", "%", "s2", rsa_key),),
        },
        {"broken": "key file /k is readable by group/others; fix with: chmod 600 /k"},
    )
    choice = choose_keys(
        parse_rule("*", ["fixed", "per-sender", "broken", "unknown"]), keyset, "shop.example"
    )
    assert [(k.domain, k.selector) for k in choice.keys] == [("example.com", "s1"), ("shop.example", "s2")]
    assert [name for name, _ in choice.missing] == ["broken", "unknown"]
    assert "chmod 600" in choice.missing[0][1]
    assert "PRIVATE" not in repr(choice)  # keys never show in reprs (logs)


@pytest.mark.parametrize(
    ("from_field", "address"),
    [
        (b"From: alice@example.com", "alice@example.com"),
        (b"From: Alice <alice@example.com>", "alice@example.com"),
        (b'From: "Smith, Alice" (work) <alice@example.com>', "alice@example.com"),
        (b"From: Alice\r\n <alice@example.com>", "alice@example.com"),
        (b"From: a@example.com, b@example.com", None),  # two authors: no single sender
        (b"From: undisclosed", None),
    ],
)
def test_header_sender(from_field: bytes, address: str | None) -> None:
    message = Message.from_bytes(from_field + b"\r\nTo: x@y.example\r\n\r\nbody\r\n")
    assert header_sender(message.headers) == address


def test_header_sender_needs_exactly_one_from() -> None:
    message = Message.from_bytes(b"From: a@example.com\r\nFrom: b@example.com\r\n\r\n")
    assert header_sender(message.headers) is None
    assert header_sender(Message.from_bytes(b"To: a@example.com\r\n\r\n").headers) is None


def test_envelope_sender() -> None:
    assert envelope_sender(("<alice@example.com>", "SIZE=1"), None) == "alice@example.com"
    assert envelope_sender(("<x@y.example>",), "alice@example.com") == "alice@example.com"  # macro wins
    assert envelope_sender(("<>",), None) is None  # bounces have no sender
