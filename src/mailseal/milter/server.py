"""The server lifecycle: one asyncio event loop serving milter connections.

:class:`MilterServer` accepts on a listening socket, hands each connection
to a :class:`~mailseal.milter.connection.Connection`, reloads (keeping the
old configuration when the new one is bad), watches the key source, and shuts
down gracefully (messages in flight finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import replace
from typing import Any, Final

from mailseal.dns.interface import KeyResolver
from mailseal.errors import ConfigError, MailsealError, UsageError
from mailseal.keys.store import KeyStoreUnavailableError
from mailseal.milter.config import Config
from mailseal.milter.connection import Connection
from mailseal.milter.loading import (
    KeySourceFactory,
    Loaded,
    build_resolver,
    build_runtime,
    config_key_source,
    key_absent_lines,
    key_problem_lines,
    load,
    signing_summary,
)
from mailseal.milter.logline import outcome_line, throttle
from mailseal.milter.metrics import Metrics, NullMetrics
from mailseal.milter.runtime import Runtime
from mailseal.milter.session import MessageOutcome

_log = logging.getLogger("mailseal.milter")

SWEEP_INTERVAL: Final = 1.0
"""Seconds between deadline checks (deadlines are enforced to within this)."""
ACCEPT_BURST: Final = 32
"""Connections accepted per wake-up, so a connection flood cannot starve the ones already open."""
ACCEPT_BACKOFF: Final = 0.2
"""Seconds accepting pauses when the system refuses (no descriptors left): no busy loop, no log storm."""
EVICT_MIN_IDLE: Final = 1.0
"""A negotiated connection idle for less than this is never closed to make room for a new one."""
DESCRIPTOR_RESERVE: Final = 64
"""Descriptors kept out of the connection cap: DNS sockets, key files, logs, the listener."""
_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _throttled_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's own error reports (a transport failing, a callback raising), throttled per kind."""
    message = str(context.get("message", "event loop error"))
    exc = context.get("exception")
    throttle.log(
        logging.ERROR,
        f"loop:{message}:{type(exc).__name__}",
        "%s%s",
        message,
        f": {exc!r}" if exc is not None else "",
    )


def _has_input(sock: socket.socket) -> bool:
    """Bytes have arrived on ``sock`` that nobody has read (an MTA negotiating at once)."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:
        return False


def connection_cap(configured: int) -> int:
    """``limits.max_connections``, lowered to fit the soft descriptor limit (minus a reserve)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    return max(1, min(configured, soft - DESCRIPTOR_RESERVE))


