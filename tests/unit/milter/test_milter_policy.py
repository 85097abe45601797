"""The routing decision table, the failure policy and the result-based actions."""

from __future__ import annotations

import ipaddress

import pytest

from mailseal.core.message import HeaderField
from mailseal.core.results import DKIMResult, Reason, SignatureResult, VerificationReport
from mailseal.milter.actions import (
    FAILURE_DEFAULTS,
    SMTP_REPLIES,
    Decision,
    Failure,
    FailurePolicy,
    Requirement,
    Verdict,
    check_requirements,
    most_severe,
    smtp_reply,
)
from mailseal.milter.codec import Family
from mailseal.milter.routing import Origin, RoutingPolicy, classify, client_address, parse_networks, route

POLICY = RoutingPolicy(parse_networks(["127.0.0.0/8", "::1", "10.0.0.0/8", "2001:db8::/32"]))


@pytest.mark.parametrize(
    ("family", "address", "authenticated", "origin"),
    [
        (Family.INET, "127.0.0.1", False, Origin.INTERNAL),
        (Family.INET, "10.1.2.3", True, Origin.INTERNAL),
        (Family.INET6, "::1", False, Origin.INTERNAL),
        (Family.INET6, "IPv6:2001:db8::5", False, Origin.INTERNAL),  # Sendmail's spelling
        (Family.INET6, "::ffff:10.0.0.9", False, Origin.INTERNAL),  # v4-mapped
        (Family.INET, "192.0.2.9", True, Origin.AUTHENTICATED),
        (Family.INET, "192.0.2.9", False, Origin.EXTERNAL),
        (Family.UNIX, "/var/run/x", False, Origin.INTERNAL),
        (Family.UNKNOWN, "", False, Origin.EXTERNAL),
        (Family.INET, "not-an-address", False, Origin.EXTERNAL),
    ],
)
def test_classify(family: Family, address: str, authenticated: bool, origin: Origin) -> None:
    assert classify(POLICY, family, client_address(family, address), authenticated=authenticated) is origin


@pytest.mark.parametrize(
    ("sign", "verify", "verify_internal", "origin", "mode"),
    [
        (True, True, False, Origin.INTERNAL, "sign"),
        (True, True, False, Origin.AUTHENTICATED, "sign"),
        (True, True, False, Origin.EXTERNAL, "verify"),
        (True, True, True, Origin.INTERNAL, "sign+verify"),
        (False, True, False, Origin.INTERNAL, "none"),
        (True, False, True, Origin.EXTERNAL, "none"),
    ],
)
def test_route_table(sign: bool, verify: bool, verify_internal: bool, origin: Origin, mode: str) -> None:
    policy = RoutingPolicy(
        POLICY.internal_networks, sign=sign, verify=verify, verify_internal=verify_internal
    )
    assert route(policy, origin).mode == mode


def test_bad_network_names_the_culprit() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        parse_networks(["10.0.0.0/8", "10.0.0.0/33"])
    assert parse_networks(["192.0.2.1"]) == (ipaddress.ip_network("192.0.2.1/32"),)


def test_failure_defaults_sign_closed_verify_open() -> None:
    assert set(FAILURE_DEFAULTS) == set(Failure)  # the table is total
    assert FAILURE_DEFAULTS[Failure.SIGN_KEY_UNAVAILABLE] is Verdict.TEMPFAIL
    assert FAILURE_DEFAULTS[Failure.SIGN_INTERNAL_ERROR] is Verdict.TEMPFAIL
    assert FAILURE_DEFAULTS[Failure.VERIFY_DNS_ERROR] is Verdict.ACCEPT
    assert FAILURE_DEFAULTS[Failure.VERIFY_INTERNAL_ERROR] is Verdict.ACCEPT


