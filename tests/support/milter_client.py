"""A scripted MTA for milter tests: speaks the milter protocol over a real socket, like Postfix.

Independent of ``mailseal.milter.codec`` on purpose (its own framing, written
from the protocol description), so tests do not check the codec against
itself. It negotiates, sends macros and the SMTP events, the header fields,
the body in as many chunks as asked, then collects the filter's actions and
its final reply. ``apply_actions`` then edits the message the way Postfix
does, giving the bytes a recipient would see.
"""

from __future__ import annotations

import re
import socket
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# Protocol constants, as the MTA side knows them.
ALL_ACTIONS = 0x1FF
ALL_PROTOCOL = 0x1FFFFF  # Postfix 3.7 offers every flag up to HDR_LEADSPC
NR_FLAGS = {
    b"C": 0x1000,
    b"H": 0x2000,
    b"M": 0x4000,
    b"R": 0x8000,
    b"T": 0x10000,
    b"U": 0x20000,
    b"L": 0x80,
    b"N": 0x40000,
    b"B": 0x80000,
}
NO_FLAGS = {
    b"C": 0x1,
    b"H": 0x2,
    b"M": 0x4,
    b"R": 0x8,
    b"B": 0x10,
    b"L": 0x20,
    b"N": 0x40,
    b"U": 0x100,
    b"T": 0x200,
}
LEADING_SPACE = 0x100000
FINAL_REPLIES = frozenset(b"cartdy")


class MilterClosed(ConnectionError):
    """The filter closed the connection."""


@dataclass(frozen=True)
class Negotiated:
    """The filter's answer to option negotiation."""

    version: int
    actions: int
    protocol: int
    macros: dict[int, list[str]]

    @property
    def leading_space(self) -> bool:
        return bool(self.protocol & LEADING_SPACE)


@dataclass(frozen=True)
class Action:
    """One modification the filter asked for at end of message."""

    kind: str  # "insert", "change", "add", "quarantine", "progress"
    index: int = 0
    name: str = ""
    value: bytes = b""


@dataclass
class Result:
    """What the filter answered at end of message."""

    actions: list[Action] = field(default_factory=list)
    reply: bytes = b""
    """The final reply command: b"c" continue, b"a" accept, b"r" reject, b"t" tempfail, b"y" reply code."""
    text: str = ""
    """For b"y": the SMTP reply line."""

    @property
    def verdict(self) -> str:
        return {
            b"c": "continue",
            b"a": "accept",
            b"r": "reject",
            b"t": "tempfail",
            b"d": "discard",
            b"y": "reject" if self.text.startswith("5") else "tempfail",
        }[self.reply]

    def inserted(self, name: str) -> list[Action]:
        return [a for a in self.actions if a.kind == "insert" and a.name.lower() == name.lower()]


