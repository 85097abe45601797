"""The milter's own CPU per message, on loopback, with a Postfix-like packet pattern.

    python benchmarks/bench_milter_loopback.py [--messages 2000] [--per-connection 1]

Starts ``mailseal milter --workers 1`` on 127.0.0.1 (port 0) with an
RSA-2048 key (relaxed/relaxed), then sends messages the way Postfix 3.7 does
(measured with a probe milter, see docs/milter.md): a new connection per SMTP
session with option negotiation, connect/mail/rcpt/data with their macros, a
macro packet before every header, end-of-headers, the body in 64 KiB chunks,
end-of-message. The milter's CPU time (user + system, from /proc) is divided
by the number of messages; the client's own CPU is not counted. The one log
line per message is written, as in production.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import generate_private_key
from support.milter_client import MilterClient, chunk_body, split_message
from support.milter_harness import write_config
from support.milter_process import MilterProcess

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


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def send(client: MilterClient, data: bytes, queue_id: str) -> None:
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
    assert len(result.inserted("DKIM-Signature")) == 1, result
    client.abort()  # Postfix sends ABORT after each message


def run(address: tuple[str, int], data: bytes, count: int, per_connection: int) -> None:
    sent = 0
    while sent < count:
        with MilterClient(address) as client:
            client.negotiate()
            client.macros(
                b"C", {"j": "mx.example.com", "{daemon_name}": "mx.example.com", "v": "Postfix 3.7"}
            )
            client.connect(address="127.0.0.1")
            client.macros(b"H", {})
            for _ in range(min(per_connection, count - sent)):
                send(client, data, f"Q{sent:08X}")
                sent += 1
            client.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--per-connection", type=int, default=1, help="messages per milter connection")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mailseal-bench-") as folder:
        keys = {"rsa": (generate_private_key(KeyType.RSA, 2048), "example.com", "bench")}
        path = write_config(
            Path(folder),
            keys,
            {"*@example.com": ["rsa"]},
            '[signing]\ncanonicalization = "relaxed/relaxed"\n',
            socket_spec="inet:0@127.0.0.1",
        )
        with MilterProcess(["--config", str(path), "--workers", "1"]) as process:
            pid = process.proc.pid
            print(
                f"milter pid {pid}; {args.messages} messages per size; {args.per_connection} per connection"
            )
            print(f"{'size':>8} {'round':>5} {'CPU ms/msg':>11} {'user':>6} {'system':>6} {'msgs/s':>8}")
            for size in (4 * 1024, 40 * 1024):
                data = message(size)
                run(process.address, data, 50, args.per_connection)  # warm up
                for number in range(args.rounds):
                    (user, system), wall = cpu_seconds(pid), time.perf_counter()
                    run(process.address, data, args.messages, args.per_connection)
                    after = cpu_seconds(pid)
                    wall = time.perf_counter() - wall
                    user, system = (
                        (after[0] - user) / args.messages * 1000,
                        (after[1] - system) / args.messages * 1000,
                    )
                    print(
                        f"{len(data):>8} {number + 1:>5} {user + system:>11.3f} {user:>6.3f} {system:>6.3f}"
                        f" {args.messages / wall:>8.0f}"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