def test_most_severe_wins() -> None:
    quarantine = Decision(Verdict.QUARANTINE, "q", "")
    reject = Decision(Verdict.REJECT, "r", "")
    tempfail = Decision(Verdict.TEMPFAIL, "t", "")
    assert most_severe([]).verdict is Verdict.ACCEPT
    assert most_severe([quarantine, tempfail]) is tempfail
    assert most_severe([tempfail, reject, quarantine]) is reject
    accepted = Decision(Verdict.ACCEPT, Failure.VERIFY_DNS_ERROR, "")
    assert most_severe([accepted]) is accepted  # an accept by the failure policy keeps its cause
    assert most_severe([accepted, quarantine]) is quarantine


def test_every_tempfail_and_reject_has_a_proper_smtp_reply() -> None:
    for verdict in (Verdict.TEMPFAIL, Verdict.REJECT):
        for cause in [*Failure, "required:example.com"]:
            code, status, _ = smtp_reply(Decision(verdict, str(cause), "x"))
            assert str(code)[0] == status[0] == ("4" if verdict is Verdict.TEMPFAIL else "5")
    assert SMTP_REPLIES[(Verdict.TEMPFAIL, Failure.VERIFY_DNS_ERROR)] == (451, "4.4.3")


def sig(result: DKIMResult, domain: str, reason: Reason | None = None) -> SignatureResult:
    return SignatureResult(result, reason, "", domain=domain)


REQUIRE = [Requirement("bank.example", Verdict.REJECT)]
POLICY_DEFAULT = FailurePolicy.defaults()


@pytest.mark.parametrize(
    ("from_domain", "signatures", "verdict"),
    [
        ("bank.example", [sig(DKIMResult.PASS, "bank.example")], None),
        ("mail.bank.example", [sig(DKIMResult.PASS, "bank.example")], None),
        ("bank.example", [sig(DKIMResult.PASS, "other.example")], Verdict.REJECT),  # wrong d=
        ("bank.example", [], Verdict.REJECT),  # missing
        ("bank.example", [sig(DKIMResult.FAIL, "bank.example", Reason.BODY_HASH_MISMATCH)], Verdict.REJECT),
        # only DNS trouble: the DNS failure policy decides (accept by default)
        ("bank.example", [sig(DKIMResult.TEMPERROR, "bank.example", Reason.DNS_TIMEOUT)], Verdict.ACCEPT),
        ("other.example", [], None),  # not covered by the requirement
    ],
)
def test_requirements(from_domain: str, signatures: list[SignatureResult], verdict: Verdict | None) -> None:
    decisions = check_requirements(
        REQUIRE, VerificationReport(tuple(signatures), from_domain), POLICY_DEFAULT
    )
    if verdict is None:
        assert decisions == []
    else:
        assert [d.verdict for d in decisions] == [verdict]


def test_requirement_temperror_follows_a_configured_dns_policy() -> None:
    policy = FailurePolicy({**FAILURE_DEFAULTS, Failure.VERIFY_DNS_ERROR: Verdict.TEMPFAIL})
    report = VerificationReport(
        (sig(DKIMResult.TEMPERROR, "bank.example", Reason.DNS_TIMEOUT),), "bank.example"
    )
    (decision,) = check_requirements(REQUIRE, report, policy)
    assert decision.verdict is Verdict.TEMPFAIL
    assert decision.cause == Failure.VERIFY_DNS_ERROR


def _from(*values: bytes) -> tuple[HeaderField, ...]:
    return tuple(HeaderField("From", b"From:" + value + b"\r\n") for value in values)


@pytest.mark.parametrize(
    ("headers", "verdict"),
    [
        (_from(b" a@evil.example", b" b@bank.example"), Verdict.REJECT),
        (_from(b" a@evil.example, b@Mail.Bank.Example"), Verdict.REJECT),
        (_from(b" a@evil.example", b" b@other.example"), None),  # the requirement covers neither
        ((), None),
    ],
)
def test_requirements_with_no_single_from(headers: tuple[HeaderField, ...], verdict: Verdict | None) -> None:
    signatures = (sig(DKIMResult.PASS, "bank.example"),)  # a pass cannot vouch for an ambiguous author
    decisions = check_requirements(REQUIRE, VerificationReport(signatures, None), POLICY_DEFAULT, headers)
    assert [d.verdict for d in decisions] == ([verdict] if verdict else [])
