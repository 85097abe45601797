"""RFC 8463 Appendix A, RFC 6376 Appendix A/C and Stalwart's DKIM messages."""

from __future__ import annotations

import base64

import pytest

import mailseal
from mailseal import DKIMResult
from mailseal.core.algorithms import ED25519_SHA256, RSA_SHA256, sign_digest
from mailseal.core.canonicalization import Canon, canonicalize_header, relaxed_header
from mailseal.core.message import Message
from mailseal.core.selection import index_by_name, select
from mailseal.core.signature import DKIMSignature, without_b_value
from mailseal.dns.memory import InMemoryResolver
from support.conformance import CONFORMANCE, records_then_message

RFC8463 = CONFORMANCE / "rfc8463"
RFC6376 = CONFORMANCE / "rfc6376"
STALWART = CONFORMANCE / "stalwart-mail-auth" / "dkim"
STALWART_NOW = 1_667_843_664  # the clock Stalwart's own test uses (005 has x=)
# 004 has t=1667862801, 5.4 hours after that clock. Stalwart ignores future t=; RFC 6376
# 6.1.1 lets a verifier reject it, and we do (as dkimpy does) beyond the clock skew, so
# this one file is checked at its own signing time.
STALWART_CLOCK = {"004.txt": 1_667_862_801 + 60}


def test_rfc8463_both_signatures_pass() -> None:
    resolver, message = records_then_message(RFC8463 / "rfc8463-appendix-a.txt")
    report = mailseal.verify_sync(message, resolver=resolver)
    assert [s.result for s in report.signatures] == [DKIMResult.PASS, DKIMResult.PASS]
    assert [s.algorithm for s in report.signatures] == ["ed25519-sha256", "rsa-sha256"]
    assert report.signatures[0].key_bits == 256
    assert report.signatures[1].key_bits == 1024
    assert report.signatures[0].signed_headers == ("from", "to", "subject", "date", "message-id")


@pytest.mark.parametrize("index", [0, 1])
def test_rfc8463_signing_reproduces_printed_b(index: int) -> None:
    """Both schemes are deterministic: our digest + key must give the printed b= bytes."""
    _, message = records_then_message(RFC8463 / "rfc8463-appendix-a.txt")
    parsed = Message.from_bytes(message)
    fields = [(i, h) for i, h in enumerate(parsed.headers) if h.key == "dkim-signature"]
    position, field = fields[index]
    sig = DKIMSignature.from_header(field.value)
    if sig.algorithm is ED25519_SHA256:
        seed = base64.b64decode((RFC8463 / "ed25519-secret.b64").read_text().strip())
        key = mailseal.load_private_key(base64.b64encode(seed))
    else:
        assert sig.algorithm is RSA_SHA256
        key = mailseal.load_private_key((RFC8463 / "rsa-private.pem").read_bytes())
    digest = sig.algorithm.new_hash()
    chosen, _ = select(sig.signed_headers, index_by_name(parsed.headers), exclude=position)
    for p in chosen:
        digest.update(canonicalize_header(parsed.headers[p], Canon.RELAXED))
    colon = field.raw.find(b":")
    unsigned = field.raw[: colon + 1] + without_b_value(field.raw[colon + 1 :].removesuffix(b"\r\n"))
    digest.update(relaxed_header(unsigned)[:-2])
    assert sign_digest(sig.algorithm, key.key, digest) == sig.signature


def test_rfc6376_appendix_a_passes() -> None:
    message = (RFC6376 / "appendix-a-signed.eml").read_bytes()
    record = (RFC6376 / "appendix-c-txt-record.txt").read_text().strip()
    report = mailseal.verify_sync(
        message, resolver=InMemoryResolver({"brisbane._domainkey.example.com": record})
    )
    (sig,) = report.signatures
    assert sig.result is DKIMResult.PASS
    assert sig.domain == "example.com"
    assert sig.auid == "joe@football.example.com"
    assert sig.signed_headers == ("received", "from", "to", "subject", "date", "message-id")


def test_rfc6376_appendix_c_key_matches_record() -> None:
    key = mailseal.load_private_key((RFC6376 / "appendix-c-private.pem").read_bytes())
    record = (RFC6376 / "appendix-c-txt-record.txt").read_text()
    assert key.public_key_b64() in record.replace(" ", "")


def test_rfc6376_body_hash_of_appendix_body() -> None:
    """Appendix A's body (one space after "game.") has the same bh= under both canons."""
    from mailseal.core.canonicalization import canonicalize_body

    body = b"Hi.\r\n\r\nWe lost the game. Are you hungry yet?\r\n\r\nJoe.\r\n"
    for canon in Canon:
        digest = RSA_SHA256.new_hash()
        digest.update(canonicalize_body(body, canon))
        assert base64.b64encode(digest.digest()) == b"2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="


@pytest.mark.parametrize("name", ["001.txt", "002.txt", "003.txt", "004.txt", "005.txt", "006.txt"])
def test_stalwart_messages_pass(name: str) -> None:
    resolver, message = records_then_message(STALWART / name)
    report = mailseal.verify_sync(message, resolver=resolver, now=STALWART_CLOCK.get(name, STALWART_NOW))
    assert report.signatures
    assert all(s.result is DKIMResult.PASS for s in report.signatures), [s.detail for s in report.signatures]


def test_stalwart_005_expires() -> None:
    resolver, message = records_then_message(STALWART / "005.txt")
    report = mailseal.verify_sync(message, resolver=resolver, now=STALWART_NOW + 10 * 86400)
    assert report.signatures[0].reason is mailseal.Reason.SIG_EXPIRED


def test_stalwart_004_future_timestamp_at_upstream_clock() -> None:
    resolver, message = records_then_message(STALWART / "004.txt")
    report = mailseal.verify_sync(message, resolver=resolver, now=STALWART_NOW)
    assert report.signatures[0].reason is mailseal.Reason.SIG_TIMESTAMP_IN_FUTURE
