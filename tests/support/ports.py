"""Ports for servers the tests start on loopback, picked where nothing else lands by chance.

A port taken with ``bind(("127.0.0.1", 0))`` comes from the kernel's ephemeral
range: the same range every outgoing connection on the machine draws its local
port from (Postfix's clients, the DNS resolvers, the other test runs on a shared
CI host). Between picking such a port and the server binding it, any connect()
may take it, and the server fails with "Address already in use" -- a restart on
the same port (a killed milter brought back) has the widest window. Below the
ephemeral range only servers that ask for a port by number land, so a random
free port there stays free until our server binds it, except against another
test server's equally random pick (and the start-up helpers retry on that).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOOPBACK = "127.0.0.1"
_FLOOR = 10_000
"""Lowest port picked: well above the ports system services listen on."""
_FALLBACK_RANGE = (32768, 60999)
"""Linux's default ephemeral range, when /proc does not say."""
_RANDOM = random.SystemRandom()
"""Its own source: a test that seeds the module's generator must not make every run pick alike."""


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _FALLBACK_RANGE


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def free_port(*, udp: bool = False) -> int:
    """A loopback port free for TCP (and UDP too when ``udp``) now, outside the ephemeral range.

    Falls back to a kernel-chosen port when the ephemeral range leaves no room below it.
    """
    low, _ = ephemeral_range()
    kinds = [socket.SOCK_STREAM, socket.SOCK_DGRAM] if udp else [socket.SOCK_STREAM]
    if low - _FLOOR >= 1000:
        for _ in range(200):
            port = _RANDOM.randrange(_FLOOR, low)
            if port != 5353 and all(_bindable(port, kind) for kind in kinds):  # 5353: mDNS
                return port
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((LOOPBACK, 0))
            port = int(tcp.getsockname()[1])
        if port != 5353 and all(_bindable(port, kind) for kind in kinds):
            return port
    raise RuntimeError("no free loopback port")
