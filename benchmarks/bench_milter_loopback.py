"""The milter's own CPU per message, on loopback, with a Postfix-like packet pattern.

    python benchmarks/bench_milter_loopback.py [--messages 2000] [--rounds 3]
        [--modes sign,verify] [--loops asyncio,uvloop] [--per-connection 1]

Starts ``mailseal milter --workers 1`` on 127.0.0.1 (port 0) with an
RSA-2048 key (relaxed/relaxed), one process per mode and event loop, then
sends messages the way Postfix 3.7 does (measured with a probe milter, see
docs/milter.md): a new connection per SMTP session with option negotiation,
connect/mail/rcpt/data with their macros, a macro packet before every header,
end-of-headers, the body in 64 KiB chunks, end-of-message. Signing: mail from
127.0.0.1 (internal). Verifying: mail carrying one valid signature from
198.51.100.7, the key from a loopback DNS server whose answer is cached for a
day, so no lookup happens while measuring. The milter's CPU time (user +
system, from /proc) is divided by the number of messages; the client's own
CPU is not counted. The one log line per message is written, as in
production. Rounds are interleaved across the configurations (round 1 of
each, then round 2, ...), and the table gives the median and the range.

No peer runs here: this is for comparing builds and event loops of mailseal
on one machine (A/B); the ratio to OpenDKIM comes from bench_milter.py.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import dns.message
import dns.rrset

import mailseal
from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import PrivateKey, generate_private_key
from support import milter_process
from support.dnsserver import ScriptedDnsServer, txt_strings
from support.milter_client import MilterClient, chunk_body, split_message
from support.milter_harness import write_config
from support.milter_process import MilterProcess

DOMAIN, SELECTOR = "example.com", "bench"

HEADER = (
    b"Received: from client.example (client.example [192.0.2.10])\r\n\tby mx.example.com (Postfix) with ESMTPSA id 4ABC\r\n"
    b"\tfor <bob@example.net>; Thu, 1 Jan 2026 10:00:00 +0000 (UTC)\r\n"
    b"From: Alice Example <alice@example.com>\r\nTo: Bob Example <bob@example.net>\r\n"
    b"Subject: Quarterly report and a few notes on the meeting next week\r\n"
    b"Date: Thu, 1 Jan 2026 10:00:00 +0000\r\nMessage-ID: <20260101100000.4ABC@example.com>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
    b"User-Agent: bench/1.0\r\n\r\n"
)
LINE = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\r\n"


def message(size: int) -> bytes:
    body = LINE * max(1, (size - len(HEADER)) // len(LINE))
    return HEADER + body


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def send(client: MilterClient, data: bytes, queue_id: str, mode: str) -> None:
    fields, body = split_message(data)
    client.macros(b"M", {"mail_addr": "alice@example.com"})
    client.mail("alice@example.com")
    client.macros(b"R", {"rcpt_addr": "bob@example.net"})
    client.rcpt("bob@example.net")
    client.macros(b"T", {"i": queue_id})
    client._event(b"T")
    for name, value in fields:
        client.macros(b"L", {"i": queue_id})
        client.header(name, value)
    client.macros(b"N", {"i": queue_id})
    client.end_of_headers()
    for chunk in chunk_body(body, [65535] * (len(body) // 65535 + 1)):
        client.macros(b"B", {"i": queue_id})
        client.body(chunk)
    client.macros(b"E", {"i": queue_id})
    result = client.end_of_message()
    if mode == "sign":
        assert len(result.inserted("DKIM-Signature")) == 1, result
    else:
        (added,) = result.inserted("Authentication-Results")
        assert b"dkim=pass" in added.value, result
    client.abort()  # Postfix sends ABORT after each message


def run(address: tuple[str, int], data: bytes, count: int, per_connection: int, mode: str) -> None:
    client_ip = "127.0.0.1" if mode == "sign" else "198.51.100.7"
    sent = 0
    while sent < count:
        with MilterClient(address) as client:
            client.negotiate()
            client.macros(
                b"C", {"j": "mx.example.com", "{daemon_name}": "mx.example.com", "v": "Postfix 3.7"}
            )
            client.connect(address=client_ip)
            client.macros(b"H", {})
            for _ in range(min(per_connection, count - sent)):
                send(client, data, f"Q{sent:08X}", mode)
                sent += 1
            client.quit()


def bench_config(folder: Path, key: PrivateKey, nameserver: str, name: str) -> Path:
    """The benchmarked milter's configuration: one RSA key signing for DOMAIN, verifying through ``nameserver``."""
    return write_config(
        folder,
        {"rsa": (key, DOMAIN, SELECTOR)},
        {f"*@{DOMAIN}": ["rsa"]},
        '[signing]\ncanonicalization = "relaxed/relaxed"\n'
        f'[routing]\ninternal_networks = ["127.0.0.1/32"]\n[verify]\nnameservers = ["{nameserver}"]\n',
        name=name,
        socket_spec="inet:0@127.0.0.1",
    )


