"""Sockets, processes and signals around the sans-IO session.

* :class:`MilterServer` -- one asyncio event loop serving milter connections
  on a listening socket; reloads (keeping the old configuration when the new
  one is bad) and shuts down gracefully (messages in flight finish).
* :func:`run` -- the ``mailseal milter`` process: binds the socket, drops
  privileges, then serves in this process (one worker) or forks one worker
  per core under a small supervisor that forwards SIGHUP/SIGTERM, restarts
  workers that die, and serves the metrics endpoint. Signing is CPU-bound, so
  one Python process would cap throughput at one core.

Latency matters more than it looks: Postfix waits for our end-of-message
reply, and on TCP Nagle plus delayed ACKs add ~40 ms stalls. Accepted TCP
sockets get TCP_NODELAY; TCP_QUICKACK is re-armed after every read (Linux
clears it); all replies to one read go out in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import ipaddress
import logging
import os
import pwd
import selectors
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass, replace
from typing import Any, Final, cast

from mailseal.core.results import VerificationReport
from mailseal.core.txtanswer import TxtAnswer, TxtStatus
from mailseal.dns.cache import CachingResolver
from mailseal.dns.interface import KeyResolver
from mailseal.dns.resolver import DnsResolver
from mailseal.errors import ConfigError, MailsealError, UsageError
from mailseal.keys.source import CombinedKeySource, FileKeySource, KeySet, KeySource, StoreKeySource
from mailseal.milter import codec, eventloop
from mailseal.milter.config import Config, ListenAddress, load_config
from mailseal.milter.metrics import Metrics, NullMetrics
from mailseal.milter.runtime import Runtime
from mailseal.milter.session import MessageOutcome, Session

_log = logging.getLogger("mailseal.milter")

KeySourceFactory = Callable[[Config], KeySource]
READ_LIMIT: Final = 256 * 1024
SWEEP_INTERVAL: Final = 5.0
_TCP_FAMILIES: Final = (socket.AF_INET, socket.AF_INET6)
_QUICKACK: Final = getattr(socket, "TCP_QUICKACK", None)


def config_key_source(config: Config) -> KeySource:
    """The default: the key table's files, and the key store for its ``store = true`` entries."""
    files = FileKeySource(config.keys)
    if not config.store_keys or config.key_store is None:
        return files
    return CombinedKeySource([files, StoreKeySource(config.key_store, config.store_keys)])


def build_runtime(config: Config, keyset: KeySet, generation: int = 1) -> Runtime:
    """The read-only state sessions use, from a checked configuration and its loaded keys."""
    return Runtime(
        routing=config.routing,
        table=config.table(),
        keyset=keyset,
        authserv_id=config.authserv_id,
        sender_source=config.sender_source,
        sign_options=config.sign_options,
        verify_options=config.verify_options,
        failure=config.failure,
        requirements=config.requirements,
        max_header_bytes=config.max_header_bytes,
        generation=generation,
    )


def build_resolver(config: Config) -> KeyResolver:
    """A caching DNS resolver with the configured servers and time budget."""
    nameservers = list(config.nameservers) or None
    return CachingResolver(DnsResolver(nameservers, timeout=config.dns_timeout))


@dataclass(frozen=True, slots=True)
class Loaded:
    """A configuration, its key source, the keys loaded from it and the source's version before loading."""

    config: Config
    source: KeySource
    keyset: KeySet
    version: Hashable
    """``source.version()`` taken just before ``keyset`` was loaded: a change made while
    loading is seen by the next check, and a worker forked later from this ``Loaded``
    notices every change since (it compares against this, not against a fresh token)."""

    @classmethod
    def read(cls, config: Config, source: KeySource) -> Loaded:
        """Take the source's version, then load its keys."""
        version = source.version()
        return cls(config, source, source.load(), version)


def load(path: str, factory: KeySourceFactory = config_key_source) -> Loaded:
    """Read a configuration and load its keys once; raises ConfigError for a bad file."""
    config = load_config(path)
    return Loaded.read(config, factory(config))