def split_message(message: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    """(name, value exactly as after the colon with folds as bare LF) pairs, and the body."""
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        head, body = message, b""
    fields: list[tuple[str, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\n" + line)
            continue
        raw_name, _, value = line.partition(b":")
        fields.append((raw_name.decode("ascii"), value))
    return fields, body


class MilterClient:
    """One MTA-to-filter connection."""

    def __init__(self, address: tuple[str, int] | str, *, timeout: float = 10.0) -> None:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(address)
        except OSError:
            self.sock.close()
            raise
        if family == socket.AF_INET:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.negotiated: Negotiated | None = None
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> MilterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- framing
    def send(self, command: bytes, payload: bytes = b"") -> None:
        self.sock.sendall(struct.pack("!I", len(payload) + 1) + command + payload)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_packet(self) -> tuple[bytes, bytes]:
        while True:
            if len(self._buffer) >= 4:
                (length,) = struct.unpack("!I", self._buffer[:4])
                if len(self._buffer) >= 4 + length:
                    packet = self._buffer[4 : 4 + length]
                    self._buffer = self._buffer[4 + length :]
                    return packet[:1], packet[1:]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise MilterClosed("the filter closed the connection")
            self._buffer += chunk

    def at_eof(self, timeout: float = 30.0) -> bool:
        """True when the filter closes the connection within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    # -- events
    def negotiate(
        self, *, version: int = 6, actions: int = ALL_ACTIONS, protocol: int = ALL_PROTOCOL
    ) -> Negotiated:
        self.send(b"O", struct.pack("!III", version, actions, protocol))
        command, payload = self.read_packet()
        assert command == b"O", command
        got_version, got_actions, got_protocol = struct.unpack("!III", payload[:12])
        macros: dict[int, list[str]] = {}
        rest = payload[12:]
        while rest:
            (stage,) = struct.unpack("!I", rest[:4])
            names, _, rest = rest[4:].partition(b"\0")
            macros[stage] = names.decode().split()
        self.negotiated = Negotiated(got_version, got_actions, got_protocol, macros)
        return self.negotiated

    def _event(self, command: bytes, payload: bytes = b"") -> bytes | None:
        """Send an event; read the reply unless the filter said it sends none."""
        self.send(command, payload)
        assert self.negotiated is not None
        if self.negotiated.protocol & NR_FLAGS.get(command, 0):
            return None
        command_reply, _ = self.read_packet()
        return command_reply

    def macros(self, stage: bytes, values: Mapping[str, str]) -> None:
        payload = stage + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in values.items())
        self.send(b"D", payload)

    def connect(
        self, hostname: str = "client.example", address: str = "127.0.0.1", port: int = 40000
    ) -> bytes | None:
        family = b"6" if ":" in address else b"4"
        payload = hostname.encode() + b"\0" + family + struct.pack("!H", port) + address.encode() + b"\0"
        return self._event(b"C", payload)

    def connect_unix(self, hostname: str = "localhost", path: str = "/var/run/x") -> bytes | None:
        return self._event(b"C", hostname.encode() + b"\0L" + struct.pack("!H", 0) + path.encode() + b"\0")

    def mail(self, sender: str, *args: str) -> bytes | None:
        return self._event(b"M", b"".join(s.encode() + b"\0" for s in (f"<{sender}>", *args)))

    def rcpt(self, recipient: str) -> bytes | None:
        return self._event(b"R", f"<{recipient}>".encode() + b"\0")

    def header(self, name: str, value: bytes) -> bytes | None:
        """``value`` is as after the colon (folds as bare LF); one leading space is eaten like Postfix does."""
        assert self.negotiated is not None
        if not self.negotiated.leading_space and value.startswith(b" "):
            value = value[1:]
        return self._event(b"L", name.encode() + b"\0" + value + b"\0")

    def end_of_headers(self) -> bytes | None:
        return self._event(b"N")

    def body(self, chunk: bytes) -> bytes | None:
        return self._event(b"B", chunk)

    def end_of_message(self) -> Result:
        self.send(b"E")
        result = Result()
        while True:
            command, payload = self.read_packet()
            if command in (b"i", b"m"):
                (index,) = struct.unpack("!I", payload[:4])
                name, _, rest = payload[4:].partition(b"\0")
                kind = "insert" if command == b"i" else "change"
                result.actions.append(Action(kind, index, name.decode(), rest.removesuffix(b"\0")))
            elif command == b"h":
                name, _, rest = payload.partition(b"\0")
                result.actions.append(Action("add", 0, name.decode(), rest.removesuffix(b"\0")))
            elif command == b"q":
                result.actions.append(Action("quarantine", value=payload.removesuffix(b"\0")))
            elif command == b"p":
                continue
            elif command[0] in FINAL_REPLIES:
                result.reply = command
                result.text = payload.removesuffix(b"\0").decode()
                return result
            else:
                raise AssertionError(f"unexpected packet {command!r} at end of message")

    def abort(self) -> None:
        self.send(b"A")

    def quit(self) -> None:
        self.send(b"Q")

    # -- a whole message
    def send_message(
        self,
        message: bytes,
        *,
        sender: str = "alice@example.com",
        recipients: Sequence[str] = ("bob@example.net",),
        chunks: int | Sequence[int] = 1,
        queue_id: str = "4ABC123",
        auth: str | None = None,
    ) -> Result:
        """MAIL, RCPT, DATA, header fields, body in ``chunks`` pieces (a count or sizes), EOM."""
        fields, body = split_message(message)
        mail_macros = {"i": queue_id, "mail_addr": sender}
        if auth is not None:
            mail_macros["auth_authen"] = auth
        self.macros(b"M", mail_macros)
        self.mail(sender)
        for recipient in recipients:
            self.macros(b"R", {"rcpt_addr": recipient})
            self.rcpt(recipient)
        self.macros(b"T", {"i": queue_id})
        self._event(b"T")
        for name, value in fields:
            self.header(name, value)
        self.macros(b"N", {"i": queue_id})
        self.end_of_headers()
        for piece in chunk_body(body, chunks):
            self.body(piece)
        self.macros(b"E", {"i": queue_id})
        return self.end_of_message()


def chunk_body(body: bytes, chunks: int | Sequence[int]) -> list[bytes]:
    """Split ``body`` into ``chunks`` near-equal pieces, or at the given sizes (rest last)."""
    if isinstance(chunks, int):
        if not body:
            return []
        size = max(1, -(-len(body) // chunks))
        return [body[i : i + size] for i in range(0, len(body), size)]
    pieces, offset = [], 0
    for size in chunks:
        pieces.append(body[offset : offset + size])
        offset += size
    if offset < len(body):
        pieces.append(body[offset:])
    return [p for p in pieces if p]


def apply_actions(message: bytes, result: Result, *, leading_space: bool) -> bytes:
    """Edit ``message`` as Postfix would for ``result``'s header actions (RFC 5322 bytes out)."""
    fields, body = split_message(message)
    for action in result.actions:
        value = action.value.decode()
        if not leading_space:
            value = " " + value
        value_bytes = value.replace("\r\n", "\n").encode()
        if action.kind == "insert":
            fields.insert(action.index, (action.name, value_bytes))
        elif action.kind == "add":
            fields.append((action.name, value_bytes))
        elif action.kind == "change":
            positions = [i for i, (n, _) in enumerate(fields) if n.lower() == action.name.lower()]
            index = max(action.index, 1) - 1
            if index < len(positions):
                if action.value:
                    fields[positions[index]] = (action.name, value_bytes)
                else:
                    del fields[positions[index]]
    head = b"".join(
        name.encode() + b":" + re.sub(rb"\r?\n", b"\r\n", value) + b"\r\n" for name, value in fields
    )
    return head + b"\r\n" + body
