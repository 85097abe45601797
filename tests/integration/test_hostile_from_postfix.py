"""Hostile From fields through a real Postfix: require rules fail closed, outgoing mail is not stuck (issue 8 items 1, 2).

A private Postfix (tests/support/postfix.py) with ``python -m mailseal milter``
beside it, configured with a reject rule for bank.example. What Postfix
answers at end of DATA is checked, and what it delivers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailseal import PrivateKey
from mailseal.keys.files import write_private_key
from support.milter_process import MilterProcess
from support.postfix import EXTERNAL, INTERNAL, LOOPBACK, PostfixInstance, postfix_available
from support.required import needs

pytestmark = [
    pytest.mark.integration,
    needs(postfix_available(), "postfix", "apt-get install postfix; scripts/test.sh installs it"),
]

HOSTILE = {
    "nested-comments": b"(" * 500 + b")" * 500 + b" alice@bank.example",
    "over-16kb": b'"' + b"x" * 17_000 + b'" <alice@bank.example>',
    "folded-whitespace": b"Alice" + b"\r\n " * 6000 + b"<alice@bank.example>",
    "encoded-word-only": b"=?utf-8?q?alice=40bank.example?=",
    "nul": b"alice@bank.example\x00@evil.example",
}


def _message(from_value: bytes, marker: str) -> bytes:
    return (
        b"From: " + from_value + b"\r\n"
        b"To: bob@example.net\r\n"
        b"Subject: hostile From\r\n"
        b"Message-ID: <" + marker.encode() + b"@mailseal.test>\r\n"
        b"\r\n"
        b"body\r\n"
    )


@pytest.fixture(scope="module")
def postfix(
    tmp_path_factory: pytest.TempPathFactory, rsa_key: PrivateKey
) -> Iterator[tuple[PostfixInstance, MilterProcess]]:
    folder: Path = tmp_path_factory.mktemp("hostile-from")
    key = folder / "example.key"
    write_private_key(key, rsa_key)
    config = folder / "milter.toml"
    config.write_text(
        f'[milter]\nsocket = "inet:0@{LOOPBACK}"\nworkers = 1\nauthserv_id = "mx.mailseal.test"\n\n'
        '[routing]\ninternal_networks = ["127.0.0.0/8"]\n\n'
        '[verify]\nnameservers = ["127.0.0.1"]\ndns_timeout = 0.5\n\n'
        f'[key_table.main]\ndomain = "example.com"\nselector = "sel"\nfile = "{key}"\n\n'
        '[signing_table]\n"*" = ["main"]\n\n'
        '[[verify.require]]\ndomain = "bank.example"\naction = "reject"\n'
    )
    with MilterProcess(["--config", str(config)]) as milter:
        host, port = milter.address
        with PostfixInstance(milters=f"inet:{host}:{port}") as pf:
            yield pf, milter


@pytest.mark.parametrize("shape", list(HOSTILE))
def test_unsigned_mail_with_an_unreadable_from_is_rejected_by_the_require_rule(
    postfix: tuple[PostfixInstance, MilterProcess], shape: str
) -> None:
    pf, milter = postfix
    result = pf.submit(
        _message(HOSTILE[shape], f"in-{shape}"),
        client=EXTERNAL,
        sender="mallory@evil.example",
        recipients=["bob@example.net"],
    )
    assert (result.code, result.stage) == (550, "data"), result
    assert "required for bank.example" in result.text
    assert "Traceback" not in milter.log


def test_ordinary_unsigned_mail_still_flows(postfix: tuple[PostfixInstance, MilterProcess]) -> None:
    pf, _ = postfix
    result = pf.submit(
        _message(b"Carol <carol@other.example>", "in-ordinary"),
        client=EXTERNAL,
        sender="carol@other.example",
        recipients=["bob@example.net"],
    )
    assert result.accepted, result


def test_outgoing_mail_with_a_nested_comment_from_is_delivered_not_tempfailed(
    postfix: tuple[PostfixInstance, MilterProcess],
) -> None:
    pf, milter = postfix
    result = pf.submit(
        _message(HOSTILE["nested-comments"], "out-nested"),
        client=INTERNAL,
        sender="alice@example.com",
        recipients=["bob@example.net"],
    )
    assert result.accepted, result  # was: 451 on every retry
    assert pf.sink is not None
    delivered = pf.sink.wait_for_message(lambda m: b"<out-nested@mailseal.test>" in m.data).data
    assert b"DKIM-Signature:" not in delivered  # sign_from_unreadable = accept: sent unsigned
    assert milter.wait_for(r"unsigned=unreadable-from", 60) is not None, milter.log
