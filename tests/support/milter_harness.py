"""Run a MilterServer in a background thread on 127.0.0.1 (port 0), and write test configurations."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from mailseal.core.keymaterial import PrivateKey
from mailseal.core.keyrecord import KeyRecord
from mailseal.dns.interface import KeyResolver
from mailseal.dns.memory import InMemoryResolver
from mailseal.keys.files import write_private_key
from mailseal.milter.loading import Loaded, load
from mailseal.milter.metrics import Metrics
from mailseal.milter.server import MilterServer

T = TypeVar("T")

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: a test\r\n"
    b"  folded onto a second line\r\n"
    b"Date: Thu, 1 Jan 2026 10:00:00 +0000\r\n"
    b"Message-ID: <test@example.com>\r\n"
    b"\r\n"
    b"Hello Bob,\r\n\r\nthis is the body.\r\n  with  odd   spacing \r\n\r\n\r\n"
)


def toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(
    folder: Path,
    keys: Mapping[str, tuple[PrivateKey | None, str, str]],
    table: Mapping[str, Sequence[str]],
    extra: str = "",
    *,
    name: str = "milter.toml",
    socket_spec: str = "inet:8891@127.0.0.1",
    milter_settings: str = "",
) -> Path:
    """A configuration with ``keys`` (name -> key or None for a missing file, domain, selector)."""
    lines = [
        "[milter]",
        f"socket = {toml_string(socket_spec)}",
        'authserv_id = "mx.test"',
        milter_settings,
        "",
    ]
    for key_name, (key, domain, selector) in keys.items():
        path = folder / f"{key_name}.key"
        if key is not None and not path.exists():
            write_private_key(path, key)
        lines += [
            f"[key_table.{toml_string(key_name)}]",
            f"domain = {toml_string(domain)}",
            f"selector = {toml_string(selector)}",
            f"file = {toml_string(str(path))}",
            "",
        ]
    lines.append("[signing_table]")
    lines += [
        f"{toml_string(pattern)} = [{', '.join(toml_string(n) for n in names)}]"
        for pattern, names in table.items()
    ]
    lines += ["", extra]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def dns_records(keys: Mapping[str, tuple[PrivateKey | None, str, str]]) -> dict[str, str]:
    """The TXT record of each key, by name."""
    records = {}
    for key, domain, selector in keys.values():
        if key is not None:
            records[f"{selector}._domainkey.{domain}"] = KeyRecord.for_key(
                key.key_type, key.public_key_b64()
            ).to_text()
    return records


class ServerThread:
    """A MilterServer on its own event loop in a thread, listening on 127.0.0.1:0."""

    def __init__(
        self,
        loaded: Loaded,
        *,
        resolver: KeyResolver | None = None,
        config_path: str | None = None,
        clock: Callable[[], float] | None = None,
        metrics: Metrics | None = None,
        unix_path: str | None = None,
        config_resolver: bool = False,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        kwargs: dict[str, Any] = {}
        if clock is not None:
            kwargs["clock"] = clock
        self.server = MilterServer(
            loaded,
            config_path=config_path,
            resolver=None if config_resolver else resolver if resolver is not None else InMemoryResolver(),
            metrics=metrics,
            **kwargs,
        )
        if unix_path is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.bind(unix_path)
            self.address: tuple[str, int] | str = unix_path
        else:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._sock.bind(("127.0.0.1", 0))
            self.address = self._sock.getsockname()
        self._sock.listen(64)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self.server.start(self._sock))
        self._started.set()
        self._loop.run_forever()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._started.wait(10)
        return self

    def __exit__(
        self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]
    ) -> None:
        if not self.server.stopping:
            self.stop(grace=0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the server's loop and return its result."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(function())
            except BaseException as exc:  # handed to the calling thread
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(10)

    @contextlib.contextmanager
    def stalled(self) -> Iterator[None]:
        """Hold the server's loop while the body runs, as a loaded host would: connections queue unaccepted."""
        entered = threading.Event()
        release = threading.Event()

        def hold() -> None:
            entered.set()
            release.wait(60)

        self._loop.call_soon_threadsafe(hold)
        assert entered.wait(30), "the server's loop never ran"
        try:
            yield
        finally:
            release.set()

    def stop_async(self, grace: float) -> Future[None]:
        """Begin a graceful stop; the future completes when it is done."""
        return asyncio.run_coroutine_threadsafe(self.server.stop(grace), self._loop)

    def stop(self, grace: float = 0) -> None:
        self.stop_async(grace).result(grace + 10)


def load_config_file(path: Path) -> Loaded:
    return load(str(path))
