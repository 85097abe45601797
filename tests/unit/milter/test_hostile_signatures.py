"""Junk signatures and costly keys on the raw milter socket (issue 8 items 7 and 8)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from mailseal import PrivateKey, sign
from mailseal.dns.memory import InMemoryResolver
from mailseal.milter.loading import load
from support.clock import FIXED_NOW
from support.hostile_keys import modulus_of, odd_number, rsa_p
from support.milter_client import MilterClient, Result
from support.milter_harness import MESSAGE, ServerThread, dns_records, write_config

EXTERNAL = "192.0.2.44"
REQUIRE = '[[verify.require]]\ndomain = "example.com"\naction = "reject"\n'
Keys = Mapping[str, tuple[PrivateKey | None, str, str]]


def _run(tmp_path: Path, keys: Keys, records: dict[str, str], message: bytes, extra: str = REQUIRE) -> Result:
    path = write_config(tmp_path, keys, {"*@example.com": list(keys)}, extra)
    resolver = InMemoryResolver(records)
    with (
        ServerThread(
            load(str(path)), resolver=resolver, clock=lambda: FIXED_NOW, config_path=str(path)
        ) as running,
        MilterClient(running.address) as client,
    ):
        client.negotiate()
        client.macros(b"C", {"j": "mx.test", "daemon_name": "smtpd"})
        client.connect(address=EXTERNAL)
        return client.send_message(message)


@pytest.mark.parametrize("junk", [8, 1000])
def test_junk_above_the_real_signature_neither_hides_it_nor_trips_the_require_rule(
    tmp_path: Path, rsa_key: PrivateKey, junk: int
) -> None:
    keys: Keys = {"rsa": (rsa_key, "example.com", "rsa2026")}
    field = sign(MESSAGE, key=rsa_key, domain="example.com", selector="rsa2026", now=FIXED_NOW)
    body_hash = re.search(rb"bh=([^;]+);", field)
    assert body_hash is not None
    fakes = b"".join(  # parseable, same d=, correct bh=, a selector with no key: ~130 bytes each
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=junk%d; h=from; bh=%s; b=AAAA\r\n"
        % (i, body_hash.group(1))
        for i in range(junk)
    )
    result = _run(tmp_path, keys, dns_records(keys), fakes + field + MESSAGE)
    assert result.verdict == "continue", result.text  # legitimate mail is not rejected
    (authres,) = result.inserted("Authentication-Results")
    assert b"dkim=pass" in authres.value and b"header.s=rsa2026" in authres.value
    assert authres.value.count(b"dkim=") <= 8 * 4  # the A-R field stays bounded


def test_a_key_with_a_huge_exponent_is_permerror_not_a_cost(tmp_path: Path, rsa_key: PrivateKey) -> None:
    keys: Keys = {"rsa": (rsa_key, "example.com", "rsa2026")}
    hostile = f"v=DKIM1; k=rsa; p={rsa_p(modulus_of(rsa_key.public_key_b64()), odd_number(2040))}"
    signed = sign(MESSAGE, key=rsa_key, domain="example.com", selector="rsa2026", now=FIXED_NOW) + MESSAGE
    result = _run(tmp_path, keys, {"rsa2026._domainkey.example.com": hostile}, signed, extra="")
    (authres,) = result.inserted("Authentication-Results")
    assert b"dkim=permerror" in authres.value
    assert b"key-too-large" in authres.value or b"signature-mismatch" not in authres.value


def test_the_required_and_aligned_signature_is_checked_first_even_on_top(
    tmp_path: Path, rsa_key: PrivateKey
) -> None:
    """Ten signatures of other domains below it cannot push it out (bottom-first alone would reject this mail)."""
    keys: Keys = {"rsa": (rsa_key, "example.com", "rsa2026")}
    message = MESSAGE
    for i in range(10):
        message = (
            sign(message, key=rsa_key, domain=f"other{i}.example", selector="s", now=FIXED_NOW) + message
        )
    message = sign(message, key=rsa_key, domain="example.com", selector="rsa2026", now=FIXED_NOW) + message
    result = _run(tmp_path, keys, dns_records(keys), message)  # max_signatures = 8 by default
    assert result.verdict == "continue", result.text
    (authres,) = result.inserted("Authentication-Results")
    assert b"dkim=pass" in authres.value and b"header.d=example.com" in authres.value
