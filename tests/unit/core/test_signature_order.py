"""Junk DKIM-Signature fields cannot hide the real one (issue 8 item 8).

Fields added in transit go on top, so the signature that was there first is
at the bottom. The junk here is as convincing as junk gets before DNS: the
same d= as the real signature and a correct bh=, only a selector with no key.
"""

from __future__ import annotations

import re
import time

import pytest

import mailseal
from mailseal import DKIMResult, PrivateKey, Reason, VerifyOptions
from mailseal.cli.render import to_json
from mailseal.dns.memory import InMemoryResolver
from support.clock import FIXED_NOW
from support.messages import SAMPLE

NAME = "sel._domainkey.example.com"


def _field(key: PrivateKey, domain: str, selector: str, message: bytes = SAMPLE) -> bytes:
    return mailseal.sign(message, key=key, domain=domain, selector=selector, now=FIXED_NOW)


def _junk(valid_field: bytes, count: int) -> bytes:
    """``count`` copies of a real field with selectors that have no key (d= and bh= kept)."""
    return b"".join(re.sub(rb"s=sel;", b"s=junk%d;" % i, valid_field, count=1) for i in range(count))


@pytest.fixture
def resolver(rsa_key: PrivateKey) -> InMemoryResolver:
    return InMemoryResolver({NAME: f"v=DKIM1; k=rsa; p={rsa_key.public_key_b64()}"})


@pytest.mark.parametrize("junk", [8, 1000])
def test_prepended_junk_cannot_push_the_real_signature_out(
    rsa_key: PrivateKey, resolver: InMemoryResolver, junk: int
) -> None:
    field = _field(rsa_key, "example.com", "sel")
    message = _junk(field, junk) + field + SAMPLE
    start = time.perf_counter()
    report = mailseal.verify_sync(message, resolver=resolver, now=FIXED_NOW)
    elapsed = time.perf_counter() - start
    assert report.result is DKIMResult.PASS
    passing = [s for s in report.signatures if s.passed]
    assert [s.selector for s in passing] == ["sel"]
    assert len(report.signatures) <= VerifyOptions().max_signatures * 4
    assert report.left_out == junk + 1 - len(report.signatures)
    looked_up = set(resolver.queries)
    assert NAME in looked_up and len(looked_up) <= VerifyOptions().max_signatures  # the DNS budget
    assert elapsed < 2.0  # parsing is bounded too (MAX_SIGNATURE_FIELDS from the bottom)


def test_a_require_rule_domain_is_evaluated_first(rsa_key: PrivateKey) -> None:
    """Signatures of a preferred domain go first even above many others (a caller's require rules)."""
    bank = _field(rsa_key, "bank.example", "sel")
    others = b"".join(_field(rsa_key, f"other{i}.example", "sel") for i in range(10))
    message = bank + others + SAMPLE
    records = {"sel._domainkey.bank.example": f"v=DKIM1; k=rsa; p={rsa_key.public_key_b64()}"}
    plain = mailseal.verify_sync(message, resolver=InMemoryResolver(records), now=FIXED_NOW, max_signatures=2)
    assert not plain.passed  # bottom first: bank's signature on top is over the cap
    preferred = mailseal.verify_sync(
        message,
        resolver=InMemoryResolver(records),
        options=VerifyOptions(max_signatures=2, preferred_domains=("bank.example",)),
        now=FIXED_NOW,
    )
    assert preferred.passed
    assert [s.domain for s in preferred.signatures if s.passed] == ["bank.example"]


def test_signatures_aligned_with_from_are_evaluated_first(rsa_key: PrivateKey) -> None:
    aligned = _field(rsa_key, "example.com", "sel")  # SAMPLE is From: example.com
    others = b"".join(_field(rsa_key, f"other{i}.example", "sel") for i in range(10))
    report = mailseal.verify_sync(
        aligned + others + SAMPLE,
        resolver=InMemoryResolver({NAME: f"v=DKIM1; k=rsa; p={rsa_key.public_key_b64()}"}),
        now=FIXED_NOW,
        max_signatures=2,
    )
    assert report.passed
    not_evaluated = [s for s in report.signatures if s.reason is Reason.NOT_EVALUATED]
    assert len(not_evaluated) == 2 * 4 - 2 and report.left_out == 11 - 2 * 4


def test_the_report_names_what_it_left_out_in_the_cli_json(rsa_key: PrivateKey) -> None:
    field = _field(rsa_key, "example.com", "sel")
    report = mailseal.verify_sync(
        _junk(field, 100) + field + SAMPLE,
        resolver=InMemoryResolver({NAME: f"v=DKIM1; k=rsa; p={rsa_key.public_key_b64()}"}),
        now=FIXED_NOW,
    )
    assert to_json("m.eml", report, "")["left_out"] == 101 - len(report.signatures)
