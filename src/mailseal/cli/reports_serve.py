"""``mailseal reports serve`` (the read-only web page and /metrics) and ``reports metrics`` (the same text once)."""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from pathlib import Path
from typing import Any

from mailseal.errors import UsageError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``reports serve`` and ``reports metrics``."""
    p = sub.add_parser(
        "serve", parents=[common], help="read-only web page and Prometheus /metrics (loopback)"
    )
    p.add_argument("--listen", default="127.0.0.1:8025", metavar="HOST:PORT", help="default 127.0.0.1:8025")
    p.add_argument(
        "--public",
        action="store_true",
        help="allow a non-loopback address (put an authenticating proxy in front: docs/reports.md)",
    )
    p.add_argument(
        "--host-name", action="append", default=[], help="extra Host header to accept (behind a proxy)"
    )
    p.add_argument("--keys-store", type=Path, help="key store to join with (default: the configured one)")
    p.add_argument("--no-keys", action="store_true", help="do not join with a key store")
    p.set_defaults(handler=_serve)

    p = sub.add_parser(
        "metrics", parents=[common], help="print the Prometheus metrics once (textfile collector)"
    )
    p.set_defaults(handler=_metrics)


def _split(listen: str) -> tuple[str, int]:
    host, colon, port = listen.rpartition(":")
    if not colon or not port.isdigit():
        raise UsageError(f"--listen takes HOST:PORT, not {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _serve(args: argparse.Namespace) -> int:
    from mailseal.cli.reports import open_keys, open_store  # the parent module imports this one
    from mailseal.reports.serve import PageContext, make_server

    host, port = _split(args.listen)
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not args.public:
        raise UsageError(
            f"{host} is not a loopback address; add --public (and an authenticating proxy) to serve it"
        )
    store = open_store(args, readonly=True)
    keys = open_keys(args)
    fixed = args.now

    def clock() -> int:
        return int(fixed) if fixed is not None else int(time.time())

    server = make_server(PageContext(store, keys, clock), host, port, extra_hosts=args.host_name)
    bound = server.server_address[1]
    print(
        f"serving DMARC reports of {store.path} on http://{host}:{bound}/ (metrics at /metrics)", flush=True
    )
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        store.close()
        if keys is not None:
            keys.close()
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from mailseal.cli.reports import now_of, open_store
    from mailseal.reports.metrics import render_metrics

    store = open_store(args, readonly=True)
    try:
        sys.stdout.write(render_metrics(store, now=now_of(args)))
    finally:
        store.close()
    return 0
