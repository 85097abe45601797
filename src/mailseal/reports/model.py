"""The values a DMARC aggregate report holds once parsed (RFC 7489 Appendix C, RFC 9990)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Unreadable(Exception):  # a result carried as an exception inside the parser only
    """A report that cannot be read; ``reason`` is the one line kept with it in quarantine."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TemporaryFailure(Exception):  # names what the caller does: try again later
    """The report could not be stored *now* (locked or full store): the sender must retry."""


class Schema(StrEnum):
    """Which aggregate-report format the XML follows."""

    DMARC1 = "rfc7489"  # RFC 7489 and the drafts before it (no namespace)
    DMARC2 = "rfc9990"  # DMARCbis: urn:ietf:params:xml:ns:dmarc-2.0


@dataclass(frozen=True, slots=True)
class DkimAuth:
    """One DKIM signature the receiver evaluated (``auth_results/dkim``)."""

    domain: str
    selector: str | None
    result: str
    human_result: str | None = None


@dataclass(frozen=True, slots=True)
class SpfAuth:
    """One SPF check the receiver made (``auth_results/spf``)."""

    domain: str
    scope: str | None
    result: str


@dataclass(frozen=True, slots=True)
class Override:
    """A local-policy override (``policy_evaluated/reason``): forwarded, mailing_list, arc, ..."""

    type: str
    comment: str | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """One row: messages from one source IP with one set of results."""

    source_ip: str
    count: int
    disposition: str
    dkim_aligned: str  # policy_evaluated/dkim: pass when an aligned signature passed
    spf_aligned: str
    header_from: str
    envelope_from: str | None = None
    envelope_to: str | None = None
    overrides: tuple[Override, ...] = ()
    dkim: tuple[DkimAuth, ...] = ()
    spf: tuple[SpfAuth, ...] = ()


@dataclass(frozen=True, slots=True)
class Policy:
    """``policy_published``: the DMARC record the receiver found."""

    domain: str
    p: str | None = None
    sp: str | None = None
    np: str | None = None
    adkim: str | None = None
    aspf: str | None = None
    pct: int | None = None
    fo: str | None = None
    testing: str | None = None
    discovery_method: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    """One aggregate report: who sent it, for which period and domain, and its records."""

    schema: Schema
    reporter: str  # report_metadata/org_name (the receiver), or the e-mail's domain when empty
    reporter_email: str | None
    report_id: str
    begin: int
    end: int
    policy: Policy
    records: tuple[Record, ...]
    generator: str | None = None
    errors: tuple[str, ...] = ()
    repaired: bool = False  # the tolerant reader had to recover from broken XML

    @property
    def messages(self) -> int:
        """Messages the report covers (the sum of its records' counts)."""
        return sum(r.count for r in self.records)
