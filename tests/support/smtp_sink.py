"""A loopback SMTP sink for tests: accepts every message and keeps its exact bytes.

Postfix relays to it (``relayhost = [127.0.0.1]:PORT``); tests read back what was
delivered, byte for byte, to verify signatures and Authentication-Results. It
speaks just enough ESMTP for Postfix's smtp client: EHLO/HELO, MAIL, RCPT,
DATA (dot-unstuffed), RSET, NOOP, QUIT, with PIPELINING and 8BITMIME
advertised so Postfix never converts 8-bit bodies (which would break
signatures). One thread per connection; Postfix may deliver over several.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"
MAX_MESSAGE = 64 * 1024 * 1024


@dataclass(frozen=True)
class SinkMessage:
    """One delivered message: envelope and the exact message bytes (CRLF lines, dot-unstuffed)."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes
    helo: str
    received_at: float


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        sink = self.server.sink
        self._reply(f"220 {sink.hostname} ESMTP mailseal test sink")
        helo = ""
        mail_from: str | None = None
        rcpts: list[str] = []
        while True:
            line = self.rfile.readline(4096)
            if not line:
                return
            command = line.rstrip(b"\r\n").decode("ascii", errors="replace")
            verb = command[:4].upper()
            if verb == "EHLO":
                helo = command[5:].strip()
                self._reply(
                    f"250-{sink.hostname}", "250-PIPELINING", "250-8BITMIME", "250-SMTPUTF8", "250 SIZE"
                )
            elif verb == "HELO":
                helo = command[5:].strip()
                self._reply(f"250 {sink.hostname}")
            elif verb == "MAIL":
                mail_from = _path(command)
                rcpts = []
                self._reply("250 2.1.0 Ok")
            elif verb == "RCPT":
                if mail_from is None:
                    self._reply("503 5.5.1 Error: need MAIL command")
                else:
                    rcpts.append(_path(command))
                    self._reply("250 2.1.5 Ok")
            elif verb == "DATA":
                if mail_from is None or not rcpts:
                    self._reply("503 5.5.1 Error: need RCPT command")
                    continue
                self._reply("354 End data with <CR><LF>.<CR><LF>")
                data = self._read_data()
                if data is None:
                    return
                reply = sink.data_reply
                if reply.startswith("2"):
                    sink._store(SinkMessage(mail_from, tuple(rcpts), data, helo, time.monotonic()))
                else:
                    sink._refused += 1
                self._reply(reply)
                mail_from, rcpts = None, []
            elif verb == "RSET":
                mail_from, rcpts = None, []
                self._reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                self._reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                self._reply("221 2.0.0 Bye")
                return
            else:
                self._reply("502 5.5.2 Error: command not recognized")

    def _read_data(self) -> bytes | None:
        lines: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1 << 20)
            if not line:
                return None
            if line in (b".\r\n", b".\n"):
                return b"".join(lines)
            if line.startswith(b"."):
                line = line[1:]
            size += len(line)
            if size > MAX_MESSAGE:
                return None
            lines.append(line)

    def _reply(self, *lines: str) -> None:
        self.wfile.write("".join(f"{line}\r\n" for line in lines).encode("ascii"))
        self.wfile.flush()


def _path(command: str) -> str:
    """The address inside <...> of a MAIL FROM / RCPT TO command (parameters dropped)."""
    start, end = command.find("<"), command.find(">")
    return command[start + 1 : end] if 0 <= start < end else command.partition(":")[2].strip()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, sink: SmtpSink, address: tuple[str, int]) -> None:
        self.sink = sink
        super().__init__(address, _Handler)


class SmtpSink:
    """An SMTP server on 127.0.0.1 that stores every message it accepts.

    ``data_reply`` is the reply to the end of DATA; set it to e.g.
    ``"451 4.3.0 try again later"`` to make the next hop temporarily refuse
    mail (refused messages are not stored, only counted in ``refused``).
    """

    def __init__(self, *, hostname: str = "sink.mailseal.test", port: int = 0) -> None:
        """Prepare the sink; it listens once started (``with SmtpSink() as sink``)."""
        self.hostname = hostname
        self.data_reply = "250 2.0.0 Ok: stored"
        self._requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._messages: list[SinkMessage] = []
        self._refused = 0
        self._changed = threading.Condition()

    @property
    def port(self) -> int:
        """The TCP port it listens on (after start)."""
        if self._server is None:
            raise RuntimeError("sink not started")
        port: int = self._server.server_address[1]
        return port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``."""
        return (LOOPBACK, self.port)

    @property
    def refused(self) -> int:
        """How many messages were refused because ``data_reply`` was not 2xx."""
        return self._refused

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Listen on a free loopback port and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("sink already started")
        self._server = _Server(self, (LOOPBACK, self._requested_port))
        self._thread = threading.Thread(target=self._server.serve_forever, name="smtp-sink", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def _store(self, message: SinkMessage) -> None:
        with self._changed:
            self._messages.append(message)
            self._changed.notify_all()

    def messages(self) -> list[SinkMessage]:
        """Every message stored so far, in arrival order."""
        with self._changed:
            return list(self._messages)

    def clear(self) -> None:
        """Forget the stored messages."""
        with self._changed:
            self._messages.clear()

    def wait_for_message(
        self, predicate: Callable[[SinkMessage], bool], timeout: float = 60.0
    ) -> SinkMessage:
        """Wait for the first stored message ``predicate`` accepts (raises TimeoutError)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for message in self._messages:
                    if predicate(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching message among {len(self._messages)} after {timeout} s")
                self._changed.wait(left)

    def wait_for(self, count: int, timeout: float = 60.0) -> list[SinkMessage]:
        """Wait until at least ``count`` messages are stored; return them (raises TimeoutError)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"{len(self._messages)} of {count} messages delivered after {timeout} s"
                    )
                self._changed.wait(left)
            return list(self._messages)


def port_is_open(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0
