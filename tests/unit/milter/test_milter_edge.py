"""The milter's edge under attack, on a raw milter socket (issue 8 items 3, 4, 5, 9, 10).

Each test is an attack first: it fails on a milter without the limit it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from mailseal import PrivateKey, sign
from mailseal.core.txtanswer import TxtAnswer
from mailseal.dns.memory import InMemoryResolver
from mailseal.milter import server as server_module
from mailseal.milter.connection import WRITE_HIGH
from mailseal.milter.loading import load
from mailseal.milter.server import connection_cap
from support.clock import FIXED_NOW
from support.milter_client import MilterClient, MilterClosed
from support.milter_harness import MESSAGE, ServerThread, dns_records, write_config

EXTERNAL = "192.0.2.44"
Keys = Mapping[str, tuple[PrivateKey | None, str, str]]


@pytest.fixture
def keys(rsa_key: PrivateKey) -> Keys:
    return {"rsa": (rsa_key, "example.com", "rsa2026")}


def start(tmp_path: Path, keys: Keys, extra: str = "", resolver: object | None = None) -> ServerThread:
    path = write_config(tmp_path, keys, {"*@example.com": list(keys)}, extra)
    return ServerThread(
        load(str(path)),
        resolver=resolver or InMemoryResolver(dns_records(keys)),  # type: ignore[arg-type]
        clock=lambda: FIXED_NOW,
        config_path=str(path),
    )


def session(address: tuple[str, int] | str, client_ip: str = "127.0.0.1", **negotiate: int) -> MilterClient:
    client = MilterClient(address)
    client.negotiate(**negotiate)
    client.macros(b"C", {"j": "mx.test"})
    client.connect(address=client_ip)
    return client


def frame(command: bytes, payload: bytes = b"") -> bytes:
    return struct.pack("!I", len(payload) + 1) + command + payload


def header_frame(name: bytes, value: bytes) -> bytes:
    return frame(b"L", name + b"\0" + value + b"\0")


def wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


# -- item 3: forged Authentication-Results, each reported form, at the milter -----------------


@pytest.mark.parametrize(
    "value",
    [
        b" (" + b"c" * 1100 + b") mx.test; dkim=pass header.d=bank.example",
        b" " + b" " * 1100 + b"mx.test; dkim=pass",
        b" mx.test.; dkim=pass",
        b" mx.test/12345; dkim=pass",
        b"\rmx.test; dkim=pass",
        b"\x0bmx.test; dkim=pass",
        b"\x00mx.test; dkim=pass",
        b"\xc2\xa0mx.test; dkim=pass",
        b" (" * 100 + b"x",  # cannot be read within our limits: treated as forged
        b" =?utf-8?b?bXgudGVzdA==?=; dkim=pass",  # an encoded-word a mail client decodes to our id
        b" =?utf-8?q?mx=2Etest=3B_dkim=3Dpass?=",
    ],
)
def test_every_form_of_a_forged_authentication_results_is_removed(
    tmp_path: Path, keys: Keys, value: bytes
) -> None:
    forged = MESSAGE.replace(b"Subject:", b"Authentication-Results:" + value + b"\r\nSubject:")
    with start(tmp_path, keys) as running, session(running.address, EXTERNAL) as client:
        result = client.send_message(forged)
    assert [(a.kind, a.index, a.value) for a in result.actions if a.kind == "change"] == [("change", 1, b"")]


# -- item 9: a flood of forged fields ----------------------------------------------------------


def test_a_flood_of_forged_authentication_results_costs_one_reply(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mailseal")
    count = 200_000
    with start(tmp_path, keys) as running, session(running.address, EXTERNAL) as client:
        client.macros(b"M", {"i": "FLOOD1"})
        client.mail("eve@evil.example")
        burst = header_frame(b"Authentication-Results", b" mx.test; dkim=pass") * count
        burst += header_frame(b"From", b" eve@evil.example") + frame(b"N") + frame(b"B", b"hi\r\n")
        started = time.monotonic()
        client.send_raw(burst)
        result = client.end_of_message()
        elapsed = time.monotonic() - started
    assert result.reply == b"y"  # a reply code, not 200,001 frames
    assert result.text.startswith("550 5.7.1 ")
    assert not result.actions
    assert elapsed < 30
    assert any("cause=authres_flood" in r.getMessage() for r in caplog.records)


def test_at_the_flood_limit_every_forgery_is_still_removed(tmp_path: Path, keys: Keys) -> None:
    with (
        start(tmp_path, keys, "[limits]\nmax_forged_authres = 3\n") as running,
        session(running.address, EXTERNAL) as client,
    ):
        three = MESSAGE.replace(
            b"Subject:", b"Authentication-Results: mx.test; dkim=pass\r\n" * 3 + b"Subject:"
        )
        assert len([a for a in client.send_message(three).actions if a.kind == "change"]) == 3
        four = MESSAGE.replace(
            b"Subject:", b"Authentication-Results: mx.test; dkim=pass\r\n" * 4 + b"Subject:"
        )
        assert client.send_message(four).text.startswith("550 5.7.1 ")


def test_authres_flood_cannot_be_set_to_accept(tmp_path: Path, keys: Keys) -> None:
    from mailseal.errors import ConfigError

    path = write_config(tmp_path, keys, {}, '[on_failure]\nauthres_flood = "accept"\n')
    with pytest.raises(ConfigError, match="authres_flood cannot be accept"):
        load(str(path))


# -- item 4: connection cap, refusal, deadlines -------------------------------------------------


def test_beyond_the_cap_the_stalest_idle_connection_makes_room(tmp_path: Path, keys: Keys) -> None:
    # The negotiation deadline far away: on a slow host none of the five may close by it (only one goes).
    with start(tmp_path, keys, "[limits]\nmax_connections = 5\nnegotiate_timeout = 120\n") as running:
        idle = [MilterClient(running.address).sock for _ in range(5)]
        assert wait_for(lambda: running.server.connection_count == 5)
        time.sleep(1.2)  # older than EVICT_MIN_IDLE
        with session(running.address) as client:  # legitimate mail still gets in
            assert client.send_message(MESSAGE).verdict == "continue"
        closed = 0
        for sock in idle:
            sock.settimeout(0.5)
            try:
                closed += sock.recv(1) == b""
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed += 1
            sock.close()
        assert closed == 1  # exactly one made room
        assert running.server.connection_count <= 5


def test_beyond_the_cap_with_every_connection_active_a_new_one_is_refused_at_once(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "Just negotiated" must still hold when the host stalls the test for a second or more
    # (a stall past EVICT_MIN_IDLE made a busy connection evictable and the new one admitted).
    monkeypatch.setattr(server_module, "EVICT_MIN_IDLE", 120.0)
    with start(tmp_path, keys, "[limits]\nmax_connections = 3\nnegotiate_timeout = 120\n") as running:
        busy = [session(running.address) for _ in range(3)]  # just negotiated: active, not evictable
        refused = MilterClient(running.address)
        assert refused.at_eof(timeout=30)  # closed long before its negotiation deadline: refused
        refused.close()
        for client in busy:
            client.close()


@pytest.mark.parametrize(
    "chatter",
    [
        frame(b"A"),  # an abort outside any message
        frame(b"D", b"C" + b"j\0mx.test\0"),  # macros for nothing
        frame(b"M", b"<e@evil.example>\0") + frame(b"A"),  # a transaction begun and dropped
        header_frame(b"X-Slow", b"x"),  # inside a message (opened below) that never ends
    ],
)
def test_chatter_that_never_finishes_a_message_does_not_hold_a_slot(
    tmp_path: Path, keys: Keys, chatter: bytes
) -> None:
    """Connections at the cap that send a cheap command every 0.3 s looked active forever
    (until ``connection_lifetime``, an hour) and locked every new MTA connection out."""
    with start(tmp_path, keys, "[limits]\nmax_connections = 3\n") as running:
        attackers = [session(running.address) for _ in range(3)]
        if chatter[4:5] == b"L":  # header chatter: inside a message
            for attacker in attackers:
                attacker.mail("eve@evil.example")
        stop = threading.Event()

        def chatter_on() -> None:
            while not stop.is_set():
                for attacker in attackers:
                    with contextlib.suppress(OSError):  # an evicted attacker
                        attacker.send_raw(chatter)
                stop.wait(0.3)

        thread = threading.Thread(target=chatter_on, daemon=True)
        thread.start()
        try:
            time.sleep(1.5)  # past EVICT_MIN_IDLE since their negotiation
            with session(running.address) as client:  # legitimate mail still gets in
                assert client.send_message(MESSAGE).verdict == "continue"
        finally:
            stop.set()
            thread.join()
            for attacker in attackers:
                attacker.close()


def test_the_cap_fits_the_descriptor_limit() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert connection_cap(10**9) <= soft
    assert connection_cap(5) == 5


def test_an_idle_connection_that_never_negotiates_is_closed(tmp_path: Path, keys: Keys) -> None:
    # Nothing else would close it within the wait: idle_timeout and the lifetime are far longer.
    with start(tmp_path, keys, "[limits]\nnegotiate_timeout = 0.5\nidle_timeout = 600\n") as running:
        client = MilterClient(running.address)
        assert client.at_eof(timeout=60)
        client.close()


def test_trickling_bytes_does_not_extend_a_deadline(tmp_path: Path, keys: Keys) -> None:
    with start(tmp_path, keys, "[limits]\nnegotiate_timeout = 1\n") as running:
        client = MilterClient(running.address)
        negotiate = frame(b"O", struct.pack("!III", 6, 0x1FF, 0x1FFFFF))
        started = time.monotonic()
        with pytest.raises(OSError):  # slowloris: one byte every 0.1 s, never a whole command
            for byte in negotiate * 100:
                client.send_raw(bytes([byte]))
                time.sleep(0.1)
        assert time.monotonic() - started < 60  # the trickle alone lasts 170 s
        client.close()


def test_a_message_trickled_as_whole_commands_meets_its_deadline(tmp_path: Path, keys: Keys) -> None:
    with start(tmp_path, keys, "[limits]\nmessage_timeout = 1\nidle_timeout = 60\n") as running:
        client = session(running.address, EXTERNAL)
        client.mail("eve@evil.example")
        started = time.monotonic()
        with pytest.raises((OSError, MilterClosed)):
            for _ in range(300):  # a complete header every 0.2 s: active, but never finishing
                client.header("X-Slow", b" x")
                time.sleep(0.2)
        assert time.monotonic() - started < 40  # the trickle alone lasts 60 s
        client.close()


def test_warnings_from_a_flood_are_throttled(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "mailseal")
    with start(tmp_path, keys, "[limits]\nnegotiate_timeout = 0.2\n") as running:
        for _ in range(50):  # 50 protocol errors
            with MilterClient(running.address) as client:
                client.send_raw(frame(b"?", b"junk"))
                client.at_eof(timeout=2)
    lines = [r for r in caplog.records if "closing a milter connection" in r.getMessage()]
    assert 1 <= len(lines) <= 2


# -- item 5: back-pressure both ways ----------------------------------------------------------


def _send_until_blocked(sock: socket.socket, data: bytes, limit: int, stall: float = 1.5) -> int:
    """Send ``data`` repeatedly until the peer stops reading (``stall`` s without progress) or ``limit``."""
    sock.setblocking(False)
    sent = 0
    view = memoryview(data)
    offset = 0
    last = time.monotonic()
    while sent < limit and time.monotonic() - last < stall:
        try:
            n = sock.send(view[offset:])
        except BlockingIOError:
            time.sleep(0.01)
            continue
        sent += n
        offset = (offset + n) % len(data)
        last = time.monotonic()
    return sent


def test_a_client_that_never_reads_replies_is_not_read_either(tmp_path: Path, keys: Keys) -> None:
    with start(tmp_path, keys) as running:
        client = session(running.address, protocol=0)  # no "no reply" flags: every header is answered
        client.mail("alice@example.com")
        burst = header_frame(b"X", b"y") * 10_000
        sent = _send_until_blocked(client.sock, burst, limit=200 * 1024 * 1024)
        assert sent < 32 * 1024 * 1024  # the milter stopped reading: it did not take 200 MB
        buffered = running.call(running.server.largest_write_buffer)
        assert buffered <= WRITE_HIGH + 512 * 1024
        client.close()


class _StalledResolver:
    """A key lookup that takes long: the end of message waits for it."""

    async def lookup_txt(self, name: str) -> TxtAnswer:
        await asyncio.sleep(30)
        raise AssertionError("not reached")


def test_nothing_is_read_while_a_reply_is_pending(tmp_path: Path, keys: Keys, rsa_key: PrivateKey) -> None:
    signed = sign(MESSAGE, key=rsa_key, domain="example.com", selector="rsa2026", now=FIXED_NOW) + MESSAGE
    with start(tmp_path, keys, resolver=_StalledResolver()) as running:
        client = session(running.address, EXTERNAL)
        client.macros(b"M", {"i": "Q1"})
        client.mail("alice@example.com")
        from support.milter_client import split_message

        fields, body = split_message(signed)
        data = b"".join(header_frame(n.encode(), v) for n, v in fields) + frame(b"N") + frame(b"B", body)
        client.send_raw(data + frame(b"E"))  # end of message: the lookup is pending
        time.sleep(0.3)
        sent = _send_until_blocked(client.sock, frame(b"B", b"x" * 60_000), limit=200 * 1024 * 1024)
        assert sent < 32 * 1024 * 1024
        client.close()


# -- item 10: log lines escape what came from the wire ----------------------------------------


def test_log_lines_escape_newlines_and_control_characters(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mailseal")
    with start(tmp_path, keys) as running, session(running.address, EXTERNAL) as client:
        client.send_message(MESSAGE, queue_id="Q1\nqid=FORGED action=accept\x1b]0;title\x07")
    lines = [r.getMessage() for r in caplog.records if "qid=" in r.getMessage()]
    assert lines
    for line in lines:
        assert "\n" not in line and "\x1b" not in line and "\x07" not in line
        assert "qid=FORGED" not in line
        assert line.count("qid=") == 1


def test_escape_keeps_readable_text_and_escapes_the_rest() -> None:
    from mailseal.milter.logline import escape

    assert escape("bücher.example") == "bücher.example"
    assert escape("a b=c\\d\r\n\x00\x7f\u2028") == "a\\x20b\\x3dc\\\\d\\x0d\\x0a\\x00\\x7f\\u2028"


def test_a_flood_of_fresh_idle_connections_never_locks_out_a_negotiating_mta(
    tmp_path: Path, keys: Keys
) -> None:
    with start(tmp_path, keys, "[limits]\nmax_connections = 5\n") as running:
        flood = [MilterClient(running.address).sock for _ in range(20)]  # young, never negotiating
        assert wait_for(lambda: running.server.connection_count == 5)
        with session(running.address) as client:  # negotiates at once: one of the idle ones makes room
            assert client.send_message(MESSAGE).verdict == "continue"
        for sock in flood:
            sock.close()


def test_a_flood_accepted_in_one_burst_beyond_the_cap_never_locks_out_a_negotiating_mta(
    tmp_path: Path, keys: Keys
) -> None:
    """Seen under CI load: the flood arrived in one accept burst, each extra connection evicted
    one already adopted, none of the new ones was a Connection yet, and the MTA queued behind
    them was refused ("0 open, all active"). Connections still being set up must make room too."""
    with start(tmp_path, keys, "[limits]\nmax_connections = 5\nnegotiate_timeout = 120\n") as running:
        with running.stalled():  # everything below waits in the listen queue, then comes in one burst
            flood = [MilterClient(running.address).sock for _ in range(20)]
            client = MilterClient(running.address, timeout=30)
            refused: list[OSError] = []

            def negotiate() -> None:
                try:
                    client.negotiate()
                except OSError as exc:  # MilterClosed, a reset
                    refused.append(exc)

            negotiating = threading.Thread(target=negotiate)
            negotiating.start()  # its negotiation is sent and waits to be read
        negotiating.join(60)
        assert not refused, f"the negotiating MTA was refused: {refused}"
        assert client.negotiated is not None
        client.macros(b"C", {"j": "mx.test"})
        client.connect(address="127.0.0.1")
        assert client.send_message(MESSAGE).verdict == "continue"
        client.close()
        for sock in flood:
            sock.close()
        assert wait_for(lambda: running.server.connection_count <= 5)


def test_a_metrics_request_is_bounded() -> None:
    from mailseal.milter.metrics_http import MAX_REQUEST, MetricsRequest

    request = MetricsRequest()
    assert request.receive(b"GET /metrics HTTP/1.1\r\n") is None  # waits for the end of the head
    endless = MetricsRequest()
    answer = None
    for _ in range(MAX_REQUEST):  # a head that never ends: answered 431 past the bound
        answer = endless.receive(b"X-Long: " + b"x" * 64 + b"\r\n")
        if answer is not None:
            break
    assert answer is not None and answer.startswith(b"HTTP/1.0 431")
