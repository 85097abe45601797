"""The page's routing, escaping and Host check, and the metrics text, without a browser."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailseal.cli.main import main
from mailseal.reports.metrics import MAX_SERIES, render_metrics
from mailseal.reports.serve import (
    EVICT_MIN_IDLE,
    MAX_CONNECTIONS,
    PageContext,
    PageServer,
    make_server,
    render,
)
from mailseal.reports.sqlite_store import SqliteReportStore
from mailseal.reports.xmlparse import parse_report_bytes
from support.clock import FIXED_NOW
from support.dmarc_reports import Row, Sig, Spec, report_xml

EVIL = 'x"} 1\nmailseal_fake 9 <script>\\'


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteReportStore]:
    opened = SqliteReportStore(tmp_path / "r.db")
    for n, reporter in enumerate(["google.com", EVIL]):
        spec = Spec(
            reporter=reporter,
            report_id=f"r{n}",
            begin=FIXED_NOW - 86400,
            rows=[Row(count=4, sigs=[Sig("example.com", "s1")])],
        )
        opened.add(parse_report_bytes(report_xml(spec)), source="t", now=FIXED_NOW)
    yield opened
    opened.close()


def test_metrics_escape_labels_and_count(store: SqliteReportStore) -> None:
    text = render_metrics(store, now=FIXED_NOW)
    assert 'mailseal_dmarc_messages{domain="example.com",selector="s1",receiver="google.com"} 4' in text
    assert 'receiver="x\\"} 1\\nmailseal_fake 9 <script>\\\\"} 4' in text
    assert not any(line.startswith("mailseal_fake") for line in text.splitlines())
    assert (
        'mailseal_dmarc_dkim_pass_ratio{domain="example.com",selector="s1",receiver="google.com"} 1' in text
    )
    assert "mailseal_dmarc_reports 2" in text


def test_metrics_series_are_capped(tmp_path: Path) -> None:
    store = SqliteReportStore(tmp_path / "many.db")
    for n in range(MAX_SERIES + 20):
        spec = Spec(
            reporter=f"r{n}.example",
            report_id=f"r{n}",
            begin=FIXED_NOW - 86400,
            rows=[Row(count=1, sigs=[Sig("example.com", "s1")])],
        )
        store.add(parse_report_bytes(report_xml(spec)), source="t", now=FIXED_NOW)
    text = render_metrics(store, now=FIXED_NOW)
    store.close()
    messages = [line for line in text.splitlines() if line.startswith("mailseal_dmarc_messages{")]
    assert len(messages) == MAX_SERIES + 1
    assert 'receiver="other"} 20' in text


def test_pages_escape_everything_from_reports(store: SqliteReportStore) -> None:
    ctx = PageContext(store, None, lambda: FIXED_NOW)
    status, ctype, page = render(ctx, "/d/example.com")
    assert (status, ctype) == (200, "text/html; charset=utf-8")
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert render(ctx, "/d/nothere.example")[0] == 404
    assert render(ctx, "/nope")[0] == 404
    status, _, page = render(ctx, "/records?domain=example.com&selector=s1&receiver=" + "x%22%7D")
    assert status == 200
    assert "<script>" not in render(ctx, "/records?domain=example.com&selector=s1")[2]


def test_server_checks_host_and_sends_a_strict_policy(store: SqliteReportStore) -> None:
    server = make_server(PageContext(store, None, lambda: FIXED_NOW), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200
        assert "default-src 'none'" in (answer.getheader("Content-Security-Policy") or "")
        conn.request("GET", "/", headers={"Host": "attacker.example"})
        refused = conn.getresponse()
        refused.read()
        assert refused.status == 421
        conn.request("POST", "/", body=b"x")
        posted = conn.getresponse()
        posted.read()
        assert posted.status == 501
        conn.close()
    finally:
        server.shutdown()
        server.server_close()


def test_serve_refuses_a_public_address_without_public(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["reports", "serve", "--store", str(tmp_path / "r.db"), "--listen", "0.0.0.0:8025"])
    assert status == 2
    assert "not a loopback address; add --public" in capsys.readouterr().err


def test_metrics_command_prints_the_text(
    store: SqliteReportStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reports", "metrics", "--store", str(store.path), "--now", str(FIXED_NOW)]) == 0
    assert "mailseal_dmarc_reports 2" in capsys.readouterr().out


def _serving(store: SqliteReportStore) -> tuple[PageServer, int]:
    server = make_server(PageContext(store, None, lambda: FIXED_NOW), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, server.server_address[1]


def _wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def _closed(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_connections_over_the_cap_are_closed_not_threaded(store: SqliteReportStore) -> None:
    """All slots held by connections just opened (none idle long enough to evict): a new one is closed."""
    server, port = _serving(store)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(MAX_CONNECTIONS)]
    try:
        assert _wait_until(lambda: server.connection_count == MAX_CONNECTIONS)
        extra = socket.create_connection(("127.0.0.1", port), timeout=30)
        idle.append(extra)
        # Closed without an answer, or (on a host so slow that EVICT_MIN_IDLE passed) let in
        # in place of the stalest: either way no thread beyond the cap.
        assert _closed(extra, 30) or _closed(idle[0], 1)
        assert server.connection_count <= MAX_CONNECTIONS
        assert threading.active_count() < MAX_CONNECTIONS + 10
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()
        server.server_close()


def test_idle_connections_at_the_cap_cannot_lock_a_reader_out(store: SqliteReportStore) -> None:
    """32 connections that never send a request (a browser's spare preconnects, a slowloris) held
    every slot until the 20 s request deadline; the stalest now makes room for a new reader."""
    server, port = _serving(store)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(MAX_CONNECTIONS)]
    try:
        assert _wait_until(lambda: server.connection_count == MAX_CONNECTIONS)
        time.sleep(EVICT_MIN_IDLE + 0.2)
        reader = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        reader.request("GET", "/style.css", headers={"Host": f"127.0.0.1:{port}"})
        assert reader.getresponse().status == 200
        reader.close()
        assert _closed(idle[0], 30)  # the stalest made room
        assert not any(_closed(sock, 0.05) for sock in idle[1:])  # and only it
        assert server.connection_count <= MAX_CONNECTIONS
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()
        server.server_close()


def test_a_slowloris_client_is_cut_at_the_request_deadline(
    store: SqliteReportStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One byte every 0.2 s never trips the 15 s read timeout; the absolute deadline must cut it.

    Before the deadline, 32 such clients (one byte each 14 s) held every slot
    of the page server for as long as they liked.
    """
    import socket
    import time

    from mailseal.reports import serve

    monkeypatch.setattr(serve, "REQUEST_DEADLINE", 1.5)
    server = make_server(PageContext(store, None, lambda: FIXED_NOW), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    port = server.server_address[1]
    start = time.monotonic()
    closed_after = None
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as slow:
            request = b"GET / HTTP/1.1\r\n" + b"X-A: " + b"a" * 200
            for byte in request:
                try:
                    slow.sendall(bytes((byte,)))
                except OSError:
                    closed_after = time.monotonic() - start
                    break
                slow.settimeout(0.2)
                try:
                    if slow.recv(1) == b"":
                        closed_after = time.monotonic() - start
                        break
                except TimeoutError:
                    pass
        assert closed_after is not None, "the trickling client was never cut"
        assert closed_after < 4
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)  # the server still answers
        connection.request("GET", "/style.css", headers={"Host": f"127.0.0.1:{port}"})
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        server.shutdown()
        server.server_close()


def test_clients_that_reset_cost_no_traceback_each(
    store: SqliteReportStore, capfd: pytest.CaptureFixture[str]
) -> None:
    """socketserver prints a full traceback to standard error for every connection that fails;
    a client resetting its connections at will must not make a log storm of them."""
    import socket
    import struct
    import time

    server = make_server(PageContext(store, None, lambda: FIXED_NOW), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        for _ in range(30):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as rude:
                rude.sendall(b"GET /d/example.com?days=365 HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
                rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
            with socket.create_connection(("127.0.0.1", port), timeout=5) as broken:
                broken.sendall(
                    b"GET / HTTP/1.0\r\nHost: 127.0.0.1:%d\r\nX: " % port + b"x" * 70_000 + b"\r\n\r\n"
                )
        time.sleep(0.5)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/style.css", headers={"Host": f"127.0.0.1:{port}"})
        assert connection.getresponse().status == 200
        connection.close()
    finally:
        server.shutdown()
        server.server_close()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[:2000]
    assert err.count("\n") <= 2


def test_a_request_head_is_bounded(store: SqliteReportStore) -> None:
    """The standard library reads up to 100 header lines of 64 KiB (6.5 MB per connection,
    200 MB over the 32 slots); the page server stops at REQUEST_HEAD_BYTES and says so."""
    import socket

    from mailseal.reports.serve import REQUEST_HEAD_BYTES

    server = make_server(PageContext(store, None, lambda: FIXED_NOW), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as big:
            big.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n" % port)
            line = b"X-Pad: " + b"x" * 60_000 + b"\r\n"
            for _ in range(REQUEST_HEAD_BYTES // len(line) + 2):  # never the blank line that ends the head
                big.sendall(line)
            assert big.recv(100).startswith(b"HTTP/1.0 431"), "still reading the head"
    finally:
        server.shutdown()
        server.server_close()
