"""A do-nothing milter that records what the MTA tells it, for checking the test harness.

It speaks the Sendmail milter protocol (version 6) just far enough to let every
message through unchanged, and keeps, per SMTP connection, the connect
information, the macros of each stage, HELO, envelope and header names. Tests
use it to see exactly what a real milter (mailseal's, OpenDKIM) is told by
Postfix: e.g. that after XCLIENT the milter gets a fresh connect event with the
XCLIENT address, and which ``{auth_authen}`` value a ``LOGIN=`` gives.

Packets are a 4-byte big-endian length, a command byte and the data.
"""

from __future__ import annotations

import socketserver
import struct
import threading
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"

_CONTINUE = b"c"
_SMFIP_HDR_LEADSPC = 0x100000  # ask for header values with their leading space kept
_STAGES = {"C": "connect", "H": "helo", "M": "mail", "R": "rcpt", "T": "data", "N": "eoh", "E": "eom"}


@dataclass
class MilterConnection:
    """What one milter conversation (one connect event) carried."""

    hostname: str = ""
    family: str = ""
    port: int = 0
    address: str = ""
    helo: str = ""
    mail_from: str = ""
    rcpt_to: list[str] = field(default_factory=list)
    header_names: list[str] = field(default_factory=list)
    macros: dict[str, dict[str, str]] = field(default_factory=dict)
    """Stage name (connect, helo, mail, rcpt, data, eoh, eom) -> macro name -> value."""
    completed_messages: int = 0

    def macro(self, name: str) -> str | None:
        """The latest value of a macro in any stage (``"{client_addr}"``, ``"_"``, ``"i"``)."""
        found = None
        for stage in ("connect", "helo", "mail", "rcpt", "data", "eoh", "eom"):
            found = self.macros.get(stage, {}).get(name, found)
        return found


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        current: MilterConnection | None = None
        while True:
            packet = self._read_packet()
            if packet is None:
                return
            command, data = chr(packet[0]), packet[1:]
            if command == "O":
                version, _actions, protocol = struct.unpack("!III", data[:12])
                self._send(b"O" + struct.pack("!III", min(version, 6), 0, protocol & _SMFIP_HDR_LEADSPC))
            elif command == "D":
                stage = _STAGES.get(chr(data[0]), chr(data[0]))
                items = data[1:].split(b"\0")
                pairs = dict(zip(items[0::2], items[1::2], strict=False))
                if current is None or stage == "connect":
                    current = self.server.milter._new_connection()
                current.macros.setdefault(stage, {}).update(
                    {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs.items()}
                )
            elif command == "C":
                if current is None or "connect" not in current.macros or current.hostname:
                    current = self.server.milter._new_connection()
                hostname, _, rest = data.partition(b"\0")
                current.hostname = hostname.decode(errors="replace")
                if rest:
                    current.family = chr(rest[0])
                    if current.family in "46":
                        current.port = struct.unpack("!H", rest[1:3])[0]
                        current.address = rest[3:].rstrip(b"\0").decode(errors="replace")
                    else:
                        current.address = rest[1:].rstrip(b"\0").decode(errors="replace")
                self._send(_CONTINUE)
            elif command in "ABQK":
                if command == "K":
                    current = None
                if command == "Q":
                    return
                if command == "B":
                    self._send(_CONTINUE)
            elif current is None:
                self._send(_CONTINUE)
            else:
                text = data.split(b"\0")
                if command == "H":
                    current.helo = text[0].decode(errors="replace")
                elif command == "M":
                    current.mail_from = text[0].decode(errors="replace")
                elif command == "R":
                    current.rcpt_to.append(text[0].decode(errors="replace"))
                elif command == "L":
                    current.header_names.append(text[0].decode(errors="replace"))
                elif command == "E":
                    current.completed_messages += 1
                self._send(_CONTINUE)

    def _read_packet(self) -> bytes | None:
        head = self._read_exactly(4)
        if head is None:
            return None
        (length,) = struct.unpack("!I", head)
        return self._read_exactly(length)

    def _read_exactly(self, size: int) -> bytes | None:
        chunks: list[bytes] = []
        while size:
            chunk = self.request.recv(size)
            if not chunk:
                return None
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _send(self, payload: bytes) -> None:
        self.request.sendall(struct.pack("!I", len(payload)) + payload)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, milter: RecordingMilter) -> None:
        self.milter = milter
        super().__init__((LOOPBACK, 0), _Handler)


class RecordingMilter:
    """A milter on ``inet:127.0.0.1:PORT`` that accepts everything and records each connection."""

    def __init__(self) -> None:
        """Prepare; it listens once started (``with RecordingMilter() as milter``)."""
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._connections: list[MilterConnection] = []

    @property
    def port(self) -> int:
        """The TCP port (after start)."""
        if self._server is None:
            raise RuntimeError("milter not started")
        port: int = self._server.server_address[1]
        return port

    @property
    def postfix_spec(self) -> str:
        """The address as ``smtpd_milters`` takes it."""
        return f"inet:{LOOPBACK}:{self.port}"

    def __enter__(self) -> Self:
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="recording-milter", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _new_connection(self) -> MilterConnection:
        connection = MilterConnection()
        with self._lock:
            self._connections.append(connection)
        return connection

    def connections(self) -> list[MilterConnection]:
        """Every conversation so far, in order (live objects: read them after the SMTP session ends)."""
        with self._lock:
            return list(self._connections)
