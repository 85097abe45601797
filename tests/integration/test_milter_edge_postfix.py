"""Legitimate mail keeps flowing through a real Postfix while the milter socket is attacked.

Issue 8's end-to-end acceptance test for the milter's edge (items 4, 5, 9). One
``mailseal milter`` process (one worker, its descriptor limit lowered to 256 so
exhaustion is really reached: connection cap 192) sits behind a private Postfix.
While legitimate mail goes through Postfix (outgoing mail signed, incoming mail
verified), these hit the milter socket in parallel, on loopback, for a bounded
time:

* 2,000 connections, half idle and half slowloris (one byte a second), each
  reopened when the milter closes it (at most 20,000 opens in all);
* a forged-Authentication-Results flood: messages with 20,000 fields claiming
  our authserv-id, one after another on one connection;
* five clients that never read a reply while they send header after header.

Checked from the outside: every legitimate message is accepted by Postfix,
delivered, and signed or verified (none lost); the milter's log stays small (no
storm). Printed (run with ``-s``): RSS at rest and at peak, reply latency of
legitimate mail before and under attack, time to recover after the attack stops.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import statistics
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailseal import PrivateKey, sign, verify_sync
from mailseal.dns.memory import InMemoryResolver
from mailseal.keys.files import write_private_key
from support.dnsserver import ScriptedDnsServer, txt_records
from support.milter_client import MilterClient
from support.milter_process import MilterProcess
from support.postfix import EXTERNAL, LOOPBACK, PostfixInstance, free_tcp_port, postfix_available
from support.required import needs

pytestmark = [
    pytest.mark.integration,
    needs(postfix_available(), "postfix", "apt-get install postfix; scripts/test.sh installs it"),
]

AUTHSERV_ID = "verify.mailseal.test"
DOMAIN = "example.com"
SELECTOR = "rsa2026"
ATTACK_CONNECTIONS = 2_000
MAX_OPENS = 20_000
ATTACK_SECONDS = 20.0
NOFILE = 256


def frame(command: bytes, payload: bytes = b"") -> bytes:
    return struct.pack("!I", len(payload) + 1) + command + payload


NEGOTIATE = frame(b"O", struct.pack("!III", 6, 0x1FF, 0x1FFFFF))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Attack:
    """The hostile clients, each kind in its own thread, all stopped by :meth:`stop`."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.done = threading.Event()
        self.opens = 0
        self.flood_replies: list[str] = []
        self.deaf_sent = 0
        self._threads = [
            threading.Thread(target=self._idle_and_slowloris, daemon=True),
            threading.Thread(target=self._forged_flood, daemon=True),
            threading.Thread(target=self._never_reading, daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.done.set()
        for thread in self._threads:
            thread.join(30)

    def _open(self) -> socket.socket | None:
        if self.opens >= MAX_OPENS:
            return None
        self.opens += 1
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect_ex(self.address)
        return sock

    def _idle_and_slowloris(self) -> None:
        selector = selectors.DefaultSelector()
        slow: dict[socket.socket, int] = {}
        for i in range(ATTACK_CONNECTIONS):
            sock = self._open()
            if sock is None:
                break
            selector.register(sock, selectors.EVENT_READ, i % 2)
            if i % 2:
                slow[sock] = 0
        next_trickle = time.monotonic()
        while not self.done.is_set():
            for key, _ in selector.select(timeout=0.2):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    data = conn.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:  # closed by the milter: come back
                    selector.unregister(conn)
                    slow.pop(conn, None)
                    conn.close()
                    new = self._open()
                    if new is not None:
                        selector.register(new, selectors.EVENT_READ, key.data)
                        if key.data:
                            slow[new] = 0
            if time.monotonic() >= next_trickle:
                next_trickle += 1.0
                for sock, sent in list(slow.items()):
                    with contextlib.suppress(OSError):
                        sock.send(NEGOTIATE[sent % len(NEGOTIATE) : sent % len(NEGOTIATE) + 1])
                        slow[sock] = sent + 1
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()

    def _forged_flood(self) -> None:
        forged = frame(b"L", b"Authentication-Results\0" + AUTHSERV_ID.encode() + b"; dkim=pass\0") * 20_000
        while not self.done.is_set():
            try:
                with MilterClient(self.address, timeout=30) as client:
                    client.negotiate()
                    client.connect(address="192.0.2.66")
                    while not self.done.is_set():
                        client.mail("eve@evil.example")
                        client.send_raw(forged + frame(b"L", b"From\0eve@evil.example\0") + frame(b"N"))
                        result = client.end_of_message()
                        self.flood_replies.append(result.text or result.reply.decode())
            except OSError:
                time.sleep(0.2)

    def _never_reading(self) -> None:
        clients = []
        for _ in range(5):
            with contextlib.suppress(OSError):
                client = MilterClient(self.address, timeout=30)
                clients.append(client)
                client.negotiate(protocol=0)
                client.connect(address="127.0.0.1")
                client.mail("alice@example.com")
                client.sock.setblocking(False)
        burst = frame(b"L", b"X\0y\0") * 8000
        offsets = [0] * len(clients)  # whole frames only: a partial send continues where it stopped
        while not self.done.is_set():
            progressed = False
            for n, client in enumerate(clients):
                try:
                    sent = client.sock.send(burst[offsets[n] :])
                except (BlockingIOError, OSError):
                    continue
                self.deaf_sent += sent
                offsets[n] = (offsets[n] + sent) % len(burst)
                progressed = True
            if not progressed:
                time.sleep(0.05)
        for client in clients:
            client.close()


@pytest.fixture(scope="module")
def key(rsa_key: PrivateKey) -> PrivateKey:
    return rsa_key


@pytest.fixture(scope="module")
def records(key: PrivateKey) -> dict[str, str]:
    return {f"{SELECTOR}._domainkey.{DOMAIN}": f"v=DKIM1; k=rsa; p={key.public_key_b64()}"}


@pytest.fixture(scope="module")
def dns_server(records: dict[str, str]) -> Iterator[ScriptedDnsServer]:
    with ScriptedDnsServer(txt_records(records)) as server:
        yield server


def message(marker: str) -> bytes:
    return (
        f"From: Alice <alice@{DOMAIN}>\r\nTo: Bob <bob@example.net>\r\nSubject: {marker}\r\n"
        f"Message-ID: <{marker}@{DOMAIN}>\r\nDate: Thu, 1 Jan 2026 10:00:00 +0000\r\n\r\nHello {marker}\r\n"
    ).encode()


def test_legitimate_mail_flows_while_the_milter_socket_is_attacked(
    tmp_path: Path, key: PrivateKey, records: dict[str, str], dns_server: ScriptedDnsServer
) -> None:
    port = free_tcp_port()
    write_private_key(tmp_path / "rsa.key", key)
    config = tmp_path / "milter.toml"
    config.write_text(
        f'[milter]\nsocket = "inet:{port}@{LOOPBACK}"\nworkers = 1\nauthserv_id = "{AUTHSERV_ID}"\n'
        f'shutdown_grace = 2\n\n[routing]\ninternal_networks = ["127.0.0.0/8"]\n\n'
        f'[verify]\nnameservers = ["{dns_server.nameserver}"]\ndns_timeout = 2\n\n'
        f'[key_table.rsa]\ndomain = "{DOMAIN}"\nselector = "{SELECTOR}"\nfile = "{tmp_path / "rsa.key"}"\n\n'
        f'[signing_table]\n"{DOMAIN}" = ["rsa"]\n\n[limits]\nmax_forged_authres = 100\n'
    )
    resolver = InMemoryResolver(records)
    sent: list[tuple[str, bool]] = []  # (marker, incoming)
    logs: list[MilterProcess] = []

    def deliver(pf: PostfixInstance, marker: str, *, incoming: bool) -> float:
        body = message(marker)
        if incoming:  # signed elsewhere, arriving from outside: verified
            body = sign(body, key=key, domain=DOMAIN, selector=SELECTOR) + body
        started = time.monotonic()
        result = pf.submit(body, internal=not incoming, client=EXTERNAL if incoming else None)
        elapsed = time.monotonic() - started
        assert result.accepted, f"{marker}: {result.code} {result.text}\n" + "\n".join(logs[0].lines[-20:])
        sent.append((marker, incoming))
        return elapsed

    with (
        MilterProcess(["--config", str(config)], nofile=(NOFILE, NOFILE)) as milter,
        PostfixInstance(milters=f"inet:{LOOPBACK}:{port}") as pf,
    ):
        pid = milter.proc.pid
        logs.append(milter)
        assert milter.wait_for(r"max_connections lowered to 192", 60) is not None
        before = [deliver(pf, f"before-{i}", incoming=bool(i % 2)) for i in range(10)]
        rest = rss_mb(pid)
        log_lines_before = len(milter.lines)

        attack = Attack((LOOPBACK, port))
        attack.start()
        peak = rest
        during: list[float] = []
        started = time.monotonic()
        i = 0
        while time.monotonic() - started < ATTACK_SECONDS:
            during.append(deliver(pf, f"during-{i}", incoming=bool(i % 2)))
            peak = max(peak, rss_mb(pid))
            i += 1
            time.sleep(0.2)
        attack.stop()
        stopped = time.monotonic()
        deliver(pf, "after-0", incoming=False)
        recovered = time.monotonic() - stopped
        after = [deliver(pf, f"after-{i}", incoming=bool(i % 2)) for i in range(1, 6)]
        log_lines = len(milter.lines) - log_lines_before
        warnings = [line for line in milter.lines[log_lines_before:] if "WARNING" in line]

        delivered = pf.delivered(len(sent), timeout=60)

    by_subject = {}
    for item in delivered:
        for line in item.data.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                by_subject[line[9:].decode()] = item.data
    assert sorted(by_subject) == sorted(m for m, _ in sent), "a legitimate message was lost"
    for marker, incoming in sent:
        data = by_subject[marker]
        if incoming:
            assert f"Authentication-Results: {AUTHSERV_ID};".encode() in data
            assert b"dkim=pass" in data.split(b"\r\n\r\n", 1)[0]
        else:
            report = verify_sync(data, resolver=resolver)
            assert report.passed, marker
    flood = attack.flood_replies
    assert flood and all(text.startswith("550 5.7.1") for text in flood)
    print(
        f"\nunder attack ({attack.opens} hostile connections opened, {len(flood)} forged-A-R floods of 20,000"
        f" fields refused, {attack.deaf_sent / 2**20:.0f} MB sent by never-reading clients):"
        f"\n  legitimate mail: {len(sent)} messages, all accepted, delivered, signed or verified"
        f"\n  reply latency median {statistics.median(before) * 1000:.0f} ms before,"
        f" {statistics.median(during) * 1000:.0f} ms under attack (max {max(during) * 1000:.0f} ms),"
        f" {statistics.median(after) * 1000:.0f} ms after"
        f"\n  milter RSS {rest:.0f} MB at rest, {peak:.0f} MB peak under attack"
        f"\n  recovered (first message after the attack stopped) in {recovered:.2f} s"
        f"\n  milter log lines during the attack: {log_lines}, warnings among them:\n    "
        + "\n    ".join(warnings)
    )
    assert peak - rest < 150
    assert log_lines < 1000  # throttled: no storm
    assert recovered < 5
