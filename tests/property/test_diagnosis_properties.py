"""Hypothesis: random mutations of signed mail never get a confident diagnosis that contradicts them.

Each mutation comes with the codes that describe it truthfully (some changes
are more than one thing: a quoted-printable re-encoding also changes the
Content-Transfer-Encoding field). A confident diagnosis outside that set is a
guess past the evidence and fails the test; an unconfident one is allowed to
be vague, never to be absent.
"""

from __future__ import annotations

import functools
import quopri
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mailseal
from mailseal import DKIMResult, PrivateKey, generate_private_key
from mailseal.core.algorithms import KeyType
from mailseal.core.diagnosis import Cause
from mailseal.dns.memory import InMemoryResolver
from support.clock import FIXED_NOW

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyzéü0123456789.,!?-", min_size=1, max_size=12)
line = st.lists(words, min_size=1, max_size=8).map(" ".join)
body_lines = st.lists(
    st.one_of(line, st.sampled_from(["", "  ", "\t", "> quoted", "=3D not qp"])), min_size=1, max_size=15
)


@functools.cache
def _keys() -> dict[str, PrivateKey]:
    return {
        "rsa": generate_private_key(KeyType.RSA, 1024),
        "ed": generate_private_key(KeyType.ED25519),
        "other": generate_private_key(KeyType.RSA, 1024),
    }


def _dns(selector_key: dict[str, PrivateKey]) -> InMemoryResolver:
    return InMemoryResolver(
        {
            f"{sel}._domainkey.example.com": f"v=DKIM1; k={k.key_type}; p={k.public_key_b64()}"
            for sel, k in selector_key.items()
        }
    )


@st.composite
def signed_messages(draw: st.DrawFn) -> tuple[bytes, str, str]:
    subject = draw(line)
    lines = draw(body_lines)
    body = "".join(f"{text}\r\n" for text in lines).encode()
    head = (
        b"From: Alice <alice@example.com>\r\n"
        b"To: Bob <bob@example.net>\r\n"
        b"Subject: " + subject.encode() + b"\r\n"
        b"Date: Thu, 1 Jan 2026 10:00:00 +0000\r\n"
        b"Message-ID: <m1@example.com>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
    )
    message = head + b"\r\n" + body
    which = draw(st.sampled_from(["rsa", "ed"]))
    canon = draw(st.sampled_from(["simple/simple", "simple/relaxed", "relaxed/simple", "relaxed/relaxed"]))
    field = mailseal.sign(
        message,
        key=_keys()[which],
        domain="example.com",
        selector="sel",
        canonicalization=canon,
        now=FIXED_NOW,
    )
    return field + message, which, canon


Mutation = Callable[[bytes], bytes]


