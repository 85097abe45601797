"""What happens to a message when something goes wrong or a required signature fails.

Two tables and one rule:

* ``FAILURE_DEFAULTS`` -- the failure policy: for each thing that can go wrong
  (a key file missing, DNS timing out, an internal error), the verdict unless
  the configuration says otherwise. Signing fails closed (tempfail: the MTA
  keeps the mail and retries, so no mail is lost and none leaves unsigned);
  verifying fails open (accept, with a temperror in Authentication-Results).
* ``SMTP_REPLIES`` -- the SMTP reply code and enhanced status (RFC 3463,
  RFC 7372) for each verdict and cause.
* When several things apply, the most severe verdict wins:
  reject > tempfail > quarantine > accept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from mailseal.core.address import Author, AuthorStatus, Mailbox, author
from mailseal.core.identity import is_within
from mailseal.core.message import HeaderField
from mailseal.core.results import DKIMResult, VerificationReport


class Verdict(StrEnum):
    """What the MTA is told to do with the message."""

    ACCEPT = "accept"
    QUARANTINE = "quarantine"
    TEMPFAIL = "tempfail"
    REJECT = "reject"


SEVERITY: Final[Mapping[Verdict, int]] = {
    Verdict.ACCEPT: 0,
    Verdict.QUARANTINE: 1,
    Verdict.TEMPFAIL: 2,
    Verdict.REJECT: 3,
}


class Failure(StrEnum):
    """Things that stop the milter from doing its job for one message (config keys in ``[on_failure]``)."""

    SIGN_KEY_UNAVAILABLE = "sign_key_unavailable"
    """A key the signing table names could not be loaded (missing, unsafe or bad file)."""
    SIGN_FROM_UNREADABLE = "sign_from_unreadable"
    """Signing chooses keys by the From address (``routing.sender = "from"``) and the From cannot be read."""
    SIGN_INTERNAL_ERROR = "sign_internal_error"
    """A bug or an unexpected condition while signing."""
    VERIFY_DNS_ERROR = "verify_dns_error"
    """A key lookup timed out or failed (temperror) and no signature passed."""
    VERIFY_INTERNAL_ERROR = "verify_internal_error"
    """A bug or an unexpected condition while verifying."""
    HEADER_TOO_LARGE = "header_too_large"
    """The header passed ``limits.max_header_bytes``; the message is neither signed nor verified."""
    AUTHRES_FLOOD = "authres_flood"
    """More received Authentication-Results fields claim our authserv-id than ``limits.max_forged_authres``:
    too many to remove, so the message cannot be delivered without forged verdicts (never accept)."""


FAILURE_DEFAULTS: Final[Mapping[Failure, Verdict]] = {
    Failure.SIGN_KEY_UNAVAILABLE: Verdict.TEMPFAIL,
    Failure.SIGN_FROM_UNREADABLE: Verdict.ACCEPT,  # sent unsigned; retrying cannot make it readable
    Failure.SIGN_INTERNAL_ERROR: Verdict.TEMPFAIL,
    Failure.VERIFY_DNS_ERROR: Verdict.ACCEPT,
    Failure.VERIFY_INTERNAL_ERROR: Verdict.ACCEPT,
    Failure.HEADER_TOO_LARGE: Verdict.ACCEPT,
    Failure.AUTHRES_FLOOD: Verdict.REJECT,
}

# (verdict, cause) -> (SMTP code, enhanced status); cause None is the fallback for the verdict.
SMTP_REPLIES: Final[Mapping[tuple[Verdict, str | None], tuple[int, str]]] = {
    (Verdict.TEMPFAIL, Failure.SIGN_KEY_UNAVAILABLE): (451, "4.3.0"),
    (Verdict.TEMPFAIL, Failure.SIGN_INTERNAL_ERROR): (451, "4.3.0"),
    (Verdict.TEMPFAIL, Failure.SIGN_FROM_UNREADABLE): (451, "4.6.0"),  # other or undefined media error
    (Verdict.REJECT, Failure.SIGN_FROM_UNREADABLE): (550, "5.6.0"),
    (Verdict.TEMPFAIL, Failure.VERIFY_DNS_ERROR): (451, "4.4.3"),  # directory server failure
    (Verdict.TEMPFAIL, Failure.VERIFY_INTERNAL_ERROR): (451, "4.3.0"),
    (Verdict.TEMPFAIL, Failure.HEADER_TOO_LARGE): (452, "4.3.4"),
    (Verdict.TEMPFAIL, None): (451, "4.7.20"),
    (Verdict.REJECT, Failure.HEADER_TOO_LARGE): (552, "5.3.4"),  # message too big for system
    (Verdict.REJECT, Failure.AUTHRES_FLOOD): (550, "5.7.1"),  # delivery not authorized, message refused
    (Verdict.TEMPFAIL, Failure.AUTHRES_FLOOD): (451, "4.7.1"),
    (Verdict.REJECT, None): (550, "5.7.20"),  # no passing DKIM signature found (RFC 7372)
}


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict, its cause (a ``Failure`` value or ``required:DOMAIN``) and a sentence for people."""

    verdict: Verdict
    cause: str
    text: str


ACCEPTED: Final = Decision(Verdict.ACCEPT, "", "")


