"""End-to-end milter benchmark: a private Postfix on loopback, with and without DKIM milters.

Run (as root, from the repository root):

    PYTHONPATH=src python benchmarks/bench_milter.py            # 3 runs of ~15 s per case
    PYTHONPATH=src python benchmarks/bench_milter.py --quick    # 1 run of ~5 s, for development

For each mode (sign: mail from an internal client is signed; verify: mail
carrying one valid signature is verified), message size (about 4 KB and 40 KB)
and configuration -- no milter, OpenDKIM, dkimpy-milter and mailseal, each on
a unix socket and on ``inet:`` -- it reports:

* the milter's own CPU time per message: utime+stime from /proc of the milter
  process and all its descendants (workers), children reaped included, over
  the throughput run. This is the most telling figure: on a 2-core machine
  Postfix itself is the bottleneck, so messages/s hides most of a milter's cost.
* Postfix's CPU time per message (all processes of the instance), the same way.
* end-to-end messages/s: Postfix's ``smtp-source`` sends COUNT messages, one
  per session, 10 sessions in parallel, into Postfix, which runs them through
  the milter and relays them to ``smtp-sink``; timed until the queue is empty.
* latency at a low fixed rate (about 20 messages/s, a new session per message):
  our own paced SMTP client measures from the end of DATA (the final ".") to
  the 250 reply, p50 and p99, and the difference to no milter.

Configurations are interleaved (run 1 of every configuration, then run 2 ...)
and medians over runs are printed, so drift and noise hit every configuration
alike. Before measuring, one message goes through each configuration into a
Python sink and is checked (signed and verifiable, or given dkim=pass), so a
misconfigured milter cannot look fast.

All milters sign with the same RSA-2048 key, relaxed/relaxed, the same header
list with From oversigned. For verifying, each milter gets the key record
locally: OpenDKIM via TestDNSData, dkimpy-milter via DNSOverride; mailseal has
no such setting, so it asks a loopback DNS server (a thread of this process)
and caches the answer for its TTL of a day -- one lookup per worker. Each
milter otherwise runs with its defaults (mailseal: one worker process per
core, one log line per message).
dkimpy-milter is installed into its own venv on first use (needs
libmilter-dev, python3-dev, gcc). mailseal's milter is used when
``python -m mailseal milter`` exists (or with --mailseal-cmd), configured from
MAILSEAL_CONFIG_TEMPLATE below (or --mailseal-config-template); otherwise that
configuration is skipped with a message. Only 127.0.0.1 is ever contacted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import math
import os
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import dns.message  # noqa: E402
import dns.rcode  # noqa: E402
import dns.rrset  # noqa: E402

import mailseal  # noqa: E402
from mailseal.core.algorithms import KeyType  # noqa: E402
from mailseal.dns.memory import InMemoryResolver  # noqa: E402
from support import dkimpy_milter  # noqa: E402
from support.dnsserver import ScriptedDnsServer, txt_strings  # noqa: E402
from support.opendkim_milter import (  # noqa: E402
    MilterStartError,
    OpenDKIMMilter,
    SigningKey,
    opendkim_available,
    tcp_listening,
    unix_socket_listening,
)
from support.postfix import (  # noqa: E402
    LOOPBACK,
    SMTP_SINK,
    SMTP_SOURCE,
    PostfixInstance,
    free_tcp_port,
    postfix_available,
)
from support.smtp_sink import SmtpSink  # noqa: E402

DOMAIN = "example.com"
SELECTOR = "bench"
AUTHSERV_ID = "mx.mailseal.test"
SENDER = f"alice@{DOMAIN}"
RECIPIENT = "bob@example.net"
SIGN_HEADERS = (
    "from",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "reply-to",
    "in-reply-to",
    "references",
)
SIZES = {"4KB": 4_000, "40KB": 40_000}
SESSIONS = 10
WORDS = """the quarterly figures show steady growth in all regions while costs remain under control
please review the attached notes before our meeting on thursday and send comments"""
LATENCY_RATE = 20.0

Mode = Literal["sign", "verify"]
SocketKind = Literal["unix", "inet"]

# What the mailseal milter is started with: a milter.toml in the format of docs/milter.md
# (src/mailseal/milter/config.py). Placeholders: {socket} (mailseal's syntax, "unix:/path"
# or "inet:PORT@127.0.0.1"), {authserv_id}, {internal_networks} (a TOML list: 127.0.0.1/32
# when signing; when verifying, one that does not match, as smtp-source always connects
# from 127.0.0.1 and mail from internal networks is signed, not verified), {sign_headers}
# (a TOML list), {domain}, {selector}, {key_file}, {nameserver} ("127.0.0.1:PORT", a
# loopback DNS server publishing the key record; answers are cached for their TTL).
# Workers: the default, one per core. Logging: the default, one line per message.
MAILSEAL_CONFIG_TEMPLATE = """\
# written by benchmarks/bench_milter.py
[milter]
socket = "{socket}"
authserv_id = "{authserv_id}"
socket_group = "postfix"         # Postfix's smtpd (user postfix) connects to the unix socket