def key_problem_lines(loaded: Loaded) -> list[str]:
    """``path:line: key NAME: problem`` for each key that did not load."""
    lines = []
    for name, problem in loaded.keyset.problems.items():
        line = loaded.config.key_lines.get(name)
        where = f"{loaded.config.path}:{line}: " if loaded.config.path and line else ""
        lines.append(f"{where}key {name!r} cannot be used: {problem}")
    return lines


def key_absent_lines(loaded: Loaded) -> list[str]:
    """``path:line: key NAME: ...`` for each name whose source has no key for it now (not an error)."""
    lines = []
    for name, why in loaded.keyset.absent.items():
        line = loaded.config.key_lines.get(name)
        where = f"{loaded.config.path}:{line}: " if loaded.config.path and line else ""
        lines.append(f"{where}key {name!r} has no key to sign with now: {why}")
    return lines


# -- one event loop ---------------------------------------------------------------------------


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
        self._connections: set[_Connection] = set()
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
            server = await loop.create_unix_server(lambda: _Connection(self), sock=sock, backlog=512)
        else:
            server = await loop.create_server(lambda: _Connection(self), sock=sock, backlog=512)
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
            _signing_summary(loaded.keyset),
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

    def added(self, connection: _Connection) -> None:
        """A connection opened."""
        self._connections.add(connection)

    def removed(self, connection: _Connection) -> None:
        """A connection closed."""
        self._connections.discard(connection)
        self.check_drained()


