"""``keys check`` analysis: answers in, findings out, one case per problem it names."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import PrivateKey, generate_private_key
from mailseal.core.keyrecord import split_txt
from mailseal.core.txtanswer import TxtAnswer, TxtStatus
from mailseal.dns.authoritative import DnssecStatus, ServerAnswer
from mailseal.keys.check import Code, Finding, Level, Lookups, analyse, exit_status
from mailseal.keys.lifecycle import records_for
from mailseal.keys.store import KeyEntry, KeyState
from support.hostile_keys import odd_number, rsa_p

NAME = "sel._domainkey.example.test"


@pytest.fixture(scope="module")
def rsa1024() -> PrivateKey:
    return generate_private_key(KeyType.RSA, 1024)


def rsa512_public_b64() -> str:
    """A 512-bit RSA public key (RFC 8301 forbids accepting it); cryptography will not generate one, so build it."""
    modulus = (1 << 511) | 0xC0FFEE1  # odd and exactly 512 bits; a public key needs no factorisation
    key = rsa.RSAPublicNumbers(65537, modulus).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def ours(key: PrivateKey, state: KeyState = KeyState.ACTIVE) -> KeyEntry:
    record, revoked = records_for(key.key_type, key.public_key_b64())
    return KeyEntry(1, "example.test", "sel", key.key_type, key.bits, state, record, revoked, 0)


def server(*records: str | tuple[str, ...], ttl: int = 3600, **fields: object) -> ServerAnswer:
    strings = tuple(
        tuple(s.encode() for s in r) if isinstance(r, tuple) else tuple(s.encode() for s in split_txt(r))
        for r in records
    )
    answer = ServerAnswer(
        "192.0.2.1@53", TxtStatus.FOUND if records else TxtStatus.NXDOMAIN, strings, ttl, authoritative=True
    )
    return dataclasses.replace(answer, **fields)  # type: ignore[arg-type]


def look(*answers: ServerAnswer, resolver: TxtAnswer | None = None) -> Lookups:
    if resolver is None and answers:
        resolver = TxtAnswer.found(answers[0].joined, ttl=answers[0].ttl) if answers[0].records else None
    return Lookups(NAME, answers, resolver)


def codes(findings: list[Finding]) -> dict[Code, Level]:
    return {f.code: f.level for f in findings}


def test_good_record_passes(rsa_key: PrivateKey) -> None:
    entry = ours(rsa_key)
    findings = analyse(look(server(entry.record_text), server(entry.record_text)), entry)
    assert codes(findings) == {
        Code.RECORD_FOUND: Level.PASS,
        Code.KEY_MATCHES: Level.PASS,
        Code.TTL: Level.PASS,
        Code.RESOLVER_AGREES: Level.PASS,
    }
    assert exit_status(findings) == 0
    assert all(f.fix == "" for f in findings if f.level is Level.PASS)


def test_no_record(ed_key: PrivateKey) -> None:
    findings = analyse(look(server(), resolver=TxtAnswer.failure(TxtStatus.NXDOMAIN)), ours(ed_key))
    (missing,) = [f for f in findings if f.code is Code.NO_RECORD]
    assert missing.level is Level.FAIL and "keys publish" in missing.fix
    assert exit_status(findings) == 1
    generated = analyse(look(server()), ours(ed_key, KeyState.GENERATED))
    assert codes(generated)[Code.NO_RECORD] is Level.PASS


def test_syntax_error(ed_key: PrivateKey) -> None:
    findings = analyse(look(server("v=DKIM2; p=abc")), ours(ed_key))
    assert codes(findings)[Code.SYNTAX] is Level.FAIL
    assert "key-version" in next(f.message for f in findings if f.code is Code.SYNTAX)


def test_key_mismatch(ed_key: PrivateKey) -> None:
    other = generate_private_key(KeyType.ED25519)
    findings = analyse(look(server(ours(other).record_text)), ours(ed_key))
    mismatch = next(f for f in findings if f.code is Code.KEY_MISMATCH)
    assert mismatch.level is Level.FAIL and "keys record example.test sel" in mismatch.fix


def test_key_not_in_store(ed_key: PrivateKey) -> None:
    assert codes(analyse(look(server(ours(ed_key).record_text)), None))[Code.NOT_IN_STORE] is Level.INFO


def test_key_too_small_and_weak(rsa1024: PrivateKey) -> None:
    assert codes(analyse(look(server(ours(rsa1024).record_text)), ours(rsa1024)))[Code.KEY_WEAK] is Level.WARN
    findings = analyse(look(server(f"v=DKIM1; k=rsa; p={rsa512_public_b64()}")), None)
    assert codes(findings)[Code.KEY_TOO_SMALL] is Level.FAIL


def test_key_too_large_is_the_verifier_rule() -> None:
    """keys check and the verifier share core/keypolicy.py: a key the verifier refuses fails the check."""
    huge_exponent = odd_number(64, seed=3)
    findings = analyse(look(server(f"v=DKIM1; k=rsa; p={rsa_p(odd_number(2048), huge_exponent)}")), None)
    assert codes(findings)[Code.KEY_TOO_LARGE] is Level.FAIL
    findings = analyse(look(server(f"v=DKIM1; k=rsa; p={rsa_p(odd_number(8200), 65537)}")), None)
    assert codes(findings)[Code.KEY_TOO_LARGE] is Level.FAIL


def test_testing_flag(ed_key: PrivateKey) -> None:
    record, _ = records_for(ed_key.key_type, ed_key.public_key_b64(), testing=True)
    findings = analyse(look(server(record)), ours(ed_key))
    assert codes(findings)[Code.TESTING_FLAG] is Level.WARN
    assert exit_status(findings) == 3


def test_service_and_hash_restrictions(ed_key: PrivateKey) -> None:
    record = f"v=DKIM1; k=ed25519; h=sha1; s=tlsrpt; p={ed_key.public_key_b64()}"
    found = codes(analyse(look(server(record)), ours(ed_key)))
    assert found[Code.NOT_FOR_EMAIL] is Level.FAIL and found[Code.HASH_EXCLUDED] is Level.FAIL


def test_record_split_into_separate_records(rsa_key: PrivateKey) -> None:
    text = ours(rsa_key).record_text
    first, second = split_txt(text)
    findings = analyse(look(server(second, first)), ours(rsa_key))
    split = next(f for f in findings if f.code is Code.SPLIT_INTO_RECORDS)
    assert split.level is Level.FAIL and "ONE TXT record" in split.fix


def test_quotes_pasted_into_the_record(rsa_key: PrivateKey) -> None:
    first, second = split_txt(ours(rsa_key).record_text)
    pasted = f'"{first}" "{second}"'  # a web form stored the quotes too
    found = codes(analyse(look(server(pasted)), ours(rsa_key)))
    assert found[Code.QUOTES_IN_RECORD] is Level.FAIL


def test_record_cut_at_the_first_string(rsa_key: PrivateKey) -> None:
    first, _ = split_txt(ours(rsa_key).record_text)
    findings = analyse(look(server((first,))), ours(rsa_key))
    assert codes(findings) == {
        Code.RECORD_FOUND: Level.PASS,
        Code.TRUNCATED: Level.FAIL,
        Code.TTL: Level.PASS,
        Code.RESOLVER_AGREES: Level.PASS,
    }


def test_several_records(ed_key: PrivateKey) -> None:
    findings = analyse(look(server(ours(ed_key).record_text, "v=spf1 -all")), ours(ed_key))
    found = codes(findings)
    assert found[Code.SEVERAL_RECORDS] is Level.FAIL
    assert found[Code.KEY_MATCHES] is Level.PASS  # the DKIM one is still judged


def test_ttl_long_and_short(ed_key: PrivateKey) -> None:
    record = ours(ed_key).record_text
    assert codes(analyse(look(server(record, ttl=172800)), ours(ed_key)))[Code.TTL_LONG] is Level.WARN
    assert codes(analyse(look(server(record, ttl=30)), ours(ed_key)))[Code.TTL_SHORT] is Level.INFO


def test_revoked(ed_key: PrivateKey) -> None:
    entry = ours(ed_key)
    unexpected = analyse(look(server(entry.revoked_text)), entry)
    assert codes(unexpected)[Code.REVOKED] is Level.FAIL
    planned = analyse(look(server(entry.revoked_text)), dataclasses.replace(entry, state=KeyState.REVOKED))
    assert codes(planned)[Code.REVOKED] is Level.PASS
    pending = analyse(look(server(entry.record_text)), dataclasses.replace(entry, state=KeyState.REVOKED))
    assert codes(pending)[Code.REVOCATION_PENDING] is Level.WARN


def test_removed_key_still_published(ed_key: PrivateKey) -> None:
    entry = dataclasses.replace(ours(ed_key), state=KeyState.REMOVED)
    assert codes(analyse(look(server(entry.record_text)), entry))[Code.STILL_PUBLISHED] is Level.WARN
    assert codes(analyse(look(server()), entry))[Code.NO_RECORD] is Level.PASS


def test_servers_disagree_and_server_errors(ed_key: PrivateKey) -> None:
    entry = ours(ed_key)
    lagging = dataclasses.replace(server(), server="192.0.2.2@53")
    dead = ServerAnswer("192.0.2.3@53", TxtStatus.TIMEOUT, detail="192.0.2.3@53: no reply within 5 s")
    lame = dataclasses.replace(server(entry.record_text), server="192.0.2.4@53", authoritative=False)
    found = codes(analyse(look(server(entry.record_text), lagging, dead, lame), entry))
    assert found[Code.SERVERS_DISAGREE] is Level.WARN
    assert found[Code.DNS_ERROR] is Level.FAIL
    assert found[Code.NOT_AUTHORITATIVE] is Level.WARN
    assert found[Code.KEY_MATCHES] is Level.PASS  # judged on the server that has the record


def test_dnssec_signed_validated_unsigned_expired(ed_key: PrivateKey) -> None:
    record = ours(ed_key).record_text
    signed = server(record, dnssec=DnssecStatus.SIGNED)
    validated = TxtAnswer.found((record.encode(),), ttl=3600, authenticated=True)
    found = codes(analyse(look(signed, resolver=validated), ours(ed_key)))
    assert (found[Code.DNSSEC_SIGNED], found[Code.DNSSEC_VALIDATED]) == (Level.PASS, Level.PASS)
    not_validated = codes(analyse(look(signed), ours(ed_key)))
    assert not_validated[Code.DNSSEC_NOT_VALIDATED] is Level.INFO
    unsigned = codes(analyse(look(server(record, dnssec=DnssecStatus.UNSIGNED)), ours(ed_key)))
    assert unsigned[Code.DNSSEC_UNSIGNED] is Level.INFO
    expired = server(record, dnssec=DnssecStatus.EXPIRED, detail="no RRSIG is valid now")
    assert codes(analyse(look(expired), ours(ed_key)))[Code.DNSSEC_EXPIRED] is Level.FAIL


def test_resolver_differs_or_fails(ed_key: PrivateKey) -> None:
    entry = ours(ed_key)
    stale = TxtAnswer.found((b"v=DKIM1; k=ed25519; p=old",), ttl=1200)
    differs = next(
        f
        for f in analyse(look(server(entry.record_text), resolver=stale), entry)
        if f.code is Code.RESOLVER_DIFFERS
    )
    assert differs.level is Level.WARN and "1200 more seconds" in differs.message
    servfail = TxtAnswer.failure(TxtStatus.SERVFAIL, "SERVFAIL")
    failing = next(
        f
        for f in analyse(look(server(entry.record_text), resolver=servfail), entry)
        if f.code is Code.RESOLVER_ERROR
    )
    assert failing.level is Level.FAIL and "DNSSEC validation failed" in failing.message


def test_exit_status_levels() -> None:
    assert exit_status([]) == 0
    assert exit_status([Finding(Level.INFO, Code.TTL, "x")]) == 0
    assert exit_status([Finding(Level.WARN, Code.TTL, "x"), Finding(Level.PASS, Code.TTL, "y")]) == 3
    assert exit_status([Finding(Level.WARN, Code.TTL, "x"), Finding(Level.FAIL, Code.TTL, "y")]) == 1


def test_every_code_has_a_case() -> None:
    """Every finding code is produced by some test in this file or the Knot integration tests."""
    here = Path(__file__).read_text()
    covered = {code for code in Code if f"Code.{code.name}" in here}
    assert covered == set(Code), sorted(set(Code) - covered)


def test_fixtures_are_real_keys(rsa_key: PrivateKey) -> None:
    assert base64.b64decode(rsa_key.public_key_b64())  # the 2048-bit session key from conftest