def _body(message: bytes, change: Callable[[bytes], bytes]) -> bytes:
    head, _, body = message.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n" + change(body)


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, Mutation, frozenset[Cause]]:
    kind = draw(
        st.sampled_from(
            [
                "append",
                "edit",
                "trailing-space",
                "lost-cr",
                "quoted-printable",
                "subject-tag",
                "to-changed",
                "refold",
                "duplicate",
                "remove",
            ]
        )
    )
    if kind == "append":
        extra = draw(st.lists(line, min_size=1, max_size=3))
        text = "".join(f"{t}\r\n" for t in extra).encode()
        return kind, lambda m: m + text, frozenset({Cause.BODY_APPENDED})
    if kind == "edit":
        index = draw(st.integers(min_value=0, max_value=10_000))

        def edit(m: bytes) -> bytes:
            head, _, body = m.partition(b"\r\n\r\n")
            letters = [i for i, b in enumerate(body) if chr(b).isalpha() and b < 128]
            if not letters:
                return m + b"x\r\n"  # nothing to edit: an addition instead (allowed below)
            at = letters[index % len(letters)]
            swapped = b"q" if body[at] != ord("q") else b"z"
            return head + b"\r\n\r\n" + body[:at] + swapped + body[at + 1 :]

        return kind, edit, frozenset({Cause.BODY_MODIFIED, Cause.BODY_APPENDED})
    if kind == "trailing-space":
        return (
            kind,
            lambda m: _body(m, lambda b: b.replace(b"\r\n", b" \r\n", 1)),
            frozenset({Cause.BODY_WHITESPACE, Cause.BODY_MODIFIED}),
        )
    if kind == "lost-cr":
        return (
            kind,
            lambda m: _body(m, lambda b: b.replace(b"\r\n", b"\n", 1)),
            frozenset({Cause.BODY_WHITESPACE, Cause.BODY_MODIFIED}),
        )
    if kind == "quoted-printable":

        def qp(m: bytes) -> bytes:
            head, _, body = m.partition(b"\r\n\r\n")
            encoded = quopri.encodestring(body.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
            return head.replace(b"8bit", b"quoted-printable") + b"\r\n\r\n" + encoded

        # The Content-Transfer-Encoding field changes too: with an ASCII body only that shows.
        return kind, qp, frozenset({Cause.BODY_REENCODED, Cause.BODY_MODIFIED, Cause.HEADER_CHANGED})
    if kind == "subject-tag":
        tag = draw(st.sampled_from([b"[list] ", b"[Team 7] ", b"[x]"]))
        return (
            kind,
            lambda m: m.replace(b"Subject: ", b"Subject: " + tag, 1),
            frozenset({Cause.SUBJECT_TAGGED, Cause.HEADER_CHANGED}),
        )
    if kind == "to-changed":
        return kind, lambda m: m.replace(b"To: Bob", b"To: Rob", 1), frozenset({Cause.HEADER_CHANGED})
    if kind == "refold":
        return (
            kind,
            lambda m: m.replace(b"Date: Thu, 1", b"Date: Thu,\r\n 1", 1),
            frozenset({Cause.HEADER_WHITESPACE, Cause.HEADER_CHANGED}),
        )
    if kind == "duplicate":
        return (
            kind,
            lambda m: m.replace(b"Content-Type", b"To: eve@example.org\r\nContent-Type", 1),
            frozenset({Cause.HEADER_ADDED, Cause.HEADER_CHANGED}),
        )
    return (
        kind,
        lambda m: m.replace(b"Message-ID: <m1@example.com>\r\n", b"", 1),
        frozenset({Cause.HEADER_CHANGED, Cause.HEADER_REMOVED}),
    )


@SETTINGS
@given(signed_messages(), mutations())
def test_confident_diagnoses_never_contradict_the_mutation(
    signed: tuple[bytes, str, str], mutation: tuple[str, Mutation, frozenset[Cause]]
) -> None:
    message, which, _canon = signed
    kind, change, allowed = mutation
    broken = change(message)
    resolver = _dns({"sel": _keys()[which]})
    (sig,) = mailseal.verify_sync(broken, resolver=resolver, now=FIXED_NOW).signatures
    if sig.result is DKIMResult.PASS:
        assert sig.diagnosis is None  # e.g. a whitespace change that the canonicalization absorbs
        return
    assert sig.diagnosis is not None, kind
    if sig.diagnosis.confident:
        assert sig.diagnosis.code in allowed, (kind, sig.diagnosis)
    else:  # a best reading: a general code, or one that still agrees with the mutation (header-removed)
        assert sig.diagnosis.code in allowed | {Cause.HEADER_CHANGED, Cause.UNKNOWN}, (kind, sig.diagnosis)


@SETTINGS
@given(signed_messages(), st.booleans())
def test_a_replaced_key_is_never_blamed_on_the_message(
    signed: tuple[bytes, str, str], appended: bool
) -> None:
    message, which, _canon = signed
    broken = message + b"footer\r\n" if appended else message
    resolver = _dns({"sel": _keys()["other"]})
    (sig,) = mailseal.verify_sync(broken, resolver=resolver, now=FIXED_NOW).signatures
    assert sig.diagnosis is not None
    if which == "rsa":
        if appended:
            assert sig.diagnosis.code is Cause.BODY_APPENDED
            assert "did not make this signature" in sig.diagnosis.summary
        else:
            assert sig.diagnosis.code is Cause.KEY_MISMATCH
    else:
        assert sig.diagnosis.code is Cause.KEY_MISMATCH  # an Ed25519 signature meets an RSA key


@SETTINGS
@given(signed_messages(), st.binary(max_size=64), st.integers(min_value=0, max_value=4000))
def test_any_damage_gets_a_diagnosis_and_never_an_exception(
    signed: tuple[bytes, str, str], junk: bytes, where: int
) -> None:
    message, which, _canon = signed
    at = where % (len(message) + 1)
    broken = message[:at] + junk + message[at:]
    report = mailseal.verify_sync(broken, resolver=_dns({"sel": _keys()[which]}), now=FIXED_NOW)
    for sig in report.signatures:
        assert (sig.diagnosis is None) == sig.passed
        if sig.diagnosis is not None:
            assert all(ch.isprintable() for ch in sig.diagnosis.evidence)
            assert all(ch.isprintable() for ch in sig.diagnosis.summary)
