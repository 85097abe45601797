"""The ``mailseal milter`` process: bind, drop privileges, load keys, then serve.

One worker serves in this process; more are forked under the
:class:`~mailseal.milter.supervisor.Supervisor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import tempfile

from mailseal.milter import eventloop
from mailseal.milter.config import load_config
from mailseal.milter.loading import (
    KeySourceFactory,
    Loaded,
    config_key_source,
    key_absent_lines,
    key_problem_lines,
)
from mailseal.milter.metrics_http import prometheus, serve_metrics
from mailseal.milter.server import MilterServer
from mailseal.milter.sockets import (
    account,
    bound_address,
    drop_privileges,
    exposure_warning,
    metrics_listener,
    open_listener,
    raise_descriptor_limit,
)
from mailseal.milter.supervisor import Supervisor

_log = logging.getLogger("mailseal.milter")


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
    before, after = raise_descriptor_limit()
    if after != before:
        _log.info("descriptor limit raised from %d to %d (ulimit -n)", before, after)
    sock = open_listener(settings.socket, mode=settings.socket_mode, group=settings.socket_group)
    metrics_sock = metrics_listener(settings.metrics) if settings.metrics else None
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
        return Supervisor(
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


def _run_single(
    loaded: Loaded,
    config_path: str,
    sock: socket.socket,
    metrics_sock: socket.socket | None,
    factory: KeySourceFactory,
) -> int:
    metrics = prometheus() if metrics_sock is not None else None

    async def main() -> None:
        server = MilterServer(loaded, config_path=config_path, metrics=metrics, key_source_factory=factory)
        if metrics_sock is not None:
            metrics_sock.setblocking(False)  # noqa: FBT003 - the stdlib signature
            endpoint = await asyncio.start_server(serve_metrics, sock=metrics_sock)
            server.attach(endpoint)
        await server.serve(sock, handle_signals=True)

    eventloop.run(main())  # uvloop when installed (mailseal.milter.eventloop)
    return 0