[routing]
internal_networks = {internal_networks}

[signing]
canonicalization = "relaxed/relaxed"
headers = {sign_headers}
oversign = ["from"]

[key_table.bench]
domain = "{domain}"
selector = "{selector}"
file = "{key_file}"

[signing_table]
"{domain}" = ["bench"]

[verify]
nameservers = ["{nameserver}"]
"""


# --------------------------------------------------------------------------- messages


def make_message(size: int, seed: int) -> bytes:
    """A realistic message of about ``size`` bytes: plain text, plus a base64 attachment when large."""
    rng = random.Random(seed)
    words = WORDS.split()
    head = (
        f"From: Alice Example <{SENDER}>\r\n"
        f"To: Bob Example <{RECIPIENT}>\r\n"
        "Subject: Quarterly report and meeting notes\r\n"
        "Date: Thu, 1 Jan 2026 10:00:00 +0000\r\n"
        f"Message-ID: <bench-{seed}-{size}@{DOMAIN}>\r\n"
        "MIME-Version: 1.0\r\n"
    )
    text_lines: list[str] = []
    text_size = min(size, 3_600)
    while sum(len(line) + 2 for line in text_lines) < text_size - 600:
        text_lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(8, 13))).capitalize() + ".")
    text = "\r\n".join(text_lines) + "\r\n"
    if size <= 8_000:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text).encode()
    boundary = f"=_bench_{seed}"
    blob = rng.randbytes(int((size - len(text) - 900) * 3 / 4))
    encoded = base64.encodebytes(blob).decode().replace("\n", "\r\n")
    return (
        head + f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
        f'--{boundary}\r\nContent-Type: application/pdf; name="notes.pdf"\r\n'
        f'Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="notes.pdf"\r\n\r\n'
        f"{encoded}--{boundary}--\r\n"
    ).encode()


# --------------------------------------------------------------------------- CPU from /proc

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime+cutime+cstime in ticks) for every process now."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        # fields[1] = ppid; fields[11..14] = utime stime cutime cstime
        table[int(entry.name)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    return table


def tree_cpu_seconds(root: int, table: dict[int, tuple[int, int]] | None = None) -> float:
    """CPU seconds used by ``root`` and all its descendants, living or already reaped.

    A dead child's time sits in the cutime/cstime of the live ancestor that
    reaped it, so summing utime+stime+cutime+cstime over the live tree counts
    every process exactly once.
    """
    table = _proc_table() if table is None else table
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        if pid in table:
            total += table[pid][1]
            stack.extend(children.get(pid, []))
    return total / CLOCK_TICKS


# --------------------------------------------------------------------------- milters


class Milter(Protocol):
    """What the benchmark needs of a running milter."""

    @property
    def postfix_spec(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def stop(self) -> None: ...


class MailsealMilter:
    """``python -m mailseal milter --config FILE`` (or --mailseal-cmd) in its own process group."""

    def __init__(
        self,
        command: str,
        template: str,
        mode: Mode,
        socket_kind: SocketKind,
        key: mailseal.PrivateKey,
        event_loop: str = "auto",
    ) -> None:
        """Write key and config, start a DNS server with the key record, start the milter; wait until it listens.

        ``event_loop`` goes to MAILSEAL_EVENT_LOOP: auto (uvloop when installed) or asyncio.
        """
        self.workdir = Path(tempfile.mkdtemp(prefix="ms-mailseal-", dir="/tmp"))
        self.workdir.chmod(0o755)
        self.socket_kind = socket_kind
        self.port = free_tcp_port() if socket_kind == "inet" else 0
        key_file = self.workdir / "signing.key"
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.to_pem())
        self.dns = key_server(key)
        config = self.workdir / "mailseal.toml"
        config.write_text(
            template.format(
                socket=self.mailseal_spec,
                mode=mode,
                domain=DOMAIN,
                selector=SELECTOR,
                key_file=key_file,
                nameserver=self.dns.nameserver,
                sign_headers="[" + ", ".join(f'"{h}"' for h in SIGN_HEADERS) + "]",
                authserv_id=AUTHSERV_ID,
                internal_networks="[" + ", ".join(f'"{h}/32"' for h in internal_hosts(mode)) + "]",
            )
        )
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
            MAILSEAL_EVENT_LOOP=event_loop,
        )
        argv = [
            sys.executable if arg == "python" else arg for arg in shlex.split(command.format(config=config))
        ]
        self.log_path = self.workdir / "mailseal.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, process_group=0
            )
        deadline = time.monotonic() + 20
        while not (
            tcp_listening(self.port) if socket_kind == "inet" else unix_socket_listening(self.socket_path)
        ):
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise MilterStartError(f"mailseal milter did not start: {output}")
            time.sleep(0.02)

    @property
    def socket_path(self) -> Path:
        """The unix socket."""
        return self.workdir / "milter.sock"

    @property
    def postfix_spec(self) -> str:
        """Address in Postfix syntax."""
        return f"inet:{LOOPBACK}:{self.port}" if self.socket_kind == "inet" else f"unix:{self.socket_path}"

    @property
    def mailseal_spec(self) -> str:
        """Address in mailseal's (and OpenDKIM's) syntax."""
        return f"inet:{self.port}@{LOOPBACK}" if self.socket_kind == "inet" else f"unix:{self.socket_path}"

    @property
    def pid(self) -> int | None:
        """The milter's main process."""
        return self.process.pid if self.process.poll() is None else None

    def stop(self) -> None:
        """Stop the milter's process group; remove its directory."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.dns.__exit__(None, None, None)
        shutil.rmtree(self.workdir, ignore_errors=True)


def key_record(key: mailseal.PrivateKey) -> str:
    """The DKIM key record publishing ``key``."""
    return f"v=DKIM1; k={key.key_type}; p={key.public_key_b64()}"


def key_server(key: mailseal.PrivateKey) -> ScriptedDnsServer:
    """A loopback DNS server (a thread) answering the key record's name with a day-long TTL.

    mailseal caches the answer for its TTL, so after each worker's first
    lookup verification needs no DNS -- as OpenDKIM (TestDNSData) and
    dkimpy-milter (DNSOverride) need none.
    """
    owner = f"{SELECTOR}._domainkey.{DOMAIN}"
    text = txt_strings(key_record(key))

    def answer(query: dns.message.Message, _transport: str) -> dns.message.Message:
        reply = dns.message.make_response(query)
        name = query.question[0].name
        if name.to_text(omit_final_dot=True).lower() == owner:
            reply.answer.append(dns.rrset.from_text(name, 86400, "IN", "TXT", text))
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        return reply

    return ScriptedDnsServer(answer).__enter__()


@dataclass
class Setup:
    """What a configuration needs to start its milter."""

    key: mailseal.PrivateKey
    mailseal_cmd: str | None
    mailseal_template: str
    dkimpy_venv: Path | None


MilterFactory = Callable[[Setup, Mode], Milter | None]


def internal_hosts(mode: Mode) -> tuple[str, ...]:
    """smtp-source always connects from 127.0.0.1, and milters do not verify mail from internal
    hosts (OpenDKIM, dkimpy-milter): for verifying, nothing is internal (a TEST-NET-1 address)."""
    return ("127.0.0.1",) if mode == "sign" else ("192.0.2.1",)


def opendkim_factory(socket_kind: SocketKind) -> MilterFactory:
    def make(setup: Setup, mode: Mode) -> Milter:
        milter = OpenDKIMMilter(
            keys=[SigningKey("bench", DOMAIN, SELECTOR, setup.key.to_pem())],
            mode="s" if mode == "sign" else "v",
            socket=socket_kind,
            canonicalization="relaxed/relaxed",
            authserv_id=AUTHSERV_ID,
            test_dns={f"{SELECTOR}._domainkey.{DOMAIN}": key_record(setup.key)} if mode == "verify" else None,
            internal_hosts=internal_hosts(mode),
            extra={"SignHeaders": ",".join(SIGN_HEADERS), "OversignHeaders": "From"},
        )
        return milter.start()

    return make


def dkimpy_factory(socket_kind: SocketKind) -> MilterFactory:
    def make(setup: Setup, mode: Mode) -> Milter | None:
        if setup.dkimpy_venv is None:
            return None
        milter = dkimpy_milter.DkimpyMilter(
            private_key_pem=setup.key.to_pem(),
            domain=DOMAIN,
            selector=SELECTOR,
            mode="s" if mode == "sign" else "v",
            socket=socket_kind,
            authserv_id=AUTHSERV_ID,
            internal_hosts=internal_hosts(mode),
            sign_headers=SIGN_HEADERS,  # dkimpy always oversigns From
            dns_override=key_record(setup.key) if mode == "verify" else None,
            venv=setup.dkimpy_venv,
        )
        return milter.start()

    return make


def mailseal_factory(socket_kind: SocketKind, event_loop: str = "auto") -> MilterFactory:
    def make(setup: Setup, mode: Mode) -> Milter | None:
        if setup.mailseal_cmd is None:
            return None
        return MailsealMilter(
            setup.mailseal_cmd, setup.mailseal_template, mode, socket_kind, setup.key, event_loop
        )

    return make


CONFIGS: dict[str, MilterFactory | None] = {
    "none": None,
    "opendkim-unix": opendkim_factory("unix"),
    "opendkim-inet": opendkim_factory("inet"),
    "dkimpy-unix": dkimpy_factory("unix"),
    "dkimpy-inet": dkimpy_factory("inet"),
    "mailseal-unix": mailseal_factory("unix"),  # uvloop when installed (mailseal.milter.eventloop)
    "mailseal-inet": mailseal_factory("inet"),
    "ms-asyncio-unix": mailseal_factory("unix", "asyncio"),  # the same, on asyncio's own loop
    "ms-asyncio-inet": mailseal_factory("inet", "asyncio"),
}


# --------------------------------------------------------------------------- the sink


class SinkProcess:
    """Postfix's ``smtp-sink`` on a fixed port (fast, in C; it keeps nothing)."""

    def __init__(self, port: int) -> None:
        """Start it; it listens when this returns."""
        self.process = subprocess.Popen(
            [SMTP_SINK, "-u", "nobody", f"{LOOPBACK}:{port}", "256"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,
        )
        deadline = time.monotonic() + 10
        while not tcp_listening(port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("smtp-sink did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop it."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- SMTP driving


def smtp_one(port: int, message: bytes, *, timeout: float = 30.0) -> tuple[int, float]:
    """Send one message in its own session; (reply code, seconds from the final "." to the reply)."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = sock.makefile("rb")

        def reply() -> int:
            while True:
                line = reader.readline()
                if not line:
                    raise ConnectionError("server closed the connection")
                if line[3:4] != b"-":
                    return int(line[:3])

        reply()
        for command in (b"EHLO bench.client\r\n", f"MAIL FROM:<{SENDER}>\r\n".encode(),
                        f"RCPT TO:<{RECIPIENT}>\r\n".encode(), b"DATA\r\n"):  # fmt: skip
            sock.sendall(command)
            code = reply()
            if code >= 400:
                return code, 0.0
        body = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in message.split(b"\r\n"))
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        sock.sendall(body + b".\r\n")
        sent = time.perf_counter()
        code = reply()
        latency = time.perf_counter() - sent
        sock.sendall(b"QUIT\r\n")
        return code, latency


def paced_latencies(port: int, message: bytes, *, rate: float, seconds: float) -> list[float]:
    """Send ``rate`` messages/s for ``seconds``, one session each, on schedule; latencies in s."""
    count = max(1, int(rate * seconds))
    results: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        try:
            code, latency = smtp_one(port, message)
        except OSError as exc:
            with lock:
                failures.append(repr(exc))
            return
        with lock:
            if code == 250:
                results.append(latency)
            else:
                failures.append(f"reply {code}")

    threads = []
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        thread = threading.Thread(target=one, daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=60)
    if failures:
        raise RuntimeError(f"{len(failures)} of {count} paced messages failed: {failures[:3]}")
    return results


def queue_files(pf: PostfixInstance) -> int:
    """Messages still in the instance's queues (files, counted without asking Postfix)."""
    total = 0
    for name in ("maildrop", "incoming", "active", "deferred", "hold"):
        for _, _, files in os.walk(pf.queue_dir / name):
            total += len(files)
    return total


def wait_drained(pf: PostfixInstance, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while queue_files(pf):
        if time.monotonic() > deadline:
            raise RuntimeError(f"queue not drained after {timeout} s")
        time.sleep(0.005)


def smtp_source(port: int, path: Path, count: int) -> None:
    done = subprocess.run(
        [SMTP_SOURCE, "-s", str(SESSIONS), "-m", str(count), "-F", str(path),
         "-f", SENDER, "-t", RECIPIENT, f"{LOOPBACK}:{port}"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if done.returncode != 0 or done.stderr.strip():
        raise RuntimeError(f"smtp-source failed ({done.returncode}): {done.stderr.strip()[-500:]}")


# --------------------------------------------------------------------------- one configuration


@dataclass
class Samples:
    """Everything measured for one (mode, size, configuration)."""

    rates: list[float] = field(default_factory=list)
    milter_ms: list[float] = field(default_factory=list)
    postfix_ms: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


@dataclass
class Running:
    """A configuration's Postfix and milter, started once for a mode."""

    name: str
    postfix: PostfixInstance
    milter: Milter | None


def check_delivery(
    run: Running, mode: Mode, message: bytes, key: mailseal.PrivateKey, sink_port: int
) -> None:
    """Send one message into a Python sink and check the milter did its job; raises if not."""
    with SmtpSink(port=sink_port) as sink:
        code, _ = smtp_one(run.postfix.port, message)
        if code != 250:
            raise RuntimeError(f"{run.name}: submission refused with {code}")
        delivered = sink.wait_for(1, timeout=30)[0].data
    head = delivered.split(b"\r\n\r\n", 1)[0].lower()
    signatures = head.count(b"\ndkim-signature:") + head.startswith(b"dkim-signature:")
    if mode == "sign":
        want = 0 if run.milter is None else 1
        if signatures != want:
            raise RuntimeError(f"{run.name}: {signatures} DKIM-Signature fields, expected {want}")
        if want:
            report = mailseal.verify_sync(
                delivered, resolver=InMemoryResolver({f"{SELECTOR}._domainkey.{DOMAIN}": key_record(key)})
            )
            if not report.passed:
                raise RuntimeError(f"{run.name}: its signature does not verify: {report}")
    else:
        has_pass = b"authentication-results:" in head and b"dkim=pass" in head
        if has_pass != (run.milter is not None):
            raise RuntimeError(f"{run.name}: dkim=pass {'missing' if run.milter else 'unexpected'}")


def measure(
    run: Running, path: Path, message: bytes, samples: Samples, *, seconds: float, latency_seconds: float
) -> None:
    """One throughput run (with CPU) and one paced latency run of a configuration."""
    port = run.postfix.port
    master = run.postfix.master_pid
    assert master is not None
    # Warm up and estimate the rate, so that the timed run lasts about `seconds`.
    warm = 40
    started = time.perf_counter()
    smtp_source(port, path, warm)
    wait_drained(run.postfix)
    estimate = warm / (time.perf_counter() - started)
    count = max(SESSIONS * 5, int(estimate * seconds))

    table = _proc_table()
    milter_before = tree_cpu_seconds(run.milter.pid, table) if run.milter and run.milter.pid else 0.0
    postfix_before = tree_cpu_seconds(master, table)
    started = time.perf_counter()
    smtp_source(port, path, count)
    wait_drained(run.postfix)
    elapsed = time.perf_counter() - started
    table = _proc_table()
    if run.milter is not None:
        if not run.milter.pid:
            raise RuntimeError(f"{run.name}: the milter died during the run")
        samples.milter_ms.append((tree_cpu_seconds(run.milter.pid, table) - milter_before) / count * 1000)
    samples.postfix_ms.append((tree_cpu_seconds(master, table) - postfix_before) / count * 1000)
    samples.rates.append(count / elapsed)

    samples.latencies += paced_latencies(port, message, rate=LATENCY_RATE, seconds=latency_seconds)
    wait_drained(run.postfix)


@contextlib.contextmanager
def started(names: Sequence[str], setup: Setup, mode: Mode, sink_port: int) -> Iterator[list[Running]]:
    """Start every configuration's milter and Postfix for one mode; stop them all afterwards."""
    runs: list[Running] = []
    try:
        for name in names:
            factory = CONFIGS[name]
            try:
                milter = factory(setup, mode) if factory is not None else None
            except (MilterStartError, OSError) as exc:
                print(f"skipping {name} ({mode}): {exc}")
                continue
            pf = PostfixInstance(
                milters=[milter.postfix_spec] if milter else [],
                relay=(LOOPBACK, sink_port),
                hostname=AUTHSERV_ID,
            )
            runs.append(Running(name, pf, milter))
            pf.start()
        yield runs
    finally:
        for run in runs:
            run.postfix.stop()
            if run.milter is not None:
                run.milter.stop()


# --------------------------------------------------------------------------- report


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def report(mode: Mode, size: str, results: dict[str, Samples], runs: int) -> None:
    base = results.get("none")
    base_p50 = percentile(base.latencies, 0.5) * 1000 if base and base.latencies else None
    base_p99 = percentile(base.latencies, 0.99) * 1000 if base and base.latencies else None
    print(f"\n{mode}, {size} messages (median of {runs} run{'s' * (runs > 1)}):")
    head = (
        f"  {'configuration':15} {'msg/s':>7} {'(min-max)':>11} {'milter CPU':>11} {'Postfix CPU':>12}"
        f" {'p50':>8} {'added':>8} {'p99':>8} {'added':>8}"
    )
    print(head)
    print(f"  {'':15} {'':>7} {'':>11} {'ms/msg':>11} {'ms/msg':>12} {'ms':>8} {'ms':>8} {'ms':>8} {'ms':>8}")
    print("  " + "-" * (len(head) - 2))
    for name, s in results.items():
        if not s.rates:
            continue
        rate = statistics.median(s.rates)
        spread = f"({min(s.rates):.0f}-{max(s.rates):.0f})"
        milter = f"{statistics.median(s.milter_ms):.2f}" if s.milter_ms else "-"
        postfix = statistics.median(s.postfix_ms)
        p50 = percentile(s.latencies, 0.5) * 1000
        p99 = percentile(s.latencies, 0.99) * 1000
        added50 = f"{p50 - base_p50:+.1f}" if base_p50 is not None and name != "none" else ""
        added99 = f"{p99 - base_p99:+.1f}" if base_p99 is not None and name != "none" else ""
        print(
            f"  {name:15} {rate:7.0f} {spread:>11} {milter:>11} {postfix:12.2f}"
            f" {p50:8.1f} {added50:>8} {p99:8.1f} {added99:>8}"
        )


def mailseal_command(given: str | None) -> tuple[str | None, str]:
    """The command to start mailseal's milter, or None and why it is skipped."""
    if given:
        return given, ""
    probe = subprocess.run(
        [sys.executable, "-m", "mailseal", "milter", "--help"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
        timeout=60,
        check=False,
    )
    if probe.returncode == 0:
        return "python -m mailseal milter --config {config}", ""
    return None, (
        "`python -m mailseal milter` is not available in this tree (the milter is being written "
        "on another branch); pass --mailseal-cmd 'CMD --config {config}' to benchmark a build that has it"
    )


def versions() -> str:
    parts = [f"{os.cpu_count()} CPUs", f"Python {sys.version.split()[0]}"]
    postconf = subprocess.run(
        ["postconf", "-dh", "mail_version"], capture_output=True, text=True, check=False
    )
    parts.append(f"Postfix {postconf.stdout.strip()}")
    opendkim = subprocess.run(["/usr/sbin/opendkim", "-V"], capture_output=True, text=True, check=False)
    parts.append(
        opendkim.stdout.splitlines()[0].replace("opendkim: ", "") if opendkim.stdout else "no OpenDKIM"
    )
    return ", ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run of ~5 s per case (development)")
    parser.add_argument("--runs", type=int, help="runs per case (default 3; 1 with --quick)")
    parser.add_argument(
        "--seconds", type=float, help="length of a throughput run (default 15; 5 with --quick)"
    )
    parser.add_argument(
        "--latency-seconds", type=float, help="length of the paced run (default 10; 3 --quick)"
    )
    parser.add_argument("--modes", default="sign,verify", help="comma-separated: sign, verify")
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated: " + ", ".join(SIZES))
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS))
    parser.add_argument(
        "--mailseal-cmd", help="command starting mailseal's milter; {config} is the config file"
    )
    parser.add_argument(
        "--mailseal-config-template", type=Path, help="file replacing MAILSEAL_CONFIG_TEMPLATE"
    )
    parser.add_argument("--dkimpy-venv", type=Path, default=dkimpy_milter.DEFAULT_VENV)
    args = parser.parse_args(argv)

    runs = args.runs or (1 if args.quick else 3)
    seconds = args.seconds or (5.0 if args.quick else 15.0)
    latency_seconds = args.latency_seconds or (3.0 if args.quick else 10.0)
    if not postfix_available():
        print("needs Postfix (apt-get install postfix) and root", file=sys.stderr)
        return 2

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configurations: {', '.join(sorted(unknown))}")
    skipped: dict[str, str] = {}
    mailseal_cmd, why = mailseal_command(args.mailseal_cmd)
    if mailseal_cmd is None:
        skipped.update({n: why for n in names if n.startswith(("mailseal", "ms-"))})
    if not opendkim_available():
        skipped.update({n: "opendkim is not installed" for n in names if n.startswith("opendkim")})
    dkimpy_venv: Path | None = args.dkimpy_venv
    if any(n.startswith("dkimpy") for n in names):
        print(f"dkimpy-milter: venv {args.dkimpy_venv} (created on first use) ...", flush=True)
        problem = dkimpy_milter.ensure_venv(args.dkimpy_venv)
        if problem:
            dkimpy_venv = None
            skipped.update({n: problem for n in names if n.startswith("dkimpy")})
    for name, reason in skipped.items():
        print(f"skipping {name}: {reason}")
    names = [n for n in names if n not in skipped]

    template = (
        args.mailseal_config_template.read_text()
        if args.mailseal_config_template
        else MAILSEAL_CONFIG_TEMPLATE
    )
    setup = Setup(mailseal.generate_private_key(KeyType.RSA, 2048), mailseal_cmd, template, dkimpy_venv)
    sink_port = free_tcp_port()
    workdir = Path(tempfile.mkdtemp(prefix="ms-bench-"))
    modes: list[Mode] = [m for m in ("sign", "verify") if m in args.modes.split(",")]
    sizes = [s for s in SIZES if s in args.sizes.split(",")]
    print(f"{versions()}; {SESSIONS} sessions; RSA-2048 relaxed/relaxed")
    print(
        f"{runs} run(s) of ~{seconds:.0f} s per case, paced latency {LATENCY_RATE:.0f} msg/s for {latency_seconds:.0f} s"
    )
    try:
        for mode in modes:
            messages: dict[str, bytes] = {}
            for i, size in enumerate(sizes):
                plain = make_message(SIZES[size], seed=i)
                if mode == "verify":
                    plain = (
                        mailseal.sign(
                            plain, key=setup.key, domain=DOMAIN, selector=SELECTOR, headers=SIGN_HEADERS
                        )
                        + plain
                    )
                messages[size] = plain
                (workdir / f"{mode}-{size}.eml").write_bytes(plain.replace(b"\r\n", b"\n"))
            with started(names, setup, mode, sink_port) as running:
                checked = []
                for run in running:
                    try:
                        check_delivery(run, mode, messages[sizes[0]], setup.key, sink_port)
                        checked.append(run)
                    except (RuntimeError, OSError, TimeoutError) as exc:
                        print(f"skipping {run.name} ({mode}): {exc}")
                results = {size: {run.name: Samples() for run in checked} for size in sizes}
                with SinkProcess(sink_port):
                    for number in range(runs):
                        for size in sizes:
                            for run in checked:  # interleaved: every configuration once per round
                                print(f"  {mode} {size} run {number + 1}/{runs}: {run.name} ...", flush=True)
                                measure(
                                    run,
                                    workdir / f"{mode}-{size}.eml",
                                    messages[size],
                                    results[size][run.name],
                                    seconds=seconds,
                                    latency_seconds=latency_seconds,
                                )
            for size in sizes:
                report(mode, size, results[size], runs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
