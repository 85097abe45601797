"""Sign or verify? The per-message decision, from who handed the message to the MTA.

Mail from an internal network or an authenticated (SASL) client is outgoing
and is signed; everything else is incoming and is verified. Both can be asked
for outgoing mail (``verify_internal``). The decision is one table, below.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Final

from mailseal.milter.codec import Family

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_INTERNAL_NETWORKS: Final = ("127.0.0.0/8", "::1/128")


class Origin(StrEnum):
    """Where a message came from, as far as routing cares."""

    INTERNAL = "internal"
    """From an internal network (or a local socket): our own users and services."""
    AUTHENTICATED = "authenticated"
    """From a client that logged in with SMTP AUTH ({auth_authen} is set)."""
    EXTERNAL = "external"
    """Anyone else: mail arriving from the Internet."""


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """Which networks are internal, and what to do for each origin."""

    internal_networks: tuple[Network, ...]
    sign: bool = True
    verify: bool = True
    verify_internal: bool = False


@dataclass(frozen=True, slots=True)
class Route:
    """The decision for one message."""

    origin: Origin
    sign: bool
    verify: bool

    @property
    def mode(self) -> str:
        """``sign``, ``verify``, ``sign+verify`` or ``none``, for log lines and metrics."""
        if self.sign and self.verify:
            return "sign+verify"
        return "sign" if self.sign else "verify" if self.verify else "none"


def parse_networks(specs: Sequence[str]) -> tuple[Network, ...]:
    """``10.0.0.0/8``, ``192.0.2.1`` or ``2001:db8::/32``; raises ValueError naming the bad one."""
    networks = []
    for spec in specs:
        try:
            networks.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{spec!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def client_address(
    family: Family | None, address: str
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The SMTP client's IP address from a Connect event (Sendmail writes ``IPv6:`` before v6)."""
    if family not in (Family.INET, Family.INET6) or len(address) > 100:  # longer than any address
        return None
    return _parse_address(address)


@lru_cache(maxsize=4096)
def _parse_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Memoized (short strings only): a mail server sees the same clients over and over."""
    try:
        return ipaddress.ip_address(address.removeprefix("IPv6:").split("%", 1)[0])
    except ValueError:
        return None


def classify(
    policy: RoutingPolicy,
    family: Family | None,
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    *,
    authenticated: bool,
) -> Origin:
    """Internal network (or local socket) first, then SMTP AUTH, else external."""
    if family is Family.UNIX:
        return Origin.INTERNAL
    if address is not None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in policy.internal_networks):
            return Origin.INTERNAL
    if authenticated:
        return Origin.AUTHENTICATED
    return Origin.EXTERNAL


def route(policy: RoutingPolicy, origin: Origin) -> Route:
    """The decision table: outgoing mail is signed, incoming mail is verified."""
    outgoing = origin is not Origin.EXTERNAL
    return Route(
        origin,
        sign=policy.sign and outgoing,
        verify=policy.verify and (not outgoing or policy.verify_internal),
    )
