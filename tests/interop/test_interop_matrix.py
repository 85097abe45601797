"""mailseal against dkimpy, OpenDKIM and Mail::DKIM, in both directions.

Peers are black boxes driven by tests/support/peers.py. When MAILSEAL_REQUIRE_PEERS
is set (CI sets it), a missing peer is a failure, not a skip.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import mailseal
from mailseal import DKIMResult, PrivateKey, Reason
from mailseal.api import signing_request
from mailseal.core.message import to_crlf
from mailseal.dns.memory import InMemoryResolver
from support import peers
from support.messages import VARIANTS
from support.required import need

pytestmark = pytest.mark.interop

NOW = None  # peers check t= against the real clock, so sign "now"
CANONS = ["simple/simple", "simple/relaxed", "relaxed/simple", "relaxed/relaxed"]
Verifier = Callable[[bytes, peers.DnsRecords], list[str]]


def _need(available: bool, name: str) -> None:
    need(available, name, "scripts/test.sh installs it")


VERIFIERS: dict[str, tuple[Callable[[], bool], Verifier, bool]] = {
    # name: (available, verify, checks ed25519)
    "dkimpy": (peers.have_dkimpy, peers.dkimpy_verify, True),
    "opendkim": (peers.have_opendkim, lambda m, d: peers.opendkim_verify(m, d), True),
    "mail-dkim": (peers.have_mail_dkim, peers.mail_dkim_verify, False),
}


def _dns(*keys: tuple[str, PrivateKey]) -> dict[str, str]:
    return {
        f"{sel}._domainkey.example.com": f"v=DKIM1; k={k.key_type}; p={k.public_key_b64()}" for sel, k in keys
    }


def _crlf(message: bytes) -> bytes:
    return to_crlf(message)


def _peer(name: str) -> tuple[Verifier, bool]:
    """The peer's verify function and whether it can check ed25519-sha256."""
    available, verify, ed = VERIFIERS[name]
    _need(available(), name)
    return verify, ed


# -- mailseal signs, peers verify ---------------------------------------------------

# Where a peer departs from RFC 6376 on a body without a final CRLF (3.4.3/3.4.4: "a CRLF
# is added"); dkimpy agrees with us. Over SMTP a body always ends in CRLF, so this only
# matters for files. (peer, variant, body canonicalization) -> the peer's verdict.
PEER_QUIRKS = {
    ("opendkim", "no-final-crlf", "simple"): "pass",  # it verifies simple ...
    ("opendkim", "no-final-crlf", "relaxed"): "unknown",  # ... but gives up on relaxed: "message not signed"
    ("mail-dkim", "no-final-crlf", "simple"): "fail",  # Mail::DKIM adds no CRLF under simple
}


