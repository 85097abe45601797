"""The metrics HTTP endpoint: ``GET /metrics`` answered with the Prometheus exposition."""

from __future__ import annotations

import asyncio
import contextlib

from mailseal.milter.metrics import Metrics


async def serve_metrics(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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


def prometheus() -> Metrics:
    """The metrics a worker counts when the endpoint is on (prometheus_client is imported only then)."""
    from mailseal.milter.metrics import PrometheusMetrics

    return PrometheusMetrics()