@contextlib.contextmanager
def milter(
    folder: Path, key: PrivateKey, nameserver: str, loop: str, mode: str, source: str | None = None
) -> Iterator[MilterProcess]:
    """One ``mailseal milter --workers 1`` with the given event loop (MAILSEAL_EVENT_LOOP).

    ``source``: run the milter from that ``src`` folder instead (an A/B against another build).
    """
    path = bench_config(folder, key, nameserver, f"{mode}-{loop}-{abs(hash(source))}.toml")
    saved = os.environ.get("MAILSEAL_EVENT_LOOP"), milter_process.SOURCE
    os.environ["MAILSEAL_EVENT_LOOP"] = loop
    milter_process.SOURCE = source or saved[1]
    try:
        with MilterProcess(["--config", str(path), "--workers", "1"]) as process:
            yield process
    finally:
        milter_process.SOURCE = saved[1]
        if saved[0] is None:
            os.environ.pop("MAILSEAL_EVENT_LOOP", None)
        else:
            os.environ["MAILSEAL_EVENT_LOOP"] = saved[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per round")
    parser.add_argument("--per-connection", type=int, default=1, help="messages per milter connection")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="sign,verify", help="comma-separated: sign, verify")
    parser.add_argument("--sizes", default="4096,40960", help="comma-separated message sizes in bytes")
    parser.add_argument(
        "--loops",
        default="asyncio,uvloop",
        help="comma-separated: asyncio, uvloop (skipped if not installed)",
    )
    parser.add_argument(
        "--baseline",
        metavar="SRC",
        help="also run each configuration from this src folder (A/B of two builds)",
    )
    args = parser.parse_args()
    loops = [name for name in args.loops.split(",") if name]
    if "uvloop" in loops and importlib.util.find_spec("uvloop") is None:
        print("uvloop is not installed (pip install uvloop): measuring asyncio only")
        loops.remove("uvloop")
    modes = [m for m in ("sign", "verify") if m in args.modes.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    key = generate_private_key(KeyType.RSA, 2048)
    record = f"v=DKIM1; k=rsa; p={key.public_key_b64()}"

    def answer(query: dns.message.Message, _transport: str) -> dns.message.Message:
        reply = dns.message.make_response(query)
        reply.answer.append(
            dns.rrset.from_text(query.question[0].name, 86400, "IN", "TXT", txt_strings(record))
        )
        return reply

    with (
        tempfile.TemporaryDirectory(prefix="mailseal-bench-") as folder,
        ScriptedDnsServer(answer) as dns_server,
        contextlib.ExitStack() as stack,
    ):
        builds = {"": None} if not args.baseline else {"": None, "base ": args.baseline}
        configs = [f"{build}{loop}" for loop in loops for build in builds]
        processes = {
            (mode, f"{build}{loop}"): stack.enter_context(
                milter(Path(folder), key, dns_server.nameserver, loop, mode, source)
            )
            for mode in modes
            for loop in loops
            for build, source in builds.items()
        }
        print(
            f"Python {sys.version.split()[0]}; {args.messages} messages per round, {args.rounds} interleaved"
            f" rounds; {args.per_connection} message(s) per connection; RSA-2048 relaxed/relaxed"
        )
        print(f"{'mode':7} {'size':>6} {'loop':13} {'CPU ms/msg':>10} {'(min-max)':>14} {'msgs/s':>7}")
        for mode in modes:
            for size in sizes:
                data = message(size)
                if mode == "verify":
                    data = mailseal.sign(data, key=key, domain=DOMAIN, selector=SELECTOR) + data
                cpu: dict[str, list[float]] = {loop: [] for loop in configs}
                rate: dict[str, list[float]] = {loop: [] for loop in configs}
                for loop in configs:
                    run(processes[mode, loop].address, data, 100, args.per_connection, mode)  # warm up
                for _ in range(args.rounds):
                    for loop in configs:
                        pid = processes[mode, loop].proc.pid
                        before, wall = cpu_seconds(pid), time.perf_counter()
                        run(processes[mode, loop].address, data, args.messages, args.per_connection, mode)
                        cpu[loop].append((cpu_seconds(pid) - before) / args.messages * 1000)
                        rate[loop].append(args.messages / (time.perf_counter() - wall))
                for loop in configs:
                    spread = f"({min(cpu[loop]):.3f}-{max(cpu[loop]):.3f})"
                    print(
                        f"{mode:7} {len(data):>6} {loop:13} {statistics.median(cpu[loop]):>10.3f}"
                        f" {spread:>14} {statistics.median(rate[loop]):>7.0f}"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