@pytest.mark.parametrize("peer", list(VERIFIERS))
@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
@pytest.mark.parametrize("canon", CANONS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_peers_verify_our_signatures(
    peer: str, algorithm: str, canon: str, variant: str, rsa_key: PrivateKey, ed_key: PrivateKey
) -> None:
    verify, checks_ed25519 = _peer(peer)
    key = rsa_key if algorithm == "rsa" else ed_key
    message = VARIANTS[variant]
    signed = (
        mailseal.sign(message, key=key, domain="example.com", selector="s", canonicalization=canon) + message
    )
    if algorithm == "ed25519" and not checks_ed25519:
        # Debian's Mail::DKIM cannot check ed25519-sha256 and must say so ("invalid"),
        # never pass or fail it; if a later version learns it, this test tells us.
        assert verify(signed, _dns(("s", key))) == ["permerror"]
        return
    expected = PEER_QUIRKS.get((peer, variant, canon.split("/")[1]), "pass")
    assert verify(signed, _dns(("s", key))) == [expected]
    if expected == "pass":
        tampered = signed.replace(b"\r\n\r\n", b"\r\n\r\nX\r\n", 1)  # a line added at the top of the body
        assert verify(tampered, _dns(("s", key))) == ["fail"]


@pytest.mark.parametrize("peer", list(VERIFIERS))
def test_peers_verify_l_tag_and_lf_input(peer: str, rsa_key: PrivateKey) -> None:
    verify, _ = _peer(peer)
    lf_message = VARIANTS["plain"].replace(b"\r\n", b"\n")
    field = mailseal.sign(lf_message, key=rsa_key, domain="example.com", selector="s", body_length=True)
    unix_file = field.replace(b"\r\n", b"\n") + lf_message  # what `mailseal sign` writes for a Unix file
    signed = _crlf(unix_file)  # what the MTA sends once the file is submitted
    assert verify(signed, _dns(("s", rsa_key))) == ["pass"]
    appended = signed + b"appended after signing\r\n"
    assert verify(appended, _dns(("s", rsa_key))) == ["pass"]
    assert (
        mailseal.verify_sync(appended, resolver=InMemoryResolver(_dns(("s", rsa_key))))
        .signatures[0]
        .unsigned_body_bytes
    )


@pytest.mark.parametrize("peer", ["dkimpy", "opendkim"])
def test_peers_verify_our_dual_signatures(peer: str, rsa_key: PrivateKey, ed_key: PrivateKey) -> None:
    verify, _ = _peer(peer)
    requests = [
        signing_request(key=rsa_key, domain="example.com", selector="rsa"),
        signing_request(key=ed_key, domain="example.com", selector="ed"),
    ]
    message = VARIANTS["plain"]
    signed = mailseal.sign_many(message, requests) + message
    assert verify(signed, _dns(("rsa", rsa_key), ("ed", ed_key))) == ["pass", "pass"]


# -- peers sign, mailseal verifies ----------------------------------------------------------


def _ours(signed: bytes, dns: dict[str, str]) -> list[DKIMResult]:
    return [s.result for s in mailseal.verify_sync(signed, resolver=InMemoryResolver(dns)).signatures]


def _pem(key: PrivateKey) -> bytes:
    return key.to_pem()


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
@pytest.mark.parametrize("canon", CANONS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_we_verify_dkimpy(
    algorithm: str, canon: str, variant: str, rsa_key: PrivateKey, ed_key: PrivateKey
) -> None:
    _need(peers.have_dkimpy(), "dkimpy")
    key = rsa_key if algorithm == "rsa" else ed_key
    message = VARIANTS[variant]
    field = peers.dkimpy_sign(
        message, selector="s", domain="example.com", private_key_pem=_pem(key),
        algorithm="rsa-sha256" if algorithm == "rsa" else "ed25519-sha256", canonicalization=canon,
    )  # fmt: skip
    assert _ours(field + message, _dns(("s", key))) == [DKIMResult.PASS]
    assert _ours(field + message.replace(b"\r\n\r\n", b"\r\n\r\nX", 1), _dns(("s", key))) == [DKIMResult.FAIL]


def test_we_verify_dkimpy_l_tag(rsa_key: PrivateKey) -> None:
    _need(peers.have_dkimpy(), "dkimpy")
    message = VARIANTS["plain"]
    field = peers.dkimpy_sign(
        message, selector="s", domain="example.com", private_key_pem=_pem(rsa_key), length=True
    )
    (sig,) = mailseal.verify_sync(
        field + message + b"more\r\n", resolver=InMemoryResolver(_dns(("s", rsa_key)))
    ).signatures
    assert sig.passed and sig.body_length_limited


# OpenDKIM-signed mail comes from `opendkim -t` in signing mode. Its printed signature
# cannot be rebuilt byte-exactly for simple header canonicalization (OpenDKIM then fails
# its own signature too), and it refuses to sign a body without a final CRLF, so this
# direction covers relaxed header canonicalization; the milter tests add real
# OpenDKIM-signed mail through Postfix.
OPENDKIM_VARIANTS = [v for v in VARIANTS if v != "no-final-crlf"]


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
@pytest.mark.parametrize("canon", ["relaxed/simple", "relaxed/relaxed"])
@pytest.mark.parametrize("variant", OPENDKIM_VARIANTS)
def test_we_verify_opendkim(
    algorithm: str, canon: str, variant: str, rsa_key: PrivateKey, ed_key: PrivateKey
) -> None:
    _need(peers.have_opendkim(), "opendkim")
    key = rsa_key if algorithm == "rsa" else ed_key
    message = VARIANTS[variant]
    field = peers.opendkim_sign(
        message, selector="s", domain="example.com", private_key_pem=_pem(key),
        algorithm="rsa-sha256" if algorithm == "rsa" else "ed25519-sha256", canonicalization=canon,
    )  # fmt: skip
    assert _ours(field + message, _dns(("s", key))) == [DKIMResult.PASS]
    assert peers.opendkim_verify(field + message, _dns(("s", key))) == ["pass"]  # it agrees with itself


@pytest.mark.parametrize("canon", CANONS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_we_verify_mail_dkim(canon: str, variant: str, rsa_key: PrivateKey) -> None:
    _need(peers.have_mail_dkim(), "Mail::DKIM")
    message = VARIANTS[variant]
    field = peers.mail_dkim_sign(
        message, selector="s", domain="example.com", private_key_pem=_pem(rsa_key), canonicalization=canon
    )
    dns = _dns(("s", rsa_key))
    if variant == "no-final-crlf" and canon.endswith("simple"):
        # Mail::DKIM hashes this body without the CRLF RFC 6376 3.4.3 adds; dkimpy agrees with us.
        assert _ours(field + message, dns) == [DKIMResult.FAIL]
        assert peers.dkimpy_verify(field + message, dns) == ["fail"]
        return
    assert _ours(field + message, dns) == [DKIMResult.PASS]
    assert _ours(field + message.replace(b"\r\n\r\n", b"\r\n\r\nX\r\n", 1), dns) == [DKIMResult.FAIL]


# -- tampering: we fail where the peers fail ---------------------------------------------------


def _prepend_from(m: bytes) -> bytes:
    at = m.index(b"\r\nFrom:") + 2
    return m[:at] + b"From: Mallory <ceo@example.com>\r\n" + m[at:]


TAMPER: dict[str, tuple[Callable[[bytes], bytes], str, str]] = {
    # name: (edit, expected under relaxed/relaxed, expected under simple/simple)
    "body-byte": (lambda m: m.replace(b"noon", b"nooN"), "fail", "fail"),
    "signed-header": (lambda m: m.replace(b"Subject: Lunch", b"Subject: Brunch"), "fail", "fail"),
    "prepended-from": (_prepend_from, "fail", "fail"),
    "header-whitespace": (lambda m: m.replace(b"Subject: Lunch  on", b"Subject: Lunch on"), "pass", "fail"),
    "body-whitespace": (lambda m: m.replace(b"at  noon", b"at noon"), "pass", "fail"),
    "unsigned-header-added": (lambda m: m + b"", "pass", "pass"),
}


@pytest.mark.parametrize("peer", list(VERIFIERS))
@pytest.mark.parametrize("canon", ["relaxed/relaxed", "simple/simple"])
@pytest.mark.parametrize("tamper", list(TAMPER))
def test_tampering_agrees_with_peers(peer: str, canon: str, tamper: str, rsa_key: PrivateKey) -> None:
    verify, _ = _peer(peer)
    edit, relaxed_expected, simple_expected = TAMPER[tamper]
    message = VARIANTS["plain"]
    if canon == "simple/simple" and peer == "opendkim":
        message = message.replace(
            b"Subject: Lunch  on", b"Subject: Lunch  on"
        )  # already one space after colon
    signed = (
        mailseal.sign(message, key=rsa_key, domain="example.com", selector="s", canonicalization=canon)
        + message
    )
    if tamper == "unsigned-header-added":
        signed = signed.replace(b"\r\nFrom:", b"\r\nX-Spam-Score: 0.1\r\nFrom:", 1)
    changed = edit(signed)
    expected = relaxed_expected if canon == "relaxed/relaxed" else simple_expected
    dns = _dns(("s", rsa_key))
    assert [str(r) for r in _ours(changed, dns)] == [expected]
    assert verify(changed, dns) == [expected]


# -- where peers are laxer than the RFC ----------------------------------------------------------


def test_disagreement_h_without_from(rsa_key: PrivateKey) -> None:
    """RFC 6376 5.4/6.1.1: h= must include From. We say permerror; record what peers say."""
    _need(peers.have_dkimpy(), "dkimpy")
    _need(peers.have_mail_dkim(), "Mail::DKIM")  # dkimpy will not sign without From; Mail::DKIM will
    message = VARIANTS["plain"]
    field = peers.mail_dkim_sign(
        message, selector="s", domain="example.com", private_key_pem=_pem(rsa_key), headers=["subject", "to"]
    )
    (sig,) = mailseal.verify_sync(field + message, resolver=InMemoryResolver(_dns(("s", rsa_key)))).signatures
    assert sig.reason is Reason.SIG_FROM_NOT_SIGNED
    observed = {
        "dkimpy": peers.dkimpy_verify(field + message, _dns(("s", rsa_key))),
        "mail-dkim": peers.mail_dkim_verify(field + message, _dns(("s", rsa_key))),
    }
    # Recorded disagreement: both peers pass a signature that does not cover From,
    # which RFC 6376 6.1.1 says to reject ("PERMFAIL (From field not signed)").
    assert observed == {"dkimpy": ["pass"], "mail-dkim": ["pass"]}


def test_disagreement_rsa_sha1(rsa_key: PrivateKey) -> None:
    """RFC 8301: rsa-sha1 must not count as valid. We say policy; Mail::DKIM still passes it."""
    _need(peers.have_mail_dkim(), "Mail::DKIM")
    message = VARIANTS["plain"]
    field = peers.mail_dkim_sign(
        message, selector="s", domain="example.com", private_key_pem=_pem(rsa_key), algorithm="rsa-sha1"
    )
    dns = _dns(("s", rsa_key))
    (sig,) = mailseal.verify_sync(field + message, resolver=InMemoryResolver(dns)).signatures
    assert sig.result is DKIMResult.POLICY and sig.reason is Reason.ALGORITHM_NOT_ACCEPTED
    assert peers.mail_dkim_verify(field + message, dns) == ["pass"]
    assert mailseal.verify_sync(field + message, resolver=InMemoryResolver(dns), allow_rsa_sha1=True).passed
