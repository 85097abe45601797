"""One MTA connection: bytes -> decoder -> session -> one write per read.

Latency matters more than it looks: Postfix waits for our end-of-message
reply, and on TCP Nagle plus delayed ACKs add ~40 ms stalls. Accepted TCP
sockets get TCP_NODELAY; TCP_QUICKACK is re-armed after every read (Linux
clears it); all replies to one read go out in one write.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import TYPE_CHECKING, Final, cast

from mailseal.core.txtanswer import TxtAnswer, TxtStatus
from mailseal.dns.cache import CachingResolver
from mailseal.milter import codec
from mailseal.milter.logline import escape, throttle
from mailseal.milter.session import Session, State

if TYPE_CHECKING:
    from mailseal.milter.config import EdgeLimits
    from mailseal.milter.server import MilterServer

_log = logging.getLogger("mailseal.milter")

_TCP_FAMILIES: Final = (socket.AF_INET, socket.AF_INET6)
_QUICKACK: Final = getattr(socket, "TCP_QUICKACK", None)
WRITE_HIGH: Final = 64 * 1024
"""Bytes of replies waiting for the MTA to read them before we stop reading from it."""
WRITE_LOW: Final = 16 * 1024
KERNEL_SEND_BUFFER: Final = 64 * 1024
"""The socket's send buffer, fixed (no autotuning to megabytes): a client that never reads
stops being read after ~128 KiB of replies, not after the kernel buffered ~4 MB of them.
A milter reply is a few KiB at most."""
WRITE_STALL: Final = 30.0
"""Seconds a connection may keep replies unread (its writes paused) before it is closed."""


class Connection(asyncio.Protocol):
    """One MTA connection: bytes -> decoder -> session -> one write per read."""

    def __init__(self, server: MilterServer, sock: socket.socket | None = None) -> None:
        """A connection of ``server``; ``sock`` is the accepted socket (to peek at unread input)."""
        self._server = server
        self._raw = sock
        self._session = Session(lambda: server.runtime, clock=server.clock)
        self._decoder = codec.Decoder()
        self._transport: asyncio.Transport | None = None
        self._socket: socket.socket | None = None
        self._lookups: dict[str, asyncio.Future[TxtAnswer]] = {}
        self._waiting: asyncio.Task[None] | None = None
        # Kept: each asyncio.get_running_loop() costs a getpid() system call.
        self._loop = asyncio.get_running_loop()
        now = self._loop.time()
        self.accepted_at = now
        self.last_active = now
        """When the last complete command arrived (bytes trickling in do not count)."""
        self.last_progress = now
        """When negotiation finished or a message got its end-of-message reply: what eviction
        goes by, since commands that finish nothing (aborts, macros, a MAIL FROM dropped) cost
        the client nothing and must not make a connection look busy."""
        self.message_started: float | None = None
        self.write_paused_at: float | None = None
        self._lost = False

    @property
    def raw_socket(self) -> socket.socket | None:
        """The accepted socket this connection was made from."""
        return self._raw

    @property
    def busy(self) -> bool:
        """A message is in flight (between MAIL FROM and our end-of-message reply)."""
        return self._session.in_message

    @property
    def waiting(self) -> bool:
        """Waiting for DNS answers before the end-of-message reply."""
        return self._waiting is not None

    @property
    def write_buffer_size(self) -> int:
        """Bytes of replies the MTA has not read yet (bounded by back-pressure)."""
        return self._transport.get_write_buffer_size() if self._transport is not None else 0

    def input_waiting(self) -> bool:
        """Bytes have arrived that we have not read yet (an MTA about to negotiate)."""
        if self._raw is None:
            return False
        try:
            return bool(self._raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:
            return False

    @property
    def negotiated(self) -> bool:
        """Option negotiation is done."""
        return self._session.state is not State.NEGOTIATE

    def overdue(self, now: float, limits: EdgeLimits, idle_timeout: float) -> str | None:
        """Why this connection must be closed now (a deadline passed), or None.

        Deadlines are absolute: a client trickling bytes cannot extend them,
        only complete commands count as activity.
        """
        if not self.negotiated and now - self.accepted_at > limits.negotiate_timeout:
            return f"no option negotiation within {limits.negotiate_timeout:g}s"
        if self.message_started is not None and now - self.message_started > limits.message_timeout:
            return f"a message not finished within {limits.message_timeout:g}s"
        if self._waiting is not None:
            return None
        if self.write_paused_at is not None and now - self.write_paused_at > WRITE_STALL:
            return f"replies unread for {WRITE_STALL:g}s"
        if not self.busy and now - self.accepted_at > limits.connection_lifetime:
            return f"open longer than {limits.connection_lifetime:g}s"
        if now - self.last_active > idle_timeout:
            return f"no complete command for {idle_timeout:g}s"
        return None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, hence no isinstance).
        self._transport = cast("asyncio.Transport", transport)
        self._transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
        if sock is not None and sock.family in _TCP_FAMILIES:
            # Our own socket object on the transport's descriptor, detached (never closed) in
            # connection_lost: uvloop's socket stand-in builds a new socket object on every
            # setsockopt(), and TCP_QUICKACK is set after every read.
            own = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.fileno())
            own.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if _QUICKACK is not None:
                self._socket = own
            else:
                own.detach()
        self._server.added(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._socket is not None:
            self._socket.detach()  # the descriptor belongs to the transport, which closes it
            self._socket = None
        if self._session.in_message and not self._server.stopping:
            throttle.warning(
                "closed-mid-message", "the MTA closed the milter connection in the middle of a message"
            )
        for future in self._lookups.values():
            future.cancel()
        self._lookups.clear()
        if self._waiting is not None:
            self._waiting.cancel()
        self._server.removed(self)
        self._server.released(self)

    def close(self) -> None:
        """Close the connection once our replies are written (the MTA sees end of file)."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close now, dropping unwritten replies (a deadline or the connection cap)."""
        if self._transport is not None and not self._lost:
            self._transport.abort()  # also ends a graceful close still waiting to flush
            self._server.aborted(self)

    def pause_writing(self) -> None:
        """The MTA is not reading our replies: stop reading its commands until it does."""
        self.write_paused_at = self._loop.time()
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        """The replies drained: read again (unless waiting for key lookups)."""
        self.write_paused_at = None
        if self._waiting is None and self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._socket is not None:
            self._socket.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[arg-type]
        self._decoder.receive(data)
        if self._waiting is None:
            self._pump()

    def _pump(self) -> None:
        """Handle every complete event; reply in one write."""
        out: list[bytes] = []
        decoder = self._decoder
        session = self._session
        handled = 0
        negotiated_before = self.negotiated
        try:
            while (event := decoder.next_event()) is not None:
                handled += 1
                kind = type(event)
                if kind is codec.Macros or kind is codec.Header or kind is codec.BodyChunk:
                    reply = session.handle(event)  # the bulk of the packets: nothing else to do
                    if reply:
                        out.append(reply)
                    continue
                if isinstance(event, codec.EndOfMessage) and self._lookups and not self._answers_ready():
                    self._waiting = asyncio.ensure_future(self._finish_after_lookups(event))
                    if self._transport is not None:
                        self._transport.pause_reading()  # nothing more is read until we have replied
                    break
                self._handle(event, out)
                if kind is codec.Quit:
                    break
        except codec.ProtocolError as exc:
            self._write(out)
            self._server.protocol_error(str(exc))
            self.close()
            return
        self._write(out)
        if handled:
            now = self._loop.time()
            self.last_active = now
            if not negotiated_before and self.negotiated:
                self.last_progress = now
            if not session.in_message:
                self.message_started = None
            elif self.message_started is None:
                self.message_started = now
        if session.closed or (self._server.stopping and not session.in_message):
            self.close()
            self._server.check_drained()

    def _write(self, out: list[bytes]) -> None:
        if out and self._transport is not None:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _handle(self, event: codec.Event, out: list[bytes]) -> None:
        session = self._session
        kind = type(event)
        if kind is codec.EndOfMessage and self._lookups:
            self._deliver_answers()
        elif kind is codec.Abort and self._lookups:
            for future in self._lookups.values():
                future.cancel()
            self._lookups.clear()
        reply = session.handle(event)
        if reply:
            out.append(reply)
        if kind is codec.EndOfHeaders:
            resolver = self._server.resolver
            cached = resolver.cached if isinstance(resolver, CachingResolver) else None
            for name in session.take_key_queries():
                answer = cached(name) if cached is not None else None
                if answer is not None:  # the usual case: no task and no extra loop turn for it
                    session.add_key_answer(name, answer)
                else:
                    self._lookups[name] = asyncio.ensure_future(resolver.lookup_txt(name))
        elif kind is codec.EndOfMessage and session.outcome is not None:
            self.last_progress = self._loop.time()
            outcome, session.outcome = session.outcome, None
            self._write(out)  # the reply first: the MTA waits for it, the log line can wait
            out.clear()
            self._server.observe(outcome)

    def _answers_ready(self) -> bool:
        return all(future.done() for future in self._lookups.values())

    def _deliver_answers(self) -> None:
        for name, future in self._lookups.items():
            self._session.add_key_answer(name, _answer_of(name, future))
        self._lookups.clear()

    async def _finish_after_lookups(self, event: codec.EndOfMessage) -> None:
        """Wait for the key lookups started at end-of-headers, then answer end-of-message."""
        budget = self._server.config.dns_timeout + 1.0
        try:
            await asyncio.wait(list(self._lookups.values()), timeout=budget)
            out: list[bytes] = []
            try:
                self._handle(event, out)
            except codec.ProtocolError as exc:
                self._write(out)
                self._server.protocol_error(str(exc))
                self.close()
                return
            self._write(out)
        finally:
            self._waiting = None
            self.last_active = self._loop.time()
            self.message_started = None if not self._session.in_message else self.message_started
        if self._transport is not None and not self._transport.is_closing():
            if self.write_paused_at is None:
                self._transport.resume_reading()
            self._pump()


def _answer_of(name: str, future: asyncio.Future[TxtAnswer]) -> TxtAnswer:
    """The lookup's answer; unfinished or broken lookups become values too (never exceptions)."""
    if not future.done():
        future.cancel()
        return TxtAnswer.failure(TxtStatus.TIMEOUT, f"no answer for {name} in time")
    if future.cancelled():
        return TxtAnswer.failure(TxtStatus.TIMEOUT, f"the lookup of {name} was cancelled")
    exc = future.exception()
    if exc is not None:
        throttle.warning("lookup-failed", "key lookup of %s failed: %s", escape(name), escape(repr(exc)))
        return TxtAnswer.failure(TxtStatus.ERROR, f"lookup failed: {type(exc).__name__}")
    return future.result()