class _Connection(asyncio.Protocol):
    """One MTA connection: bytes -> decoder -> session -> one write per read."""

    def __init__(self, server: MilterServer) -> None:
        self._server = server
        self._session = Session(lambda: server.runtime, clock=server.clock)
        self._decoder = codec.Decoder()
        self._transport: asyncio.Transport | None = None
        self._socket: socket.socket | None = None
        self._lookups: dict[str, asyncio.Future[TxtAnswer]] = {}
        self._waiting: asyncio.Task[None] | None = None
        # Kept: each asyncio.get_running_loop() costs a getpid() system call.
        self._loop = asyncio.get_running_loop()
        self.last_active = 0.0

    @property
    def busy(self) -> bool:
        """A message is in flight (between MAIL FROM and our end-of-message reply)."""
        return self._session.in_message

    @property
    def waiting(self) -> bool:
        """Waiting for DNS answers before the end-of-message reply."""
        return self._waiting is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass, hence no isinstance).
        self._transport = cast("asyncio.Transport", transport)
        sock = transport.get_extra_info("socket")
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
        self.last_active = self._loop.time()
        self._server.added(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._socket is not None:
            self._socket.detach()  # the descriptor belongs to the transport, which closes it
            self._socket = None
        if self._session.in_message and not self._server.stopping:
            _log.warning("the MTA closed the milter connection in the middle of a message")
        for future in self._lookups.values():
            future.cancel()
        self._lookups.clear()
        if self._waiting is not None:
            self._waiting.cancel()
        self._server.removed(self)

    def close(self) -> None:
        """Close the connection (the MTA sees end of file)."""
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._socket is not None:
            self._socket.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[arg-type]
        self._decoder.receive(data)
        if self._waiting is None:
            self.last_active = self._loop.time()
            self._pump()

    def _pump(self) -> None:
        """Handle every complete event; reply in one write."""
        out: list[bytes] = []
        decoder = self._decoder
        session = self._session
        try:
            while (event := decoder.next_event()) is not None:
                kind = type(event)
                if kind is codec.Macros or kind is codec.Header or kind is codec.BodyChunk:
                    reply = session.handle(event)  # the bulk of the packets: nothing else to do
                    if reply:
                        out.append(reply)
                    continue
                if isinstance(event, codec.EndOfMessage) and self._lookups and not self._answers_ready():
                    self._waiting = asyncio.ensure_future(self._finish_after_lookups(event))
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
        if self._transport is not None and not self._transport.is_closing():
            self._pump()


def _signing_summary(keyset: KeySet) -> str:
    """`` signing with example.com/ms2026q2, ...`` for the reload log line (store keys change by themselves)."""
    selectors = sorted({f"{k.domain}/{k.selector}" for keys in keyset.keys.values() for k in keys})
    return f"; signing with {', '.join(selectors)}" if selectors else ""


def _answer_of(name: str, future: asyncio.Future[TxtAnswer]) -> TxtAnswer:
    """The lookup's answer; unfinished or broken lookups become values too (never exceptions)."""
    if not future.done():
        future.cancel()
        return TxtAnswer.failure(TxtStatus.TIMEOUT, f"no answer for {name} in time")
    if future.cancelled():
        return TxtAnswer.failure(TxtStatus.TIMEOUT, f"the lookup of {name} was cancelled")
    exc = future.exception()
    if exc is not None:
        _log.warning("key lookup of %s failed: %r", name, exc)
        return TxtAnswer.failure(TxtStatus.ERROR, f"lookup failed: {type(exc).__name__}")
    return future.result()


def outcome_line(outcome: MessageOutcome) -> str:
    """One key=value line per message: no key material, no content, no local parts."""
    parts = [
        f"qid={outcome.queue_id}",
        f"client={outcome.client}",
        f"origin={outcome.origin.value if outcome.origin else '-'}",
        f"mode={outcome.mode}",
        f"sender_domain={outcome.sender_domain or '-'}",
        f"action={outcome.decision.verdict.value}",
    ]
    if outcome.decision.cause:
        parts.append(f"cause={outcome.decision.cause}")
    if outcome.signed:
        parts.append("signed=" + ",".join(f"{d}/{s}/{a}" for d, s, a in outcome.signed))
    if outcome.sign_note:
        parts.append(f"unsigned={outcome.sign_note}")
    if outcome.report is not None:
        parts.append(f"dkim={_report_text(outcome.report)}")
    if outcome.removed_authres:
        parts.append(f"removed_authres={outcome.removed_authres}")
    parts.append(f"ms={outcome.seconds * 1000:.2f}")
    return " ".join(parts)


def _report_text(report: VerificationReport) -> str:
    if not report.signatures:
        return "none"
    return ",".join(
        f"{s.result.value}/{s.domain or '?'}" + (f"/{s.reason.value}" if s.reason else "")
        for s in report.signatures
    )


# -- sockets and privileges -------------------------------------------------------------------


def exposure_warning(address: ListenAddress) -> str | None:
    """A warning when the milter listens on a TCP address other than loopback; None otherwise.

    The milter protocol has no authentication: whoever can connect can have
    mail signed with our keys, and the client address a session acts on is
    whatever the connecting side claims.
    """
    if address.family == "unix":
        return None
    host = address.host.strip("[]")
    if host.lower() == "localhost":
        return None
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return None
    return (
        f"the milter listens on {address}, not a loopback address: the milter protocol has no "
        "authentication, so anyone who can connect can have mail signed with these keys and claim "
        "any client address; restrict it with a firewall, or listen on 127.0.0.1 or a unix socket"
    )


def open_listener(address: ListenAddress, *, mode: int = 0o660, group: str = "") -> socket.socket:
    """Bind and listen; a unix socket gets ``mode`` and ``group`` (a stale socket file is replaced)."""
    if address.family == "unix":
        return _unix_listener(address.path, mode, group)
    family = socket.AF_INET6 if address.family == "inet6" or ":" in address.host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(address.host, address.port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {address}: {exc.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(infos[0][4])
        sock.listen(512)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {address}: {exc.strerror}") from None
    return sock


def bound_address(address: ListenAddress, sock: socket.socket) -> ListenAddress:
    """The address as bound (port 0 replaced by the port the system chose)."""
    if address.family == "unix":
        return address
    return ListenAddress(address.family, address.host, sock.getsockname()[1])


def _unix_listener(path: str, mode: int, group: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(path)
        if not stat.S_ISSOCK(info.st_mode):
            raise UsageError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: a socket left by a crash
        else:
            raise UsageError(f"another process is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # never briefly open to everyone
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on unix:{path}: {exc.strerror}") from None
    finally:
        os.umask(old)
    if group:
        os.chown(path, -1, _gid(group))
    os.chmod(path, mode)
    sock.listen(512)
    return sock


def _gid(group: str) -> int:
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise UsageError(f"unknown group {group!r}") from None


def account(user: str, group: str = "") -> tuple[str, int, int]:
    """The name, uid and gid to run as (``group``, else the user's primary group)."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"unknown user {user!r}") from None
    return entry.pw_name, entry.pw_uid, _gid(group) if group else entry.pw_gid


def drop_privileges(user: str, group: str = "") -> None:
    """Become ``user`` (and ``group``) for good, after binding the sockets."""
    name, uid, gid = account(user, group)
    if os.getuid() == uid and os.getgid() == gid:
        return
    if os.geteuid() != 0:
        raise UsageError(f"only root can switch to user {user!r}; start as root or remove milter.user")
    os.initgroups(name, gid)  # the user's supplementary groups (e.g. one owning a 0640 key store)
    os.setgid(gid)
    os.setuid(uid)
    _log.info("running as %s (uid %d, gid %d)", name, uid, gid)


# -- the process ------------------------------------------------------------------------------


def run(
    config_path: str,
    *,
    workers: int | None = None,
    key_source_factory: KeySourceFactory = config_key_source,
) -> int:
    """``mailseal milter``: serve until SIGTERM/SIGINT; returns the exit status.

    Order matters: bind the sockets (may need root), drop privileges, then
    read the keys -- as the user that will later re-read them on reload.
    """
    config = load_config(config_path)
    settings = config.milter
    logging.getLogger("mailseal").setLevel(settings.log_level.upper())
    sock = open_listener(settings.socket, mode=settings.socket_mode, group=settings.socket_group)
    metrics_sock = _metrics_listener(settings.metrics) if settings.metrics else None
    unix_path = settings.socket.path if settings.socket.family == "unix" else None
    count = workers if workers is not None else settings.worker_count()
    metrics_dir: str | None = None
    try:
        if metrics_sock is not None and count > 1:
            from mailseal.milter.metrics import use_directory

            metrics_dir = tempfile.mkdtemp(prefix="mailseal-metrics-")
            use_directory(metrics_dir)
        if settings.user:
            _, uid, gid = account(settings.user, settings.group)
            if metrics_dir is not None:
                os.chown(metrics_dir, uid, gid)
            preload_lazy_modules(metrics=metrics_sock is not None)
            drop_privileges(settings.user, settings.group)
        loaded = Loaded.read(config, key_source_factory(config))
        for problem in key_problem_lines(loaded):
            _log.error("%s (mail needing this key gets on_failure.sign_key_unavailable)", problem)
        for note in key_absent_lines(loaded):
            _log.warning("%s (mail needing it gets on_failure.sign_key_unavailable)", note)
        bound = bound_address(settings.socket, sock)
        exposed = exposure_warning(settings.socket)
        if exposed:
            _log.warning("%s", exposed)
        _log.info(
            "mailseal milter listening on %s with %d worker(s); Postfix: smtpd_milters = %s",
            bound,
            count,
            bound.postfix(),
        )
        if metrics_sock is not None:
            host, port = metrics_sock.getsockname()[:2]
            _log.info("metrics on http://%s/metrics", f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        if count <= 1:
            return _run_single(loaded, config_path, sock, metrics_sock, key_source_factory)
        return _Supervisor(
            loaded, config_path, sock, metrics_sock, count, key_source_factory, shared_metrics=metrics_dir
        ).run()
    finally:
        sock.close()
        if metrics_sock is not None:
            metrics_sock.close()
        if unix_path:
            with contextlib.suppress(OSError):
                os.unlink(unix_path)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def preload_lazy_modules(*, metrics: bool) -> None:
    """Import now what libraries import on first use: after dropping privileges their files may be unreadable."""
    from mailseal.core.alignment import organizational_domain
    from mailseal.dns.resolver import preload

    preload()
    organizational_domain("mail.example.com")  # loads the Public Suffix List data file
    "b\u00fccher.example".encode("idna")  # the IDNA codec, for non-ASCII names
    if metrics:
        from mailseal.milter.metrics import preload as preload_metrics

        preload_metrics()


def _metrics_listener(address: tuple[str, int]) -> socket.socket:
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen for metrics on {host}:{port}: {exc.strerror}") from None
    sock.listen(16)
    return sock


def _prometheus() -> Metrics:
    from mailseal.milter.metrics import PrometheusMetrics

    return PrometheusMetrics()


def _run_single(
    loaded: Loaded,
    config_path: str,
    sock: socket.socket,
    metrics_sock: socket.socket | None,
    factory: KeySourceFactory,
) -> int:
    metrics = _prometheus() if metrics_sock is not None else None

    async def main() -> None:
        server = MilterServer(loaded, config_path=config_path, metrics=metrics, key_source_factory=factory)
        if metrics_sock is not None:
            metrics_sock.setblocking(False)  # noqa: FBT003 - the stdlib signature
            endpoint = await asyncio.start_server(_serve_metrics_async, sock=metrics_sock)
            server.attach(endpoint)
        await server.serve(sock, handle_signals=True)

    eventloop.run(main())  # uvloop when installed (mailseal.milter.eventloop)
    return 0


async def _serve_metrics_async(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    writer.write(http_response(head))
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()


def http_response(head: bytes) -> bytes:
    """Answer ``GET /metrics`` (or ``/``) with the exposition; anything else 404/405."""
    from mailseal.milter.metrics import exposition

    request = head.split(b"\r\n", 1)[0].split()
    if len(request) < 2 or request[0] not in (b"GET", b"HEAD"):
        return b"HTTP/1.0 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n"
    if request[1].split(b"?")[0] not in (b"/", b"/metrics"):
        return b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    body, content_type = exposition()
    head_out = f"HTTP/1.0 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head_out.encode("ascii") + (body if request[0] == b"GET" else b"")


class _Supervisor:
    """The parent of the worker processes: forwards signals, restarts workers, serves metrics."""

    def __init__(
        self,
        loaded: Loaded,
        config_path: str,
        sock: socket.socket,
        metrics_sock: socket.socket | None,
        count: int,
        factory: KeySourceFactory,
        *,
        shared_metrics: str | None = None,
    ) -> None:
        self._loaded = loaded
        self._path = config_path
        self._sock = sock
        self._metrics_sock = metrics_sock
        self._count = count
        self._factory = factory
        self._workers: dict[int, float] = {}  # pid -> start time
        self._signals: list[int] = []
        self._stopping = False
        self._shared_metrics = shared_metrics

    def run(self) -> int:
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)  # noqa: FBT003 - the stdlib signature
        wake_write.setblocking(False)  # noqa: FBT003 - the stdlib signature
        old_wakeup = signal.set_wakeup_fd(wake_write.fileno())
        handled = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        previous = {sig: signal.signal(sig, self._note) for sig in handled}
        selector = selectors.DefaultSelector()
        selector.register(wake_read, selectors.EVENT_READ)
        if self._metrics_sock is not None:
            selector.register(self._metrics_sock, selectors.EVENT_READ)
        try:
            for _ in range(self._count):
                self._spawn()
            return self._loop(selector, wake_read)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            selector.close()
            wake_read.close()
            wake_write.close()

    def _note(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def _loop(self, selector: selectors.BaseSelector, wake: socket.socket) -> int:
        deadline: float | None = None
        while True:
            for key, _ in selector.select(timeout=1.0):
                if key.fileobj is wake:
                    with contextlib.suppress(BlockingIOError):
                        wake.recv(4096)
                elif key.fileobj is self._metrics_sock:
                    self._answer_metrics()
            while self._signals:
                signum = self._signals.pop(0)
                if signum == signal.SIGHUP and not self._stopping:
                    self._reload()
                elif signum in (signal.SIGTERM, signal.SIGINT) and not self._stopping:
                    self._stopping = True
                    grace = self._loaded.config.milter.shutdown_grace
                    deadline = time.monotonic() + grace + 5.0
                    _log.info("stopping %d worker(s)", len(self._workers))
                    self._signal_workers(signal.SIGTERM)
            self._reap()
            if self._stopping:
                if not self._workers:
                    _log.info("all workers stopped")
                    return 0
                if deadline is not None and time.monotonic() > deadline:
                    _log.error("workers did not stop in time; killing them")
                    self._signal_workers(signal.SIGKILL)
                    deadline = None

    def _reload(self) -> None:
        try:
            loaded = load(self._path, self._factory)
        except (ConfigError, UsageError) as exc:
            _log.error("reload refused, keeping the running configuration:\n%s", exc)
            return
        problems = key_problem_lines(loaded)
        if problems:
            _log.error(
                "reloading: these keys keep their previous key where they had one: %s", "; ".join(problems)
            )
            loaded = replace(loaded, keyset=loaded.keyset.keeping(self._loaded.keyset))
        self._loaded = loaded
        _log.info("configuration checked; telling %d worker(s) to reload", len(self._workers))
        self._signal_workers(signal.SIGHUP)

    def _signal_workers(self, signum: int) -> None:
        for pid in list(self._workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _reap(self) -> None:
        while self._workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self._workers.clear()
                return
            if pid == 0:
                return
            started = self._workers.pop(pid, None)
            if started is None:
                continue
            from mailseal.milter.metrics import forget_processes

            forget_processes([pid])
            if self._stopping:
                continue
            _log.error("worker %d exited unexpectedly (status %d); starting another", pid, status)
            if time.monotonic() - started < 1.0:
                time.sleep(1.0)  # a worker dying at start would otherwise spin
            self._spawn()

    def _spawn(self) -> None:
        pid = os.fork()
        if pid:
            self._workers[pid] = time.monotonic()
            return
        status = 1
        try:
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            if self._metrics_sock is not None:
                self._metrics_sock.close()
            status = _worker(
                self._loaded, self._path, self._sock, self._factory, metrics=self._shared_metrics is not None
            )
        except BaseException:
            _log.critical("worker %d crashed", os.getpid(), exc_info=True)
            raise  # into the finally below: a forked child must never return into the supervisor's code
        finally:
            logging.shutdown()
            os._exit(status)

    def _answer_metrics(self) -> None:
        assert self._metrics_sock is not None  # noqa: S101 - registered only when set
        try:
            conn, _ = self._metrics_sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(2.0)
            head = b""
            try:
                while b"\r\n\r\n" not in head and len(head) < 8192:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                conn.sendall(http_response(head))
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET) and not isinstance(exc, TimeoutError):
                    _log.warning("metrics request failed: %s", exc)


def _worker(
    loaded: Loaded,
    config_path: str,
    sock: socket.socket,
    factory: KeySourceFactory,
    *,
    metrics: bool,
) -> int:
    """A forked worker: its own event loop on the shared listening socket."""
    prometheus = _prometheus() if metrics else None

    async def main() -> None:
        server = MilterServer(loaded, config_path=config_path, metrics=prometheus, key_source_factory=factory)
        await server.serve(sock, handle_signals=True)

    eventloop.run(main())  # uvloop when installed (mailseal.milter.eventloop)
    return 0
