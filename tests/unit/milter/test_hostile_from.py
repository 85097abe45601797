"""Hostile From fields on the raw milter socket: require rules fail closed (issue 8 items 1 and 2)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pytest

from mailseal import PrivateKey, sign
from mailseal.core.txtanswer import TxtAnswer
from mailseal.dns.memory import InMemoryResolver
from mailseal.milter.loading import load
from support.clock import FIXED_NOW
from support.milter_client import MilterClient, Result
from support.milter_harness import MESSAGE, ServerThread, dns_records, write_config

EXTERNAL = "192.0.2.44"
REQUIRE = '[[verify.require]]\ndomain = "bank.example"\naction = "reject"\n'
Keys = Mapping[str, tuple[PrivateKey | None, str, str]]

HOSTILE_FROMS = {
    "nested-comments": b"(" * 500 + b")" * 500 + b" alice@bank.example",
    "over-16kb": b'"' + b"x" * 17_000 + b'" <alice@bank.example>',
    "folded-whitespace": b"Alice" + b"\r\n " * 6000 + b"<alice@bank.example>",
    "encoded-word-only": b"=?utf-8?q?alice=40bank.example?=",
    "nul": b"alice@bank.example\x00@evil.example",
    "control-character": b"alice@evil.example\x1b",
    # RFC 5321 4.1.3: a domain literal holds an IP address; a host name in brackets is
    # no address a reply could reach, and a mail client shows it as "alice@[bank.example]".
    "name-in-domain-literal": b"alice@[bank.example]",
    "tagged-name-in-domain-literal": b"alice@[x:bank.example]",
}


def _with_from(value: bytes) -> bytes:
    rest = b"".join(
        line + b"\r\n" for line in MESSAGE.split(b"\r\n")[:-1] if not line.lower().startswith(b"from:")
    )
    return b"From: " + value + b"\r\n" + rest


def _keys(rsa_key: PrivateKey) -> Keys:
    return {"bank": (rsa_key, "bank.example", "sel"), "own": (rsa_key, "example.com", "rsa2026")}


def _run(
    tmp_path: Path, keys: Keys, message: bytes, *, extra: str = REQUIRE, client_ip: str = EXTERNAL
) -> Result:
    path = write_config(tmp_path, keys, {"*@example.com": ["own"]}, extra)
    resolver = InMemoryResolver(dns_records(keys))
    with ServerThread(
        load(str(path)), resolver=resolver, clock=lambda: FIXED_NOW, config_path=str(path)
    ) as running:
        client = MilterClient(running.address)
        with client:
            client.negotiate()
            client.macros(b"C", {"j": "mx.test", "daemon_name": "smtpd"})
            client.connect(address=client_ip)
            return client.send_message(message)


@pytest.mark.parametrize("shape", list(HOSTILE_FROMS))
def test_unsigned_mail_with_an_unreadable_from_meets_every_require_rule(
    tmp_path: Path, rsa_key: PrivateKey, shape: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    result = _run(tmp_path, _keys(rsa_key), _with_from(HOSTILE_FROMS[shape]))
    assert result.reply == b"y"
    assert result.text.startswith("550 5.7.20 mailseal: the DKIM signature required for bank.example")
    assert "Traceback" not in caplog.text and "internal error" not in caplog.text
    assert len(caplog.text) < 20_000  # one line per message, not a 177 KB traceback


def test_a_passing_signature_of_the_required_domain_still_meets_the_rule(
    tmp_path: Path, rsa_key: PrivateKey
) -> None:
    message = _with_from(HOSTILE_FROMS["nested-comments"])
    signed = sign(message, key=rsa_key, domain="bank.example", selector="sel", now=FIXED_NOW) + message
    result = _run(tmp_path, _keys(rsa_key), signed)
    assert result.verdict == "continue"
    (authres,) = result.inserted("Authentication-Results")
    assert b"dkim=pass" in authres.value and b"header.d=bank.example" in authres.value


def test_unreadable_from_applies_every_rule_not_only_the_one_named(
    tmp_path: Path, rsa_key: PrivateKey
) -> None:
    extra = REQUIRE + '[[verify.require]]\ndomain = "gov.example"\naction = "quarantine"\n'
    message = _with_from(HOSTILE_FROMS["encoded-word-only"])
    signed = sign(message, key=rsa_key, domain="bank.example", selector="sel", now=FIXED_NOW) + message
    result = _run(tmp_path, _keys(rsa_key), signed, extra=extra)
    assert result.verdict == "continue"  # bank.example is met by its pass; gov.example is not met
    (quarantine,) = [a for a in result.actions if a.kind == "quarantine"]
    assert b"gov.example" in quarantine.value and b"cannot be read" in quarantine.value


def test_outgoing_mail_with_an_unreadable_from_is_sent_unsigned_by_default(
    tmp_path: Path, rsa_key: PrivateKey
) -> None:
    result = _run(
        tmp_path,
        _keys(rsa_key),
        _with_from(HOSTILE_FROMS["nested-comments"]),
        extra="",
        client_ip="127.0.0.1",
    )
    assert result.verdict == "continue"  # not a tempfail that the MTA would retry for days
    assert result.inserted("DKIM-Signature") == []


def test_outgoing_mail_with_an_unreadable_from_follows_its_configured_policy(
    tmp_path: Path, rsa_key: PrivateKey
) -> None:
    extra = '[on_failure]\nsign_from_unreadable = "reject"\n'
    message = _with_from(HOSTILE_FROMS["nested-comments"])
    result = _run(tmp_path, _keys(rsa_key), message, extra=extra, client_ip="127.0.0.1")
    assert result.reply == b"y"
    assert result.text.startswith("550 5.6.0 mailseal: the From field cannot be read")
    readable = _run(tmp_path, _keys(rsa_key), MESSAGE, extra=extra, client_ip="127.0.0.1")
    assert len(readable.inserted("DKIM-Signature")) == 1


def test_an_oversize_header_does_not_switch_the_require_rules_off(
    tmp_path: Path, rsa_key: PrivateKey
) -> None:
    padding = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 900) for i in range(40))  # ~37 KB of header
    message = _with_from(b"alice@bank.example").replace(b"Subject:", padding + b"Subject:", 1)
    extra = REQUIRE + "[limits]\nmax_header_bytes = 16384\n"
    result = _run(tmp_path, _keys(rsa_key), message, extra=extra)
    assert result.reply == b"y"
    assert result.text.startswith(
        "550 5.7.20 mailseal: the DKIM signature required for bank.example cannot be checked"
    )
    # Without a require rule the header_too_large policy alone decides (accept, untouched).
    plain = _run(tmp_path, _keys(rsa_key), message, extra="[limits]\nmax_header_bytes = 16384\n")
    assert plain.verdict == "continue" and plain.actions == []


class _BrokenAnswers:
    """A resolver whose answers are not TxtAnswer values: verifying them raises (an internal error)."""

    async def lookup_txt(self, name: str) -> TxtAnswer:
        return "not an answer"  # type: ignore[return-value]


def test_an_internal_error_while_verifying_does_not_switch_the_require_rules_off(
    tmp_path: Path, rsa_key: PrivateKey
) -> None:
    message = _with_from(b"alice@bank.example")
    signed = sign(message, key=rsa_key, domain="bank.example", selector="sel", now=FIXED_NOW) + message
    path = write_config(tmp_path, _keys(rsa_key), {"*@example.com": ["own"]}, REQUIRE)
    with (
        ServerThread(load(str(path)), resolver=_BrokenAnswers(), clock=lambda: FIXED_NOW) as running,
        MilterClient(running.address) as client,
    ):
        client.negotiate()
        client.macros(b"C", {"j": "mx.test", "daemon_name": "smtpd"})
        client.connect(address=EXTERNAL)
        result = client.send_message(signed)
    assert result.reply == b"y"  # verify_internal_error alone would accept
    assert result.text.startswith(
        "550 5.7.20 mailseal: the DKIM signature required for bank.example cannot be checked"
    )


@pytest.mark.parametrize(
    ("rule", "author"),
    [
        ("xn--bnk-qla.example", "alice@b\u00e4nk.example"),  # the rule as DNS writes it, the From in UTF-8
        ("b\u00e4nk.example", "alice@xn--bnk-qla.example"),  # and the other way round
        ("b\u00e4nk.example", "alice@ba\u0308nk.example"),  # a decomposed a-umlaut: the same name
        ("xn--bnk-qla.example", "alice@mail.B\u00c4NK.example"),
    ],
)
def test_a_require_rule_covers_its_domain_in_every_spelling(
    tmp_path: Path, rsa_key: PrivateKey, rule: str, author: str
) -> None:
    """An internationalized author domain is one name in U-labels or A-labels (RFC 5890).

    A rule written one way was skipped for unsigned mail whose From used the
    other: a mail client shows both as the same domain.
    """
    extra = f'[[verify.require]]\ndomain = "{rule}"\naction = "reject"\n'
    result = _run(tmp_path, _keys(rsa_key), _with_from(author.encode()), extra=extra)
    assert result.reply == b"y", result
    assert "550 5.7.20" in result.text
