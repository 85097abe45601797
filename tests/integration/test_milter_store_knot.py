"""A running ``mailseal milter`` process follows a rotation that ``mailseal keys tick`` drives against knotd.

One TOML file holds both the key lifecycle (``[keys]``, publishing to a
private knotd with TSIG) and the milter (``[milter]``, ``[key_table.example]
store = true``, ``[signing_table]``). ``keys generate``/``tick --now`` move
the store through months of rotation; the milter (two worker processes) is
never restarted or signalled, and each worker picks up every new active key.
Mail it signed is verified through ``DnsResolver`` against knotd.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailseal import DKIMResult, Reason, verify_sync
from mailseal.dns.resolver import DnsResolver
from support.clock import FIXED_NOW
from support.dnsserver import knot_available
from support.keyflow import DOMAIN
from support.knotkeys import KeysSetup, keys_setup
from support.milter_client import MilterClient, Result, apply_actions
from support.milter_process import MilterProcess
from support.milter_store import store_tables
from support.required import needs

pytestmark = [
    pytest.mark.integration,
    needs(knot_available(), "knotd", "apt-get install knot knot-dnsutils"),
]

HOUR = 3600
DAY = 86400
WORKERS = 2
MESSAGE = (
    b"From: Alice <alice@example.test>\r\nTo: bob@example.net\r\nSubject: signed from the store\r\n"
    b"Date: Thu, 1 Jan 2026 10:00:00 +0000\r\nMessage-ID: <store@example.test>\r\n\r\nHello.\r\n"
)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[KeysSetup]:
    with keys_setup(tmp_path) as ready:
        tables = store_tables(
            DOMAIN,
            socket_spec="inet:0@127.0.0.1",
            key_check_interval=0.1,
            milter_settings=f"workers = {WORKERS}",
        )
        ready.config.write_text(
            ready.config.read_text() + tables
        )  # one file for mailseal keys and the milter
        yield ready


def send(milter: MilterProcess) -> tuple[Result, bytes]:
    with MilterClient(milter.address) as client:
        negotiated = client.negotiate()
        client.macros(b"C", {"j": "mx.test", "daemon_name": "smtpd"})
        client.connect(address="127.0.0.1")
        result = client.send_message(MESSAGE, sender="alice@example.test")
    return result, apply_actions(MESSAGE, result, leading_space=negotiated.leading_space)


def selectors(result: Result) -> list[str]:
    found = []
    for action in result.inserted("DKIM-Signature"):
        match = re.search(rb";\s*s=([^;\s]+)", action.value)
        assert match is not None
        found.append(match.group(1).decode())
    return found


def tick(setup: KeysSetup, now: int) -> None:
    status, out, err = setup.cli("tick", now=now)
    assert status == 0, (out, err)


def every_worker_signs_with(milter: MilterProcess, selector: str, since: int) -> None:
    """Wait until each worker has logged its reload to ``selector`` (key watch, not a signal)."""
    pattern = re.compile(rf"keys of configuration .* loaded .*signing with {DOMAIN}/{selector}\b")
    seen: set[str] = set()
    position = since
    while len(seen) < WORKERS:
        line = milter.wait_for(pattern.pattern, 60, start=position)
        assert line is not None, f"not every worker picked up {selector}:\n{milter.log}"
        position = milter.lines.index(line, position) + 1
        pid = re.search(r"mailseal\[(\d+)\]", line)
        assert pid is not None
        seen.add(pid.group(1))


def verdict(setup: KeysSetup, message: bytes) -> tuple[DKIMResult, Reason | None]:
    report = verify_sync(message, resolver=DnsResolver([setup.knot.nameserver], timeout=3))
    (signature,) = report.signatures
    return signature.result, signature.reason


def test_a_milter_process_signs_with_each_key_the_ticks_activate(setup: KeysSetup) -> None:
    status, out, err = setup.cli("generate", DOMAIN, "--selector", "first", now=FIXED_NOW)
    assert status == 0, (out, err)
    with MilterProcess(["--config", str(setup.config)]) as milter:
        assert milter.wait_for("has no key to sign with now") is not None  # generated, not active
        result, _ = send(milter)
        assert result.verdict == "tempfail"

        mark = milter.mark()
        tick(setup, FIXED_NOW)  # published at knotd
        tick(setup, FIXED_NOW + HOUR)  # active
        every_worker_signs_with(milter, "first", mark)
        first = [send(milter) for _ in range(2 * WORKERS)]
        assert all(selectors(result) == ["first"] for result, _ in first)

        mark = milter.mark()
        tick(setup, FIXED_NOW + HOUR + 90 * DAY)  # rotation due: ms2026q2 generated and published
        tick(setup, FIXED_NOW + 2 * HOUR + 90 * DAY)  # ms2026q2 active, first retiring
        every_worker_signs_with(milter, "ms2026q2", mark)
        second = [send(milter) for _ in range(2 * WORKERS)]
        assert all(selectors(result) == ["ms2026q2"] for result, _ in second)

        old_mail, new_mail = first[0][1], second[0][1]
        assert verdict(setup, old_mail) == (DKIMResult.PASS, None)  # grace: still published
        assert verdict(setup, new_mail) == (DKIMResult.PASS, None)
        tick(setup, FIXED_NOW + 2 * HOUR + 97 * DAY)  # grace over: first revoked at knotd
        assert verdict(setup, old_mail) == (DKIMResult.PERMERROR, Reason.KEY_REVOKED)
        assert verdict(setup, new_mail) == (DKIMResult.PASS, None)
        assert selectors(send(milter)[0]) == ["ms2026q2"]
        assert milter.proc.poll() is None  # the same process throughout
    assert milter.proc.returncode == 0
    assert "reload refused" not in milter.log
