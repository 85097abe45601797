"""The outcome of one DNS TXT lookup, as a value the verifier can reason about.

Kept in the core (not the DNS edge) because the verifier maps each outcome to
a DKIM result; the DNS edge only produces these values.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TxtStatus(StrEnum):
    """What the resolver saw; RFC 6376 section 6.1.2 treats each differently."""

    FOUND = "found"
    NXDOMAIN = "nxdomain"
    NO_DATA = "no-data"
    TIMEOUT = "timeout"
    SERVFAIL = "servfail"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class TxtAnswer:
    """TXT records at one name; each record's strings already concatenated."""

    status: TxtStatus
    records: tuple[bytes, ...] = ()
    ttl: int = 0
    authenticated: bool = False
    detail: str = ""

    @classmethod
    def found(cls, records: tuple[bytes, ...], *, ttl: int = 300, authenticated: bool = False) -> TxtAnswer:
        """Records were returned (possibly several at the name)."""
        return cls(
            TxtStatus.FOUND if records else TxtStatus.NO_DATA, records, ttl, authenticated=authenticated
        )

    @classmethod
    def failure(cls, status: TxtStatus, detail: str = "", *, ttl: int = 0) -> TxtAnswer:
        """No usable records: NXDOMAIN, no data, timeout, SERVFAIL or another error."""
        return cls(status, (), ttl, authenticated=False, detail=detail)
