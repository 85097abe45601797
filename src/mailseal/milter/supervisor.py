"""The worker supervisor: the parent of the worker processes.

Signing is CPU-bound, so one Python process would cap throughput at one
core: the supervisor forks one worker per core on the shared listening
socket, forwards SIGHUP/SIGTERM, replaces workers that die, and serves the
metrics endpoint (summed over the workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import selectors
import signal
import socket
import time
from dataclasses import replace

from mailseal.errors import ConfigError, UsageError
from mailseal.milter.loading import KeySourceFactory, Loaded, key_problem_lines, load
from mailseal.milter.metrics_http import http_response, prometheus
from mailseal.milter.server import MilterServer

_log = logging.getLogger("mailseal.milter")


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
    counters = prometheus() if metrics else None

    async def main() -> None:
        server = MilterServer(loaded, config_path=config_path, metrics=counters, key_source_factory=factory)
        await server.serve(sock, handle_signals=True)

    asyncio.run(main())
    return 0
