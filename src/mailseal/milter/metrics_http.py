"""The metrics HTTP endpoint: ``GET /metrics`` answered with the Prometheus exposition.

One exchange, :class:`MetricsRequest`, holds the rules (a bounded request
head, the answer); two thin drivers move its bytes: :func:`serve_metrics` in a
worker's event loop, and the supervisor's non-blocking selector loop. Both
give a client :data:`METRICS_DEADLINE` seconds in all (trickling bytes does
not extend it) and never block on it: a slow client cannot delay a signal or
the replacement of a dead worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from mailseal.milter.logline import throttle
from mailseal.milter.metrics import Metrics

METRICS_DEADLINE: Final = 5.0
"""Seconds a metrics client has for its whole exchange (request and response)."""
MAX_REQUEST: Final = 8192
"""Bytes of request head read; a larger request gets 431."""
MAX_METRICS_CLIENTS: Final = 16
"""Metrics clients served at once; more are closed at once (scrapers make one request at a time)."""
_active = 0  # metrics clients being served by this process's event loop
_TOO_LARGE: Final = b"HTTP/1.0 431 Request Header Fields Too Large\r\nContent-Length: 0\r\n\r\n"
_UNAVAILABLE: Final = b"HTTP/1.0 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"


class MetricsRequest:
    """One HTTP exchange without I/O: feed request bytes, get the response once the head is complete."""

    def __init__(self) -> None:
        """An empty request."""
        self._head = bytearray()

    def receive(self, data: bytes) -> bytes | None:
        """The response when the request head is complete (or too large); None while it is not."""
        self._head += data
        if b"\r\n\r\n" in self._head:
            return http_response(bytes(self._head))
        if len(self._head) > MAX_REQUEST:
            return _TOO_LARGE
        return None


async def serve_metrics(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The event-loop driver of :class:`MetricsRequest` (one worker, no supervisor)."""
    global _active  # one event loop per process serves metrics
    if _active >= MAX_METRICS_CLIENTS:
        writer.transport.abort()
        return
    _active += 1
    request = MetricsRequest()
    finished = False
    try:
        async with asyncio.timeout(METRICS_DEADLINE):
            response = None
            while response is None:
                data = await reader.read(4096)
                if not data:
                    return
                response = request.receive(data)
            writer.write(response)
            await writer.drain()
            finished = True
    except (TimeoutError, ConnectionError):
        pass
    finally:
        if finished:
            writer.close()
        else:
            writer.transport.abort()  # never wait for a client that does not read
        _active -= 1
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def http_response(head: bytes) -> bytes:
    """Answer ``GET /metrics`` (or ``/``) with the exposition; anything else 404/405."""
    from mailseal.milter.metrics import exposition

    request = head.split(b"\r\n", 1)[0].split()
    if len(request) < 2 or request[0] not in (b"GET", b"HEAD"):
        return b"HTTP/1.0 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n"
    if request[1].split(b"?")[0] not in (b"/", b"/metrics"):
        return b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    try:
        body, content_type = exposition()
    except Exception as exc:  # noqa: BLE001 - the one boundary: a scrape must never stop the filter
        throttle.warning(
            "metrics-unavailable", "could not collect the metrics (%s); answered 503", type(exc).__name__
        )
        return _UNAVAILABLE
    head_out = f"HTTP/1.0 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head_out.encode("ascii") + (body if request[0] == b"GET" else b"")


def prometheus() -> Metrics:
    """The metrics a worker counts when the endpoint is on (prometheus_client is imported only then)."""
    from mailseal.milter.metrics import PrometheusMetrics

    return PrometheusMetrics()