class MilterServer:
    """Serve milter connections in this process's event loop."""

    def __init__(
        self,
        loaded: Loaded,
        *,
        config_path: str | None = None,
        resolver: KeyResolver | None = None,
        metrics: Metrics | None = None,
        key_source_factory: KeySourceFactory = config_key_source,
        clock: Callable[[], float] = time.time,
        watch_parent: bool = False,
    ) -> None:
        """Serve ``loaded``; ``config_path`` is re-read on reload; a given ``resolver`` is kept across reloads.

        ``watch_parent`` (a forked worker): stop when the parent process is gone.
        """
        self._loaded = loaded
        self._config_path = config_path
        self._fixed_resolver = resolver
        self._resolver = resolver or build_resolver(loaded.config)
        self._metrics = metrics or NullMetrics()
        self._factory = key_source_factory
        self._clock = clock
        self._generation = 1
        self._runtime = build_runtime(loaded.config, loaded.keyset)
        self._watched = frozenset(r.domain for r in self._runtime.requirements)  # named in metrics
        self._key_version: Hashable = loaded.version
        self._connections: set[Connection] = set()
        self._listeners: list[socket.socket] = []
        self._adopting: set[socket.socket] = set()  # accepted, not yet a Connection (connection_made)
        self._cut: set[socket.socket] = set()  # of those, shut down to make room (never cut twice)
        self._draining: dict[Connection, float] = {}  # aborted -> when; the loop closes it next turn
        self._cap = loaded.config.edge.max_connections
        self._parent = os.getppid() if watch_parent else None
        self._servers: list[asyncio.AbstractServer] = []
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what connections use
    @property
    def runtime(self) -> Runtime:
        """The configuration new messages use."""
        return self._runtime

    @property
    def clock(self) -> Callable[[], float]:
        """Wall-clock seconds (t= of new signatures, x= checks); tests fix it."""
        return self._clock

    @property
    def config(self) -> Config:
        """The configuration in force."""
        return self._loaded.config

    @property
    def resolver(self) -> KeyResolver:
        """The DNS resolver for key lookups."""
        return self._resolver

    @property
    def stopping(self) -> bool:
        """True once shutdown has begun: connections close when their message is done."""
        return self._stopping

    def observe(self, outcome: MessageOutcome) -> None:
        """Log one line for the message and count it; never raises (the reply is already out)."""
        try:
            _log.info("%s", outcome_line(outcome))
            self._metrics.observe(outcome, self._watched)
        except Exception:  # noqa: BLE001 - a logging or metrics bug must not break the connection
            throttle.log(logging.ERROR, "observe", "cannot log or count a message", exc_info=True)

    def protocol_error(self, detail: str) -> None:
        """A connection broke the protocol."""
        throttle.warning("protocol", "closing a milter connection: %s", detail)
        self._metrics.error("protocol")

    # -- lifecycle
    async def start(self, sock: socket.socket) -> None:
        """Start accepting on a bound, listening socket (inet or unix)."""
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        sock.setblocking(False)  # noqa: FBT003 - the stdlib signature
        self._cap = connection_cap(self.config.edge.max_connections)
        if self._cap < self.config.edge.max_connections:
            _log.warning(
                "limits.max_connections lowered to %d to fit the descriptor limit (ulimit -n)", self._cap
            )
        self._listeners.append(sock)
        loop.add_reader(sock.fileno(), self._accept, sock)  # our own accept: the cap applies before accept
        self._spawn(self._sweep())
        if self.config.milter.key_check_interval > 0:
            self._spawn(self._watch_keys(self.config.milter.key_check_interval))

    def attach(self, server: asyncio.AbstractServer) -> None:
        """Close ``server`` (e.g. the metrics endpoint) when this server stops."""
        self._servers.append(server)

    async def serve(self, sock: socket.socket, *, handle_signals: bool = False) -> None:
        """Serve until :meth:`stop` finishes (or SIGTERM/SIGINT when ``handle_signals``)."""
        await self.start(sock)
        if handle_signals:
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(_throttled_loop_error)
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, lambda: self._spawn(self.stop()))
        assert self._stopped is not None  # noqa: S101 - set by start()
        await self._stopped.wait()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _accept(self, sock: socket.socket) -> None:
        """Accept up to a burst of waiting connections, each admitted under the connection cap."""
        for _ in range(ACCEPT_BURST):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    throttle.warning(
                        "accept",
                        "cannot accept milter connections: %s (%d open); pausing accepts for %gs",
                        exc.strerror,
                        len(self._connections),
                        ACCEPT_BACKOFF,
                    )
                    self._metrics.error("accept")
                    self._pause_accepting(sock)
                else:
                    throttle.warning("accept-other", "cannot accept a milter connection: %s", exc.strerror)
                return
            self._admit(conn)

    def _pause_accepting(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(sock.fileno())

        def resume() -> None:
            if not self._stopping and sock.fileno() >= 0:
                loop.add_reader(sock.fileno(), self._accept, sock)

        loop.call_later(ACCEPT_BACKOFF, resume)

    def _admit(self, conn: socket.socket) -> None:
        """Take a new connection; at the cap, close the stalest idle one for it, or refuse it at once."""
        if self._stopping or (self.descriptors_in_use() >= self._cap and not self._evict()):
            if not self._stopping:
                throttle.warning(
                    "refused",
                    "refusing a milter connection: %d open, all active (limits.max_connections = %d)",
                    len(self._connections),
                    self._cap,
                )
                self._metrics.error("refused")
            conn.close()
            return
        conn.setblocking(False)  # noqa: FBT003 - the stdlib signature
        self._adopting.add(conn)
        self._spawn(self._adopt(conn))

    async def _adopt(self, conn: socket.socket) -> None:
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                lambda: Connection(self, conn), sock=conn
            )
        except OSError:
            conn.close()
            self._cut.discard(conn)
        finally:
            self._adopting.discard(conn)  # counted once: by now it is in _connections, or closed

    def _evict(self) -> bool:
        """Make room for a new connection; False when no connection may go.

        First choice: the connection that has not finished option negotiation
        for longest and has no unread input (an MTA sends its negotiation the
        moment it connects, so a flood of idle or trickling connections never
        locks it out); failing that, one accepted in this same burst and not yet
        set up (:meth:`_cut_adopting`). Then, of the negotiated connections not waiting for DNS,
        one between messages before one inside a message: the one that finished
        nothing (negotiation or a message) for longest, at least ``EVICT_MIN_IDLE``.
        Commands that finish nothing -- aborts, macros, a MAIL FROM dropped --
        do not count: a client repeating them cheaply must not hold its slot.
        """
        now = asyncio.get_running_loop().time()
        waiting_to_negotiate = sorted(
            (c for c in self._connections if not c.negotiated and c.raw_socket not in self._cut),
            key=lambda c: c.accepted_at,
        )
        victim = next((c for c in waiting_to_negotiate if not c.input_waiting()), None)
        if victim is None and self._cut_adopting():
            return True
        if victim is None:
            candidates = [
                c
                for c in self._connections
                if c.negotiated and not c.waiting and now - c.last_progress >= EVICT_MIN_IDLE
            ]
            # Between messages before inside one; then the longest without finishing anything.
            victim = min(candidates, key=lambda c: (c.busy, c.last_progress), default=None)
        if victim is None:
            return False
        throttle.warning(
            "evicted",
            "at limits.max_connections (%d): closing a connection that finished nothing for %.1fs "
            "to admit a new one",
            self._cap,
            now - victim.last_progress,
        )
        self._metrics.error("evicted")
        victim.abort()
        return True

    def _cut_adopting(self) -> bool:
        """Shut down one connection still being set up (in this accept burst) that sent nothing yet.

        A flood larger than the cap arriving in one burst evicts every connection
        already open, and the ones admitted in their place are not Connections until
        the loop turns: without this, an MTA queued behind them found nothing to
        evict and was refused. The socket is shut down, not closed (its adoption is
        under way); the Connection made from it reads end of input and closes.
        """
        young = next((s for s in self._adopting if s not in self._cut and not _has_input(s)), None)
        if young is None:
            return False
        self._cut.add(young)
        with contextlib.suppress(OSError):
            young.shutdown(socket.SHUT_RDWR)
        throttle.warning(
            "evicted",
            "at limits.max_connections (%d): closing a connection not yet set up to admit a new one",
            self._cap,
        )
        self._metrics.error("evicted")
        return True

    def descriptors_in_use(self) -> int:
        """Connections holding a descriptor: open, being set up, or closed but not yet released."""
        if self._draining:
            stale = asyncio.get_running_loop().time() - 1.0  # released within a turn of the loop
            for connection in [c for c, at in self._draining.items() if at < stale]:
                del self._draining[connection]
        return len(self._connections) + len(self._adopting) + len(self._draining)

    @property
    def connection_count(self) -> int:
        """Open connections (for tests and metrics)."""
        return len(self._connections)

    def largest_write_buffer(self) -> int:
        """The most reply bytes any one connection holds unread (for tests of back-pressure)."""
        return max((c.write_buffer_size for c in self._connections), default=0)

    @property
    def cap(self) -> int:
        """The connection cap in force."""
        return self._cap

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let messages in flight finish (up to ``grace`` seconds), then close."""
        if self._stopping:
            return
        self._stopping = True
        grace = self.config.milter.shutdown_grace if grace is None else grace
        loop = asyncio.get_running_loop()
        for sock in self._listeners:  # let go of the socket first: a restart can bind at once
            if sock.fileno() >= 0:
                loop.remove_reader(sock.fileno())
                sock.close()
        for server in self._servers:
            server.close()
        busy = [c for c in self._connections if c.busy]
        _log.info("shutting down: %d message(s) in flight, waiting up to %gs", len(busy), grace)
        for connection in list(self._connections):
            if not connection.busy:
                connection.close()
        self._drained = asyncio.Event()
        self.check_drained()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), grace)
        for connection in list(self._connections):
            if connection.busy:
                _log.warning("shutdown grace period over: abandoning a message in flight")
            connection.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        _log.info("stopped")
        assert self._stopped is not None  # noqa: S101 - set by start()
        self._stopped.set()

    def reload(self, *, keys_only: bool = False) -> bool:
        """Re-read the configuration and keys; keep the old ones (and say why) when anything is wrong.

        ``keys_only`` (the key watch) reloads the keys under the running
        configuration: a rotation is applied even while the file is being
        edited, and edits still wait for SIGHUP.
        """
        path = None if keys_only else self._config_path
        what = "keys" if keys_only else "configuration"
        try:
            loaded = load(path, self._factory) if path else Loaded.read(self.config, self._loaded.source)
        except (ConfigError, UsageError) as exc:
            _log.error("reload refused, keeping the running configuration:\n%s", exc)
            self._metrics.error("reload")
            return False
        problems = key_problem_lines(loaded)
        if problems:
            _log.error(
                "reloading %s: these keys keep their previous key where they had one: %s",
                what,
                "; ".join(problems),
            )
            self._metrics.error("reload")
            loaded = replace(loaded, keyset=loaded.keyset.keeping(self._loaded.keyset))
        self._generation += 1
        self._loaded = loaded
        self._runtime = build_runtime(loaded.config, loaded.keyset, self._generation)
        self._watched = frozenset(r.domain for r in self._runtime.requirements)
        self._key_version = loaded.version
        if self._fixed_resolver is None:
            self._resolver = build_resolver(loaded.config)
        logging.getLogger("mailseal").setLevel(loaded.config.milter.log_level.upper())
        _log.info(
            "%s %s loaded (generation %d): %d key(s), %d signing rule(s)%s",
            "keys of configuration" if keys_only else "configuration",
            self._config_path or "(in memory)",
            self._generation,
            len(loaded.keyset.keys),
            len(loaded.config.rules),
            signing_summary(loaded.keyset),
        )
        for note in key_absent_lines(loaded):
            _log.warning("%s (mail needing it gets on_failure.sign_key_unavailable)", note)
        return True

    async def _watch_keys(self, interval: float) -> None:
        """Reload when the key source says its keys changed (a rotated key file, a rotation in the store)."""
        failed = 0  # checks failed in a row: the first is logged, every one counted
        while True:
            await asyncio.sleep(interval)
            try:
                # In a thread: a database that does not answer must not stall the mail in this loop.
                version = await asyncio.to_thread(self._loaded.source.version)
            except (OSError, MailsealError) as exc:
                unavailable = isinstance(exc, KeyStoreUnavailableError)
                self._metrics.error("key_store_unavailable" if unavailable else "key_check")
                failed += 1
                if failed == 1:
                    _log.warning(
                        "cannot check the keys for changes: %s%s",
                        exc,
                        f"; signing goes on with the keys loaded before, retrying every {interval:g}s"
                        if unavailable
                        else "",
                    )
                continue
            if failed:
                _log.warning("the keys can be checked again, after %d failed check(s)", failed)
                failed = 0
            if version != self._key_version:
                _log.info("signing keys changed; reloading them")
                if not self.reload(keys_only=True):
                    self._key_version = version  # do not retry the same broken state every interval

    async def _sweep(self) -> None:
        """Enforce the per-connection deadlines; stop when the parent (supervisor) is gone."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            if self._parent is not None and os.getppid() != self._parent:
                _log.error("the supervisor (pid %d) is gone; stopping this worker", self._parent)
                self._parent = None
                self._spawn(self.stop())
            self.enforce_deadlines(loop.time())

    def enforce_deadlines(self, now: float) -> None:
        """Close every connection past one of its deadlines (see :meth:`Connection.overdue`)."""
        limits = self.config.edge
        idle = self.config.idle_timeout
        for connection in list(self._connections):
            why = connection.overdue(now, limits, idle)
            if why is not None:
                throttle.warning("deadline", "closing a milter connection: %s", why)
                self._metrics.error("deadline")
                connection.abort()

    def check_drained(self) -> None:
        """During shutdown, note when no message is in flight any more."""
        if self._drained is not None and not any(c.busy for c in self._connections):
            self._drained.set()

    def added(self, connection: Connection) -> None:
        """A connection opened (it stops counting as being set up: never counted twice)."""
        self._connections.add(connection)
        if connection.raw_socket is not None:
            self._adopting.discard(connection.raw_socket)

    def removed(self, connection: Connection) -> None:
        """A connection closed."""
        self._connections.discard(connection)
        if connection.raw_socket is not None:
            self._cut.discard(connection.raw_socket)

    def aborted(self, connection: Connection) -> None:
        """A connection was closed by us at once; its descriptor goes at the loop's next turn."""
        self._draining[connection] = asyncio.get_running_loop().time()
        self.removed(connection)

    def released(self, connection: Connection) -> None:
        """A connection's descriptor is closed (after :meth:`removed`)."""
        self._draining.pop(connection, None)
        self.check_drained()
