"""One loaded configuration, as the sessions use it: read-only, swapped whole on reload.

A message keeps the ``Runtime`` it started with, so a reload (SIGHUP, or keys
changing on disk) never changes the rules half-way through a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mailseal.core.options import SignOptions, VerifyOptions
from mailseal.keys.source import KeySet
from mailseal.milter.actions import FailurePolicy, Requirement
from mailseal.milter.routing import RoutingPolicy
from mailseal.milter.signing_table import SigningTable


class SenderSource(StrEnum):
    """Which address picks the signing table rule."""

    FROM = "from"
    """The address in the From header field (what recipients see; what DMARC aligns with)."""
    ENVELOPE = "envelope"
    """The SMTP MAIL FROM address (``{mail_addr}``)."""


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything a session needs to decide, sign and verify; built once per configuration load."""

    routing: RoutingPolicy
    table: SigningTable
    keyset: KeySet
    authserv_id: str
    sender_source: SenderSource = SenderSource.FROM
    sign_options: SignOptions = field(default_factory=SignOptions)
    verify_options: VerifyOptions = field(default_factory=VerifyOptions)
    failure: FailurePolicy = field(default_factory=FailurePolicy.defaults)
    requirements: tuple[Requirement, ...] = ()
    max_header_bytes: int = 256 * 1024
    max_forged_authres: int = 100
    """More received Authentication-Results claiming our authserv-id than this: a flood."""
    generation: int = 1
    """Counts configuration loads in this process, for log lines."""