def most_severe(decisions: Sequence[Decision]) -> Decision:
    """The decision the MTA gets: the most severe verdict, the first one on ties.

    An accept decided by the failure policy keeps its cause (for the log line
    and the metrics); only when there is no decision at all is it a plain accept.
    """
    if not decisions:
        return ACCEPTED
    chosen = decisions[0]
    for decision in decisions[1:]:
        if SEVERITY[decision.verdict] > SEVERITY[chosen.verdict]:
            chosen = decision
    return chosen


def smtp_reply(decision: Decision) -> tuple[int, str, str]:
    """The SMTP code, enhanced status and text for a tempfail or reject."""
    code, status = SMTP_REPLIES.get(
        (decision.verdict, decision.cause), SMTP_REPLIES.get((decision.verdict, None), (451, "4.3.0"))
    )
    return code, status, decision.text


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """The configured verdict for each :class:`Failure`."""

    actions: Mapping[Failure, Verdict]

    @classmethod
    def defaults(cls) -> FailurePolicy:
        """Tempfail when signing, accept when verifying."""
        return cls(dict(FAILURE_DEFAULTS))

    def decide(self, failure: Failure, text: str) -> Decision:
        """The decision for ``failure``, with ``text`` for the SMTP reply and the log."""
        return Decision(self.actions.get(failure, FAILURE_DEFAULTS[failure]), failure.value, text)


@dataclass(frozen=True, slots=True)
class Requirement:
    """Mail whose From domain is ``domain`` (or below it) must carry a passing signature from it."""

    domain: str
    action: Verdict


def check_requirements(
    requirements: Sequence[Requirement],
    report: VerificationReport,
    policy: FailurePolicy,
    headers: tuple[HeaderField, ...] = (),
) -> list[Decision]:
    """Apply each requirement that covers the author; fail closed when the author is unclear.

    A signature satisfies a requirement when it passes and its d= is the
    required domain or below it. When none does and the only problems were
    DNS failures (temperror), the DNS failure policy decides instead: the key
    may well be fine once DNS answers.

    The author comes from ``report.author`` (else from ``headers``):

    * one address: the requirements covering its domain apply;
    * several From fields or addresses: a requirement covering any of them
      fails whatever the signatures (a reader may see that address, and no
      signature can vouch for an ambiguous author);
    * no From field, or one we cannot read (too long, nested too deep, a NUL
      or other control character, an address only inside an encoded-word):
      any domain may be the one a mail client shows, so *every* requirement
      applies, and each is met only by a passing signature of its domain.
    """
    who = _author_of(report, headers)
    if who.status is AuthorStatus.MULTIPLE:
        return _ambiguous_from(requirements, frozenset(who.domains))
    decisions = []
    for requirement in requirements:
        if who.status is AuthorStatus.SINGLE and not is_within(who.domains[0], requirement.domain):
            continue
        decision = _require(requirement, report, policy, who)
        if decision is not None:
            decisions.append(decision)
    return decisions


def unchecked_requirements(requirements: Sequence[Requirement], why: str) -> list[Decision]:
    """Every requirement, failed: the message could not be verified at all (e.g. an oversize header).

    Nobody read the From, so any rule could apply, and no signature was
    checked, so none is met: fail closed rather than let the size of a
    header switch the rules off.
    """
    return [
        Decision(
            requirement.action,
            f"required:{requirement.domain}",
            f"the DKIM signature required for {requirement.domain} cannot be checked: {why}",
        )
        for requirement in requirements
    ]


def _author_of(report: VerificationReport, headers: tuple[HeaderField, ...]) -> Author:
    if report.author is not None:
        return report.author
    if report.from_domain is not None:
        return Author(AuthorStatus.SINGLE, (report.from_domain,), mailbox=Mailbox("", report.from_domain))
    return author(headers)


# Fixed words only: the detail of an unreadable From comes from the sender and stays out of SMTP replies.
_UNCLEAR: Final[Mapping[AuthorStatus, str]] = {
    AuthorStatus.MISSING: " (no From field: every requirement applies)",
    AuthorStatus.UNREADABLE: " (the From field cannot be read: every requirement applies)",
}


def _require(
    requirement: Requirement, report: VerificationReport, policy: FailurePolicy, who: Author
) -> Decision | None:
    relevant = [s for s in report.signatures if s.domain and is_within(s.domain, requirement.domain)]
    if any(s.passed for s in relevant):
        return None
    if relevant and all(s.result is DKIMResult.TEMPERROR for s in relevant):
        return policy.decide(
            Failure.VERIFY_DNS_ERROR,
            f"cannot check the DKIM signature of {requirement.domain} now (DNS), try again later",
        )
    word = "failed" if relevant else "is missing"
    unclear = _UNCLEAR.get(who.status, "")
    return Decision(
        requirement.action,
        f"required:{requirement.domain}",
        f"the DKIM signature required for {requirement.domain} {word}{unclear}",
    )


def _ambiguous_from(requirements: Sequence[Requirement], domains: frozenset[str]) -> list[Decision]:
    return [
        Decision(
            requirement.action,
            f"required:{requirement.domain}",
            f"the DKIM signature required for {requirement.domain} cannot apply to an ambiguous From",
        )
        for requirement in requirements
        if any(is_within(domain, requirement.domain) for domain in domains)
    ]
