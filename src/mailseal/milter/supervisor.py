"""The worker supervisor: the parent of the worker processes.

Signing is CPU-bound, so one Python process would cap throughput at one
core: the supervisor forks one worker per core on the shared listening
socket, forwards SIGHUP/SIGTERM, replaces workers that die, and serves the
metrics endpoint (summed over the workers).

Nothing in its loop blocks: signals wake it through a wakeup descriptor,
metrics clients are served without blocking under an absolute deadline, and
a worker that dies right after starting is replaced after a pause that is
scheduled, not slept. So a dead worker is replaced and a signal acted on
within a second, whatever metrics clients do.

Workers die with it: each asks the kernel for SIGTERM when its parent dies
(``PR_SET_PDEATHSIG``) and also watches its parent's pid, so killing the
supervisor (SIGKILL, the OOM killer) never leaves orphans holding the socket.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import signal
import socket
import time
from dataclasses import dataclass, field, replace
from typing import Final

from mailseal.errors import ConfigError, UsageError
from mailseal.milter import eventloop
from mailseal.milter.loading import KeySourceFactory, Loaded, key_problem_lines, load
from mailseal.milter.logline import throttle
from mailseal.milter.metrics_http import MAX_METRICS_CLIENTS, METRICS_DEADLINE, MetricsRequest, prometheus
from mailseal.milter.server import MilterServer

_log = logging.getLogger("mailseal.milter")

TICK: Final = 0.25
"""Longest sleep of the supervisor's loop (deadlines and scheduled restarts are checked this often)."""
RESTART_PAUSE: Final = 1.0
"""A worker that dies within this many seconds of starting is replaced after this pause (no spinning)."""
_PR_SET_PDEATHSIG: Final = 1


def die_with_parent(signum: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent dies; False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


@dataclass(slots=True, eq=False)
class _MetricsClient:
    sock: socket.socket
    deadline: float
    request: MetricsRequest = field(default_factory=MetricsRequest)
    out: bytes | None = None


class Supervisor:
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
        self._clients: set[_MetricsClient] = set()
        self._restarts: list[float] = []  # monotonic times at which to start a replacement

    def run(self) -> int:
        """Start the workers and supervise them until SIGTERM/SIGINT; the exit status."""
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)  # noqa: FBT003 - the stdlib signature
        wake_write.setblocking(False)  # noqa: FBT003 - the stdlib signature
        old_wakeup = signal.set_wakeup_fd(wake_write.fileno())
        handled = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        previous = {sig: signal.signal(sig, self._note) for sig in handled}
        selector = selectors.DefaultSelector()
        selector.register(wake_read, selectors.EVENT_READ, "wake")
        if self._metrics_sock is not None:
            self._metrics_sock.setblocking(False)  # noqa: FBT003 - the stdlib signature
            selector.register(self._metrics_sock, selectors.EVENT_READ, "metrics")
        try:
            for _ in range(self._count):
                self._spawn()
            return self._loop(selector, wake_read)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for client in list(self._clients):
                self._drop(selector, client)
            selector.close()
            wake_read.close()
            wake_write.close()

    def _note(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def _loop(self, selector: selectors.BaseSelector, wake: socket.socket) -> int:
        deadline: float | None = None
        while True:
            for key, _ in selector.select(timeout=TICK):
                if key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        wake.recv(4096)
                elif key.data == "metrics":
                    self._accept_metrics(selector)
                elif isinstance(key.data, _MetricsClient):
                    self._metrics_io(selector, key.data)
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
            now = time.monotonic()
            self._expire_metrics(selector, now)
            while self._restarts and self._restarts[0] <= now and not self._stopping:
                self._restarts.pop(0)
                self._spawn()
            if self._stopping:
                if not self._workers:
                    _log.info("all workers stopped")
                    return 0
                if deadline is not None and now > deadline:
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
            now = time.monotonic()
            if now - started < RESTART_PAUSE:  # dying at start: replace it later, without spinning
                throttle.log(
                    logging.ERROR,
                    "worker-died-early",
                    "worker %d exited unexpectedly right after starting (status %d); starting another in %gs",
                    pid,
                    status,
                    RESTART_PAUSE,
                )
                self._restarts.append(now + RESTART_PAUSE)
                continue
            _log.error("worker %d exited unexpectedly (status %d); starting another", pid, status)
            self._spawn()

    def _spawn(self) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid:
            self._workers[pid] = time.monotonic()
            return
        status = 1
        try:
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            die_with_parent(signal.SIGTERM)
            if os.getppid() != parent:  # the supervisor died before the line above took effect
                os._exit(0)
            if self._metrics_sock is not None:
                self._metrics_sock.close()
            for client in self._clients:
                client.sock.close()
            status = _worker(
                self._loaded, self._path, self._sock, self._factory, metrics=self._shared_metrics is not None
            )
        except BaseException:
            _log.critical("worker %d crashed", os.getpid(), exc_info=True)
            raise  # into the finally below: a forked child must never return into the supervisor's code
        finally:
            logging.shutdown()
            os._exit(status)

    # -- the metrics endpoint, without blocking

    def _accept_metrics(self, selector: selectors.BaseSelector) -> None:
        assert self._metrics_sock is not None  # noqa: S101 - registered only when set
        for _ in range(MAX_METRICS_CLIENTS):
            try:
                conn, _ = self._metrics_sock.accept()
            except OSError:  # nothing waiting, or no descriptor left: retried at the next wake-up
                return
            if len(self._clients) >= MAX_METRICS_CLIENTS:
                throttle.warning("metrics-busy", "too many metrics clients at once; closing a new one")
                conn.close()
                continue
            conn.setblocking(False)  # noqa: FBT003 - the stdlib signature
            client = _MetricsClient(conn, time.monotonic() + METRICS_DEADLINE)
            self._clients.add(client)
            selector.register(conn, selectors.EVENT_READ, client)

    def _metrics_io(self, selector: selectors.BaseSelector, client: _MetricsClient) -> None:
        try:
            if client.out is None:
                data = client.sock.recv(4096)
                if not data:
                    self._drop(selector, client)
                    return
                client.out = client.request.receive(data)
                if client.out is not None:
                    selector.modify(client.sock, selectors.EVENT_WRITE, client)
                return
            sent = client.sock.send(client.out)
            client.out = client.out[sent:]
            if not client.out:
                self._drop(selector, client)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(selector, client)

    def _expire_metrics(self, selector: selectors.BaseSelector, now: float) -> None:
        for client in [c for c in self._clients if c.deadline < now]:
            throttle.warning("metrics-slow", "closing a metrics client that took over %gs", METRICS_DEADLINE)
            self._drop(selector, client)

    def _drop(self, selector: selectors.BaseSelector, client: _MetricsClient) -> None:
        self._clients.discard(client)
        with contextlib.suppress(KeyError, ValueError, OSError):
            selector.unregister(client.sock)
        client.sock.close()


def _worker(
    loaded: Loaded,
    config_path: str,
    sock: socket.socket,
    factory: KeySourceFactory,
    *,
    metrics: bool,
) -> int:
    """A forked worker: its own event loop on the shared listening socket."""
    counters = prometheus() if metrics else None

    async def main() -> None:
        server = MilterServer(
            loaded, config_path=config_path, metrics=counters, key_source_factory=factory, watch_parent=True
        )
        await server.serve(sock, handle_signals=True)

    eventloop.run(main())  # uvloop when installed (mailseal.milter.eventloop)
    return 0
