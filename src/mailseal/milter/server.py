"""The server lifecycle: one asyncio event loop serving milter connections.

:class:`MilterServer` accepts on a listening socket, hands each connection
to a :class:`~mailseal.milter.connection.Connection`, reloads (keeping the
old configuration when the new one is bad), watches the key source, and shuts
down gracefully (messages in flight finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import replace
from typing import Any, Final

from mailseal.dns.interface import KeyResolver
from mailseal.errors import ConfigError, MailsealError, UsageError
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
from mailseal.milter.logline import outcome_line
from mailseal.milter.metrics import Metrics, NullMetrics
from mailseal.milter.runtime import Runtime
from mailseal.milter.session import MessageOutcome

_log = logging.getLogger("mailseal.milter")

SWEEP_INTERVAL: Final = 5.0


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
    ) -> None:
        """Serve ``loaded``; ``config_path`` is re-read on reload; a given ``resolver`` is kept across reloads."""
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
            _log.exception("cannot log or count message %s", outcome.queue_id)

    def protocol_error(self, detail: str) -> None:
        """A connection broke the protocol."""
        _log.warning("closing a milter connection: %s", detail)
        self._metrics.error("protocol")

    # -- lifecycle
    async def start(self, sock: socket.socket) -> None:
        """Start accepting on a bound, listening socket (inet or unix)."""
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        sock.setblocking(False)  # noqa: FBT003 - the stdlib signature
        if sock.family == socket.AF_UNIX:
            server = await loop.create_unix_server(lambda: Connection(self), sock=sock, backlog=512)
        else:
            server = await loop.create_server(lambda: Connection(self), sock=sock, backlog=512)
        self._servers.append(server)
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
            loop.add_signal_handler(signal.SIGHUP, self.reload)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, lambda: self._spawn(self.stop()))
        assert self._stopped is not None  # noqa: S101 - set by start()
        await self._stopped.wait()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting, let messages in flight finish (up to ``grace`` seconds), then close."""
        if self._stopping:
            return
        self._stopping = True
        grace = self.config.milter.shutdown_grace if grace is None else grace
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
        while True:
            await asyncio.sleep(interval)
            try:
                version = self._loaded.source.version()
            except (OSError, MailsealError) as exc:
                _log.warning("cannot check the keys for changes: %s", exc)
                continue
            if version != self._key_version:
                _log.info("signing keys changed; reloading them")
                if not self.reload(keys_only=True):
                    self._key_version = version  # do not retry the same broken state every interval

    async def _sweep(self) -> None:
        """Close connections idle longer than ``limits.idle_timeout``."""
        loop = asyncio.get_running_loop()
        while True:
            limit = self.config.idle_timeout
            await asyncio.sleep(min(SWEEP_INTERVAL, limit / 2))
            now = loop.time()
            for connection in list(self._connections):
                if now - connection.last_active > limit and not connection.waiting:
                    _log.warning("closing a milter connection idle for %.0fs", now - connection.last_active)
                    connection.close()

    def check_drained(self) -> None:
        """During shutdown, note when no message is in flight any more."""
        if self._drained is not None and not any(c.busy for c in self._connections):
            self._drained.set()

    def added(self, connection: Connection) -> None:
        """A connection opened."""
        self._connections.add(connection)

    def removed(self, connection: Connection) -> None:
        """A connection closed."""
        self._connections.discard(connection)
        self.check_drained()
