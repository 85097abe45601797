"""DMARC alignment of internationalized names: one canonical form, and never aligned when undecidable.

Before, d= and the From domain were compared as strings, so ``From: a@bücher.example``
signed with ``d=xn--bcher-kva.example`` (the same name, as DNS spells it) was reported
as not aligned.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mailseal
from mailseal import Alignment, PrivateKey
from mailseal.core.alignment import alignment
from mailseal.core.identity import canonical_domain, is_within
from mailseal.dns.memory import InMemoryResolver
from support.clock import FIXED_NOW

A_LABEL = "xn--bcher-kva.example"  # bücher.example


@pytest.mark.parametrize(
    ("signing", "author"),
    [
        (A_LABEL, "bücher.example"),  # d= in A-labels, From in U-labels
        ("bücher.example", A_LABEL),  # and the other way round
        ("XN--BCHER-KVA.Example", "BÜCHER.EXAMPLE"),  # mixed case on both sides
        (A_LABEL + ".", "bücher.example"),  # the root's trailing dot
        (A_LABEL, "bücher.example."),
        ("ｂücher.example", A_LABEL),  # a full-width letter maps to its ASCII form (as in UTS #46)
        ("xn--e1afmkfd.com", "ПРИМЕР.com"),  # Cyrillic upper case
    ],
)
def test_the_same_name_in_either_spelling_is_exactly_aligned(signing: str, author: str) -> None:
    assert alignment(signing, author) is Alignment.EXACT


@pytest.mark.parametrize(
    ("signing", "author"),
    [
        ("mail.xn--bcher-kva.de", "bücher.de"),
        ("bücher.de", "news.XN--BCHER-KVA.DE."),
        ("example.xn--p1ai", "shop.example.рф"),  # an IDN top-level domain
        ("example.рф", "shop.example.XN--P1AI"),
    ],
)
def test_the_same_organizational_domain_in_either_spelling_is_relaxed_aligned(
    signing: str, author: str
) -> None:
    assert alignment(signing, author) is Alignment.ORGANIZATIONAL


@pytest.mark.parametrize(
    ("signing", "author"),
    [
        ("bucher.example", "bücher.example"),  # another name, however alike it looks
        ("xn--bcher-kva.example", "bücher.example.net"),
        ("xn--e1afmkfd.com", "example.com"),
    ],
)
def test_different_names_are_not_aligned(signing: str, author: str) -> None:
    assert alignment(signing, author) is Alignment.NONE


@pytest.mark.parametrize(
    ("signing", "author"),
    [
        # IDNA2003 maps ß to ss, IDNA2008 keeps it: the codec's answer could be wrong either way
        ("strasse.example", "straße.example"),
        ("xn--strae-oqa.example", "straße.example"),
        ("straße.example", "straße.example"),
        ("example.com", "ex\u200dample.com"),  # a zero-width joiner
        ("xn--zz.example", "xn--zz.example"),  # malformed Punycode, even spelled alike
        ("xn--abc-.example", "abc.example"),  # an ASCII name disguised as an A-label
        ("example.com", "a..example.com"),  # an empty label
        ("example.com", "x" * 64 + ".example.com"),  # a label over 63 octets
        ("example.com", "ü" * 60 + ".example.com"),  # over 63 octets once encoded
        ("example.com", ("ab." * 130) + "example.com"),  # a name over 253 octets
        ("example.com", "."),
        ("example.com", ""),
        ("", "example.com"),
        ("xn--bcher-kva.example", "b\udcfccher.example"),  # a lone surrogate from a bad decode
    ],
)
def test_a_name_without_a_canonical_form_is_never_aligned(signing: str, author: str) -> None:
    assert alignment(signing, author) is Alignment.UNKNOWN


def test_canonical_form() -> None:
    assert canonical_domain("Example.COM.") == "example.com"
    assert canonical_domain("BÜCHER.Example") == A_LABEL
    assert canonical_domain("XN--BCHER-KVA.EXAMPLE") == A_LABEL
    assert canonical_domain("straße.de") is None
    assert canonical_domain("xn--strae-oqa.de") is None  # decodes to the same deviation
    assert canonical_domain("xn--zz.example") is None


@given(st.text(max_size=300), st.text(alphabet="abcxn-.ßüПÜ\u200d.ＡＢ", max_size=80))
def test_canonical_domain_and_alignment_never_raise(any_text: str, namelike: str) -> None:
    for name in (any_text, namelike):
        form = canonical_domain(name)
        assert form is None or (form.isascii() and form == form.lower() and not form.endswith("."))
        assert alignment(name, name) in (Alignment.EXACT, Alignment.UNKNOWN)
        assert alignment("example.com", name) in set(Alignment)


def test_rules_written_in_either_spelling_cover_the_other() -> None:
    assert is_within("mail.bücher.example", A_LABEL)
    assert is_within("MAIL.XN--BCHER-KVA.EXAMPLE.", "bücher.example")
    assert not is_within("strasse.example", "straße.example")  # no longer equal through IDNA2003


def test_a_verified_signature_from_an_idn_domain_is_reported_aligned(rsa_key: PrivateKey) -> None:
    message = (
        "From: Anna <anna@bücher.example>\r\n"
        "To: bob@example.net\r\n"
        "Subject: hello\r\n"
        "Date: Thu, 1 Jan 2026 10:00:00 +0000\r\n"
        "\r\n"
        "Hi.\r\n"
    ).encode()
    field = mailseal.sign(message, key=rsa_key, domain=A_LABEL, selector="sel", now=FIXED_NOW)
    resolver = InMemoryResolver(
        {f"sel._domainkey.{A_LABEL}": f"v=DKIM1; k=rsa; p={rsa_key.public_key_b64()}"}
    )
    (sig,) = mailseal.verify_sync(field + message, resolver=resolver, now=FIXED_NOW).signatures
    assert sig.passed
    assert (sig.alignment, sig.aligned) == (Alignment.EXACT, True)
