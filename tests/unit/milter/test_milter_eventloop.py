"""The milter's event loop: uvloop when installed, asyncio on request or without it; both serve mail."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rrset
import pytest

from mailseal import PrivateKey, sign
from mailseal.errors import UsageError
from mailseal.milter import eventloop
from support.dnsserver import ScriptedDnsServer, txt_strings
from support.milter_client import MilterClient
from support.milter_harness import MESSAGE, dns_records, write_config
from support.milter_process import MilterProcess
from support.required import need

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


def _require_uvloop() -> None:
    need(HAVE_UVLOOP, "uvloop", "pip install uvloop")


@pytest.fixture
def no_uvloop(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As on a host without uvloop: importing it fails."""
    monkeypatch.setitem(sys.modules, "uvloop", None)
    yield


def running_loop_module(choice: str) -> str:
    """The module of the loop class ``eventloop.run`` really runs a coroutine on."""
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    os.environ[eventloop.ENV] = choice
    try:
        eventloop.run(main())
    finally:
        del os.environ[eventloop.ENV]
    return seen[0]


def test_asyncio_is_used_when_asked_for() -> None:
    assert eventloop.loop_factory("asyncio") == ("asyncio", None)
    assert running_loop_module("asyncio").startswith("asyncio")


def test_auto_uses_uvloop_when_installed() -> None:
    _require_uvloop()
    assert eventloop.loop_factory("auto")[0] == "uvloop"
    assert eventloop.loop_factory(None)[0] in ("uvloop", "asyncio")  # from the environment
    assert running_loop_module("auto").startswith("uvloop")


def test_auto_falls_back_to_asyncio_without_uvloop(no_uvloop: None) -> None:
    assert eventloop.loop_factory("auto") == ("asyncio", None)
    assert running_loop_module("").startswith("asyncio")  # empty means auto


def test_asking_for_uvloop_without_it_is_a_usage_error(no_uvloop: None) -> None:
    with pytest.raises(UsageError, match="uvloop is not installed"):
        eventloop.loop_factory("uvloop")


def test_an_unknown_choice_is_a_usage_error_and_the_coroutine_is_not_leaked() -> None:
    with pytest.raises(UsageError, match="MAILSEAL_EVENT_LOOP='fast' is not one of"):
        eventloop.loop_factory("fast")
    os.environ[eventloop.ENV] = "fast"
    try:
        with pytest.raises(UsageError):
            eventloop.run(asyncio.sleep(0))  # closed, so no "never awaited" warning (-W error in CI)
    finally:
        del os.environ[eventloop.ENV]


@pytest.mark.integration
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_milter_process_signs_and_verifies_on_each_loop(
    loop: str, tmp_path: Path, rsa_key: PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    if loop == "uvloop":
        _require_uvloop()
    monkeypatch.setenv(eventloop.ENV, loop)
    keys = {"rsa": (rsa_key, "example.com", "rsa2026")}
    (record,) = dns_records(keys).values()

    def answer(query: dns.message.Message, _transport: str) -> dns.message.Message:
        reply = dns.message.make_response(query)
        reply.answer.append(
            dns.rrset.from_text(query.question[0].name, 3600, "IN", "TXT", txt_strings(record))
        )
        return reply

    with ScriptedDnsServer(answer) as nameserver:
        path = write_config(
            tmp_path,
            keys,
            {"*@example.com": ["rsa"]},
            f'[routing]\ninternal_networks = ["127.0.0.1/32"]\n[verify]\nnameservers = ["{nameserver.nameserver}"]\n',
            socket_spec="inet:0@127.0.0.1",
            milter_settings='log_level = "debug"',
        )
        incoming = sign(MESSAGE, key=rsa_key, domain="example.com", selector="rsa2026") + MESSAGE
        with MilterProcess(["--config", str(path), "--workers", "1"]) as process:
            with MilterClient(process.address) as client:
                client.negotiate()
                client.connect(address="127.0.0.1")
                assert len(client.send_message(MESSAGE).inserted("DKIM-Signature")) == 1
            for _ in range(2):  # the second answer comes from the cache, without a lookup task
                with MilterClient(process.address) as client:
                    client.negotiate()
                    client.connect(address="192.0.2.7")
                    (authres,) = client.send_message(incoming).inserted("Authentication-Results")
                    assert b"dkim=pass" in authres.value
            assert process.wait_for(f"event loop: {loop}", 60) is not None
        assert len(nameserver.requests) == 1
