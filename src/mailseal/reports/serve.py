"""``reports serve``: a small read-only web page over the report store, and ``/metrics``.

Pages are rendered on the server from the store (no JavaScript at all; the
chart is inline SVG) and every value that came from a report -- reporter
names, domains, selectors, IPs -- goes through ``html.escape`` or URL quoting
before it reaches the page. The Content-Security-Policy allows nothing but
the page's own stylesheet, so even a missed escape could not run a script.
The server binds loopback by default, answers only GET/HEAD, checks the Host
header (so a DNS-rebinding page cannot read it through a victim's browser),
and gives each request a deadline. For access from elsewhere, put it behind a
reverse proxy that authenticates (docs/reports.md).
"""

from __future__ import annotations

import contextlib
import html
import http.server
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qs, quote, unquote, urlsplit

from mailseal.keys.store import KeyStore
from mailseal.reports.feedback import selector_feedback
from mailseal.reports.metrics import render_metrics
from mailseal.reports.store import DAY, DailyRow, ReportStore
from mailseal.reports.summary import Summary, SummaryRow, summarize

__all__ = ["PageContext", "make_server", "render"]

COLORS: Final = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
CSP: Final = "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
STYLE: Final = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1100px}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
td,th{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.warn{color:#a00}.ok{color:#060}.muted{color:#777}
#passchart{border:1px solid #ddd;background:#fcfcfc}
nav a{margin-right:1em}
code{background:#f3f3f3;padding:0 .2em}
"""
PERIODS: Final = (7, 30, 90, 365)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _q(value: str) -> str:
    return quote(value, safe="")


def _date(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


@dataclass(frozen=True, slots=True)
class PageContext:
    """What every page reads: the stores and the clock."""

    store: ReportStore
    keys: KeyStore | None
    clock: Callable[[], int]


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(title)}</title><link rel=stylesheet href=/style.css></head>"
        f"<body><nav><a href=/>all domains</a><a href=/metrics>metrics</a></nav>{body}</body></html>"
    )


def render_index(ctx: PageContext) -> str:
    """Every report domain with its totals."""
    rows = []
    for domain in ctx.store.domains():
        totals = ctx.store.totals(domain=domain)
        daily = ctx.store.daily(domain=domain)
        messages = sum(r.messages for r in daily if r.selector is not None)
        passed = sum(r.dkim_pass for r in daily)
        last = _date(totals.last_report) if totals.last_report is not None else "-"
        rows.append(
            f"<tr><td><a href='/d/{_q(domain)}'>{_e(domain)}</a></td><td class=n>{totals.reports}</td>"
            f"<td class=n>{totals.messages}</td><td class=n>{_pct(passed, messages)}</td><td>{last}</td></tr>"
        )
    table = (
        "<table><tr><th>domain</th><th class=n>reports</th><th class=n>messages</th>"
        "<th class=n>DKIM pass (signed mail)</th><th>last report</th></tr>" + "".join(rows) + "</table>"
        if rows
        else "<p>No reports stored yet: point your domain's <code>rua</code> here (see docs/reports.md).</p>"
    )
    return _page("DMARC reports", f"<h1>DMARC aggregate reports</h1>{table}")


def _chart(rows: Sequence[DailyRow], selectors: Sequence[tuple[str, str]], first: int, last: int) -> str:
    """Inline SVG: DKIM pass rate per day for each (domain, selector), one polyline each."""
    width, height, left, top, bottom = 760, 260, 48, 12, 28
    span = max(DAY, last - first)
    per: dict[tuple[str, str], dict[int, list[int]]] = {s: {} for s in selectors}
    for row in rows:
        key = (row.domain, row.selector or "")
        if key in per:
            cell = per[key].setdefault(row.day, [0, 0])
            cell[0] += row.messages
            cell[1] += row.dkim_pass

    def x(day: int) -> float:
        return left + (width - left - 10) * (day - first) / span

    def y(rate: float) -> float:
        return top + (height - top - bottom) * (1 - rate)

    parts: list[str] = [
        f"<svg id=passchart xmlns='http://www.w3.org/2000/svg' width={width} height={height} "
        f"viewBox='0 0 {width} {height}' role=img aria-label='DKIM pass rate per day and selector'>"
    ]
    parts.extend(
        f"<line x1={left} x2={width - 10} y1={y(tick):.1f} y2={y(tick):.1f} stroke='#ddd'/>"
        f"<text x=4 y={y(tick) + 4:.1f} font-size=11>{int(tick * 100)}%</text>"
        for tick in (0, 0.5, 1)
    )
    parts.append(f"<text x={left} y={height - 8} font-size=11>{_date(first)}</text>")
    parts.append(f"<text x={width - 90} y={height - 8} font-size=11>{_date(last)}</text>")
    for number, key in enumerate(selectors):
        color = COLORS[number % len(COLORS)]
        days = sorted(per[key].items())
        points = " ".join(f"{x(day):.1f},{y(p / m):.1f}" for day, (m, p) in days if m)
        label = f"{key[1]} ({key[0]})"
        parts.append(
            f"<polyline class=series data-selector='{_e(key[1])}' data-domain='{_e(key[0])}' fill=none "
            f"stroke='{color}' stroke-width=2 points='{points}'><title>{_e(label)}</title></polyline>"
        )
        for day, (m, p) in days:
            if m:
                parts.append(
                    f"<circle cx={x(day):.1f} cy={y(p / m):.1f} r=3 fill='{color}'>"
                    f"<title>{_e(label)} {_date(day)}: {p}/{m} pass</title></circle>"
                )
    parts.append("</svg>")
    legend = " ".join(
        f"<svg width=10 height=10 aria-hidden=true><rect width=10 height=10 fill='{COLORS[n % len(COLORS)]}'/></svg> "
        f"{_e(s)} <span class=muted>({_e(d)})</span>"
        for n, (d, s) in enumerate(selectors)
    )
    return "".join(parts) + f"<p class=legend>{legend}</p>"


def _key_cell(row: SummaryRow) -> str:
    if row.known_selector is None:
        return "<span class=muted>no key store</span>"
    if row.selector is None:
        return "<span class=muted>unsigned</span>"
    if not row.known_selector:
        return "<span class=warn>not ours</span>"
    return _e(row.key_state or "")


def _drill(row: SummaryRow, text: str) -> str:
    if row.selector is None:
        return text
    link = f"/records?domain={_q(row.domain)}&selector={_q(row.selector)}&receiver={_q(row.receiver)}"
    return f"<a href='{_e(link)}'>{text}</a>"


def render_domain(ctx: PageContext, domain: str, days: int | None) -> str:
    """One domain: chart, selectors with rotation feedback, receivers, failing and unknown sources."""
    now = ctx.clock()
    summary: Summary = summarize(ctx.store, ctx.keys, domain=domain, since_days=days, now=now)
    rows = ctx.store.daily(domain=domain, since_day=summary.since_day)
    periods = (
        " ".join(f"<a href='/d/{_q(domain)}?days={n}'>{n} days</a>" for n in PERIODS)
        + f" <a href='/d/{_q(domain)}'>everything</a>"
    )
    body = [f"<h1>{_e(domain)}</h1><p>{periods}</p>"]
    totals = summary.totals
    period = f"since {_date(summary.since_day)}" if summary.since_day is not None else "everything stored"
    body.append(
        f"<p id=totals>{totals.reports} reports, {totals.records} records, {totals.messages} messages ({period}).</p>"
    )
    if summary.findings:
        body.append("<h2>Warnings</h2><ul id=findings>")
        body += [f"<li class=warn data-code='{_e(f.code)}'>{_e(f.message)}</li>" for f in summary.findings]
        body.append("</ul>")
    per_selector: dict[tuple[str, str], list[int]] = {}
    for row in summary.rows:
        if row.selector is not None:
            cell = per_selector.setdefault((row.domain, row.selector), [0, 0, 0])
            cell[0] += row.messages
            cell[1] += row.dkim_pass
            cell[2] += row.aligned_pass
    ranked = sorted(per_selector, key=lambda k: -per_selector[k][0])[: len(COLORS)]
    if rows and ranked:
        first = min(r.day for r in rows)
        last = max(r.day for r in rows)
        body.append("<h2>DKIM pass rate per day</h2>" + _chart(rows, ranked, first, last))
    body.append(
        "<h2>Selectors</h2><table id=selectors><tr><th>selector</th><th>signing domain</th><th>key</th>"
        "<th class=n>messages</th><th class=n>DKIM pass</th><th class=n>aligned pass</th><th>what the reports say</th></tr>"
    )
    states = {(r.domain, r.selector): _key_cell(r) for r in summary.rows if r.selector is not None}
    for key in sorted(per_selector, key=lambda k: -per_selector[k][0]):
        messages, passed, aligned = per_selector[key]
        feedback = selector_feedback(ctx.store, key[0], key[1], since_day=summary.since_day)
        body.append(
            f"<tr data-selector='{_e(key[1])}' data-domain='{_e(key[0])}'><td>{_e(key[1])}</td><td>{_e(key[0])}</td>"
            f"<td>{states[key]}</td><td class=n>{messages}</td><td class='n passrate'>{_pct(passed, messages)}</td>"
            f"<td class=n>{_pct(aligned, messages)}</td><td>{_e(feedback.sentence().removeprefix('reports: '))}</td></tr>"
        )
    body.append("</table>")
    body.append(
        "<h2>By receiver</h2><table id=receivers><tr><th>selector</th><th>signing domain</th><th>receiver</th>"
        "<th class=n>messages</th><th class=n>DKIM pass</th><th class=n>aligned</th><th class=n>failed</th>"
        "<th class=n>failed: forwarding / lists</th><th>key</th></tr>"
    )
    for row in summary.rows:
        body.append(
            f"<tr><td>{_e(row.selector or '(no signature)')}</td><td>{_e(row.domain)}</td>"
            f"<td class=receiver>{_drill(row, _e(row.receiver))}</td><td class=n>{row.messages}</td>"
            f"<td class=n>{_pct(row.dkim_pass, row.messages)}</td><td class=n>{_pct(row.aligned_pass, row.messages)}</td>"
            f"<td class=n>{row.real_fail}</td><td class=n>{row.forwarded_fail}</td><td>{_key_cell(row)}</td></tr>"
        )
    body.append("</table>")
    suspicious = [r for r in summary.rows if r.known_selector is False or r.real_fail > 0]
    body.append("<h2>Failing and unknown sources</h2>")
    if suspicious:
        body.append(
            "<table id=failing><tr><th>selector</th><th>signing domain</th><th>receiver</th><th class=n>failed</th>"
            "<th>why listed</th></tr>"
        )
        for row in suspicious:
            why = []
            if row.known_selector is False and row.selector is not None:
                why.append("selector not in the key store")
            if row.selector is None:
                why.append("no DKIM signature")
            if row.real_fail:
                why.append(f"{row.real_fail} DKIM failures not explained by forwarding")
            body.append(
                f"<tr><td>{_drill(row, _e(row.selector or '(none)'))}</td><td>{_e(row.domain)}</td>"
                f"<td>{_e(row.receiver)}</td><td class=n>{row.real_fail}</td><td>{_e('; '.join(why))}</td></tr>"
            )
        body.append("</table>")
    else:
        body.append("<p class=ok>None in this period.</p>")
    return _page(f"{domain}: DMARC reports", "".join(body))


def render_records(ctx: PageContext, domain: str, selector: str, receiver: str | None) -> str:
    """The stored records behind one row (newest first, at most 200)."""
    found = ctx.store.records(domain=domain, selector=selector, receiver=receiver, limit=200)
    head = f"{selector}._domainkey.{domain}" + (f" at {receiver}" if receiver else "")
    body = [
        f"<h1>Records: {_e(head)}</h1><table id=records><tr><th>receiver</th><th>report</th><th>period</th>"
        "<th>source IP</th><th class=n>messages</th><th>disposition</th><th>header From</th><th>DKIM</th>"
        "<th>SPF</th><th>overrides</th></tr>"
    ]
    for record in found:
        dkim = "; ".join(f"{d} s={s or '-'}: {r}" for d, s, r in record.dkim)
        spf = "; ".join(f"{d or '-'}: {r}" for d, r in record.spf)
        body.append(
            f"<tr><td>{_e(record.reporter)}</td><td>{_e(record.report_id)}</td>"
            f"<td>{_date(record.begin)}..{_date(record.end)}</td><td>{_e(record.source_ip)}</td>"
            f"<td class=n>{record.count}</td><td>{_e(record.disposition)}</td><td>{_e(record.header_from)}</td>"
            f"<td>{_e(dkim)}</td><td>{_e(spf)}</td><td>{_e(', '.join(record.overrides))}</td></tr>"
        )
    body.append("</table>")
    if not found:
        body.append("<p class=muted>No records.</p>")
    return _page(f"records {head}", "".join(body))


def render(ctx: PageContext, target: str) -> tuple[int, str, str]:
    """(status, content type, body) for a request target; the whole routing table."""
    parts = urlsplit(target)
    query = {k: v[0] for k, v in parse_qs(parts.query, max_num_fields=8).items()}
    path = parts.path
    if path == "/":
        return 200, "text/html; charset=utf-8", render_index(ctx)
    if path == "/style.css":
        return 200, "text/css; charset=utf-8", STYLE
    if path == "/metrics":
        return 200, "text/plain; version=0.0.4; charset=utf-8", render_metrics(ctx.store, now=ctx.clock())
    if path.startswith("/d/"):
        domain = unquote(path[3:]).lower()
        days_text = query.get("days", "")
        days = int(days_text) if days_text.isdigit() and len(days_text) <= 5 else None
        if domain not in ctx.store.domains():
            return 404, "text/html; charset=utf-8", _page("not found", f"<p>No reports for {_e(domain)}.</p>")
        return 200, "text/html; charset=utf-8", render_domain(ctx, domain, days)
    if path == "/records" and query.get("domain") and query.get("selector"):
        return (
            200,
            "text/html; charset=utf-8",
            render_records(ctx, query["domain"].lower(), query["selector"].lower(), query.get("receiver")),
        )
    return 404, "text/html; charset=utf-8", _page("not found", "<p>Not found.</p>")


REQUEST_HEAD_BYTES: Final = 16 * 1024
"""Bytes of request line and header fields read; a GET from a browser or a scraper needs ~1 KiB."""

LINGER_BYTES: Final = 256 * 1024
LINGER_SECONDS: Final = 2.0
"""After a 431, input still read and dropped before the close, so the answer arrives.

Closing a socket with unread input sends a reset, and the client's kernel may
discard the 431 already on its way; a lingering close (as HTTP servers do)
drains a bounded amount for a bounded time first."""


class _CappedReader:
    """The connection's input for the request head, cut off after ``limit`` bytes.

    The standard library would read 100 header lines of 64 KiB each (6.5 MB
    per connection); past the cap lines read as end of input, and the handler
    answers 431.
    """

    def __init__(self, raw: Any, limit: int) -> None:
        self._raw = raw
        self._left = limit
        self.exhausted = False

    def readline(self, size: int = -1) -> bytes:
        if self._left <= 0:
            self.exhausted = True
            return b""
        line: bytes = self._raw.readline(self._left if size < 0 else min(size, self._left))
        self._left -= len(line)
        return line

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._raw.read(self._left if size < 0 else min(size, self._left))
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._raw.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "mailseal-reports"
    sys_version = ""
    timeout = 15  # seconds a client may take to send its request
    context: PageContext
    hosts: set[str]

    def setup(self) -> None:
        """Read the request head through :class:`_CappedReader`."""
        super().setup()
        self.rfile = _CappedReader(self.rfile, REQUEST_HEAD_BYTES)  # type: ignore[assignment]

    def _answer(self, *, body: bool) -> None:
        server = self.server
        if isinstance(server, PageServer) and not server.request_read(self.connection):
            return  # closed to make room while its head trickled in: nobody to answer
        if isinstance(self.rfile, _CappedReader) and self.rfile.exhausted:
            self.send_error(431, "request head too large")
            self._linger()
            return
        host = (self.headers.get("Host") or "").lower()
        if host not in self.hosts:
            self.send_error(421, "unexpected Host header")
            return
        try:
            status, ctype, text = render(self.context, self.path[:2048])
        except Exception:  # noqa: BLE001 - the one boundary: a page error must not kill the server
            status, ctype, text = 500, "text/plain; charset=utf-8", "internal error\n"
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _linger(self) -> None:
        """Half-close, then drain what the client still sends (bounded) so the answer is not reset away."""
        self.close_connection = True
        conn = self.connection
        deadline = time.monotonic() + LINGER_SECONDS
        drained = 0
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)
            while drained < LINGER_BYTES:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                conn.settimeout(left)
                chunk = conn.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)

    def do_GET(self) -> None:
        """Serve a page."""
        self._answer(body=True)

    def do_HEAD(self) -> None:
        """Headers only."""
        self._answer(body=False)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the command prints its own one line at start."""


MAX_CONNECTIONS: Final = 32
EVICT_MIN_IDLE: Final = 1.0
"""A connection that has not sent its whole request for this long may be closed to admit a new one."""
EVICT_WAIT: Final = 2.0
"""Seconds the accepting thread waits for an evicted connection's slot before refusing instead."""
REQUEST_DEADLINE = 20.0
"""Seconds one connection may live, reading its request and writing the page, in all.

The handler's ``timeout`` (15 s) applies to each read, so a client sending one
byte every 14 s would otherwise hold a slot forever, and 32 of them the server."""


def _cut(request: socket.socket) -> None:
    """Unblock whatever the handler waits for on this connection (its read or write fails)."""
    with contextlib.suppress(OSError):  # already closed
        request.shutdown(socket.SHUT_RDWR)


class PageServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """One thread per connection, at most ``MAX_CONNECTIONS`` at once.

    At the cap, the connection that has waited longest without sending a whole
    request (at least ``EVICT_MIN_IDLE``) is closed to admit the new one: idle or
    trickling clients -- a browser's spare preconnects, a slowloris -- cannot lock
    a reader out. When every connection is being answered, the new one is closed.
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 16

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._lock = threading.Lock()
        self._live: dict[Any, float] = {}
        self._reading: dict[Any, float] = {}  # connections still reading their request -> since when
        self._closed = threading.Event()
        self._last_error = -10.0
        threading.Thread(target=self._watch, name="reports-deadlines", daemon=True).start()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Over the cap, make room by closing the stalest idle connection, else refuse (close) this one."""
        if not self._slots.acquire(blocking=False) and not (
            self._evict_idle() and self._slots.acquire(timeout=EVICT_WAIT)
        ):
            self.shutdown_request(request)
            return
        with self._lock:
            self._reading[request] = time.monotonic()
        super().process_request(request, client_address)

    def _evict_idle(self) -> bool:
        """Cut the connection waiting longest (at least EVICT_MIN_IDLE) for its request; False if none."""
        now = time.monotonic()
        with self._lock:
            stale = [(since, id(r), r) for r, since in self._reading.items() if now - since >= EVICT_MIN_IDLE]
            if not stale:
                return False
            _, _, victim = min(stale)
            del self._reading[victim]
        _cut(victim)  # its handler reads end of input and frees the slot
        return True

    def request_read(self, request: Any) -> bool:
        """The request head is in: the connection is being answered. False if it was evicted meanwhile."""
        with self._lock:
            return self._reading.pop(request, None) is not None

    @property
    def connection_count(self) -> int:
        """Connections being served (for tests)."""
        with self._lock:
            return len(self._live)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve one connection under its absolute deadline, then free its slot."""
        with self._lock:
            self._live[request] = time.monotonic() + REQUEST_DEADLINE
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._live.pop(request, None)
                self._reading.pop(request, None)
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """No traceback per failed connection (socketserver's default): a client resetting at
        will would make a log storm. One line per 10 s, and none for a client that went away."""
        failure = sys.exc_info()[1]
        if isinstance(failure, OSError):
            return
        now = time.monotonic()
        if now - self._last_error >= 10.0:
            self._last_error = now
            sys.stderr.write(f"mailseal reports serve: a request failed: {type(failure).__name__}\n")

    def server_close(self) -> None:
        """Stop the deadline thread too."""
        self._closed.set()
        super().server_close()

    def _watch(self) -> None:
        """One thread for all deadlines: cut every connection past its own, four times a second."""
        while not self._closed.wait(0.25):
            now = time.monotonic()
            with self._lock:
                late = [request for request, deadline in self._live.items() if deadline <= now]
            for request in late:
                _cut(request)


def make_server(ctx: PageContext, host: str, port: int, *, extra_hosts: Sequence[str] = ()) -> PageServer:
    """A bound server (port 0: any free port); serve with ``serve_forever()``."""
    hosts: set[str] = set()
    handler: type[_Handler] = type("Handler", (_Handler,), {"context": ctx, "hosts": hosts})
    server = PageServer((host, port), handler)
    bound = server.server_address[1]
    names = {host, "localhost", "127.0.0.1", "[::1]", *extra_hosts}
    hosts.update({f"{n}:{bound}" for n in names} | set(extra_hosts))  # the handler class holds this same set
    return server
