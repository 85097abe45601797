"""Peer-signed originals (dkimpy, OpenDKIM, Mail::DKIM), broken the usual ways, diagnosed by mailseal.

Each broken message is first checked with dkimpy too, so a mutation that does
not actually break the signature cannot make a test pass by accident.
"""

from __future__ import annotations

import functools
import quopri
from collections.abc import Callable

import pytest

import mailseal
from mailseal import PrivateKey, generate_private_key
from mailseal.core.algorithms import KeyType
from mailseal.core.diagnosis import Cause
from mailseal.dns.memory import InMemoryResolver
from support import peers
from support.messages import list_post
from support.required import need

pytestmark = pytest.mark.interop

MESSAGE = list_post()
FOOTER = b"-- \r\nlist mailing list -- https://lists.example.org/list\r\n"

SIGNERS: dict[str, tuple[Callable[[], bool], str]] = {
    "dkimpy": (peers.have_dkimpy, "pip install dkimpy"),
    "opendkim": (peers.have_opendkim, "apt-get install opendkim opendkim-tools"),
    "mail-dkim": (peers.have_mail_dkim, "apt-get install libmail-dkim-perl"),
}


@functools.cache
def _key() -> PrivateKey:
    return generate_private_key(KeyType.RSA, 2048)


@functools.cache
def _other_key() -> PrivateKey:
    return generate_private_key(KeyType.RSA, 2048)


def _dns(key: PrivateKey) -> dict[str, str]:
    return {"peer._domainkey.example.com": f"v=DKIM1; k=rsa; p={key.public_key_b64()}"}


@functools.cache
def _signed(signer: str, canon: str, *, diagnostics: bool = False) -> bytes:
    available, install = SIGNERS[signer]
    need(available(), signer, install)
    pem = _key().to_pem()
    args = {"selector": "peer", "domain": "example.com", "private_key_pem": pem, "canonicalization": canon}
    if signer == "dkimpy":
        field = peers.dkimpy_sign(MESSAGE, **args)  # type: ignore[arg-type]
    elif signer == "opendkim":
        field = peers.opendkim_sign(MESSAGE, diagnostics=diagnostics, **args)  # type: ignore[arg-type]
    else:
        field = peers.mail_dkim_sign(MESSAGE, **args)  # type: ignore[arg-type]
    return field + MESSAGE


def _body(message: bytes, change: Callable[[bytes], bytes]) -> bytes:
    head, _, body = message.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n" + change(body)


def _qp(message: bytes) -> bytes:
    head, _, body = message.partition(b"\r\n\r\n")
    encoded = quopri.encodestring(body.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    return (
        head.replace(b"Transfer-Encoding: 8bit", b"Transfer-Encoding: quoted-printable")
        + b"\r\n\r\n"
        + encoded
    )


MUTATIONS: dict[str, tuple[Callable[[bytes], bytes], Cause, str | None]] = {
    # name: (break it, the expected diagnosis, the body canonicalization it needs)
    "footer": (lambda m: m + FOOTER, Cause.BODY_APPENDED, None),
    "subject-tag": (
        lambda m: m.replace(b"Subject: Meeting", b"Subject: [team] Meeting"),
        Cause.SUBJECT_TAGGED,
        None,
    ),
    "list": (
        lambda m: m.replace(b"Subject: Meeting", b"Subject: [team] Meeting") + FOOTER,
        Cause.BODY_APPENDED,
        None,
    ),
    "quoted-printable": (_qp, Cause.BODY_REENCODED, None),
    "trailing-space": (
        lambda m: _body(m, lambda b: b.replace(b"Hello all,\r\n", b"Hello all, \r\n")),
        Cause.BODY_WHITESPACE,
        "simple",
    ),
    "to-added-below": (
        lambda m: m.replace(b"MIME-Version", b"To: mallory@example.net\r\nMIME-Version"),
        Cause.HEADER_ADDED,
        None,
    ),
    "body-edit": (lambda m: m.replace(b"Hello all", b"Hello you"), Cause.BODY_MODIFIED, None),
}


CASES = [
    (canon, mutation)
    for canon in ("relaxed/relaxed", "simple/simple")
    for mutation, (_, _, needs) in MUTATIONS.items()
    if needs is None or canon.endswith(needs)  # trailing spaces break only simple bodies
]


@pytest.mark.parametrize(("canon", "mutation"), CASES)
@pytest.mark.parametrize("signer", list(SIGNERS))
def test_peer_signed_message_broken_and_diagnosed(signer: str, canon: str, mutation: str) -> None:
    change, expected, _ = MUTATIONS[mutation]
    signed = _signed(signer, canon)
    dns = _dns(_key())
    resolver = InMemoryResolver(dns)
    (original,) = mailseal.verify_sync(signed, resolver=resolver).signatures
    assert original.passed and original.diagnosis is None
    broken = change(signed)
    assert peers.dkimpy_verify(broken, dns) == ["fail"], "the mutation must really break the signature"
    (sig,) = mailseal.verify_sync(broken, resolver=resolver).signatures
    assert sig.diagnosis is not None
    assert sig.diagnosis.code is expected, sig.diagnosis
    if mutation == "list":
        assert "Subject gained a tag" in sig.diagnosis.summary


@pytest.mark.parametrize("signer", list(SIGNERS))
def test_peer_signed_with_a_key_that_was_replaced(signer: str) -> None:
    signed = _signed(signer, "relaxed/relaxed")
    (sig,) = mailseal.verify_sync(signed, resolver=InMemoryResolver(_dns(_other_key()))).signatures
    assert sig.diagnosis is not None and sig.diagnosis.code is Cause.KEY_MISMATCH


@pytest.mark.parametrize(
    ("change", "code", "evidence"),
    [
        (
            lambda m: m.replace(b"To: list@", b"To: other@"),
            Cause.HEADER_CHANGED,
            'to: "list@lists.example.org" -> "other@lists.example.org"',
        ),
        (
            lambda m: m.replace(b"Date: Thu, 1 Jan 2026 10:00:00 +0000\r\n", b""),
            Cause.HEADER_REMOVED,
            'removed: date: "Thu, 1 Jan 2026 10:00:00 +0000"',
        ),
        (
            lambda m: m.replace(
                b"Subject: Meeting notes for Thursday", b"Subject: Meeting notes\r\n for Thursday"
            ),
            Cause.HEADER_WHITESPACE,
            "refolded: subject",
        ),
    ],
    ids=["changed", "removed", "refolded"],
)
@pytest.mark.parametrize("canon", ["simple/simple", "relaxed/relaxed"])
def test_opendkim_z_copies_name_the_field(
    canon: str, change: Callable[[bytes], bytes], code: Cause, evidence: str
) -> None:
    signed = _signed("opendkim", canon, diagnostics=True)
    assert b"z=" in signed.partition(b"\r\n\r\n")[0]
    dns = _dns(_key())
    broken = change(signed)
    if code is Cause.HEADER_WHITESPACE and canon.startswith("relaxed"):  # relaxed absorbs refolding
        (sig,) = mailseal.verify_sync(broken, resolver=InMemoryResolver(dns)).signatures
        assert sig.passed and sig.diagnosis is None
        assert peers.dkimpy_verify(broken, dns) == ["pass"]
        return
    assert peers.dkimpy_verify(broken, dns) == ["fail"]
    (sig,) = mailseal.verify_sync(broken, resolver=InMemoryResolver(dns)).signatures
    assert sig.diagnosis is not None
    assert sig.diagnosis.code is code, sig.diagnosis
    assert evidence in sig.diagnosis.evidence
