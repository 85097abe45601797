"""Forged Authentication-Results: every field a downstream reader could take as ours is ours.

Issue 8 item 3: forgeries survived removal behind >1,024 bytes of comment,
as ``mx.example.com.;`` or ``mx.example.com/12345;``, and behind a bare CR,
VT, NUL or NBSP. Cross-checked with an independent RFC 8601 parser (the
``authres`` package): whatever it reads as our authserv-id, we claim.
"""

from __future__ import annotations

import email
import email.header
import email.policy
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailseal.core.authres import AUTHRES_MAX_DEPTH, AUTHRES_SCAN_BYTES, claims_authserv_id
from support.required import need

OURS = "mx.example.com"

FORGED_FORMS = [
    b" mx.example.com; dkim=pass header.d=bank.example",
    b" (" + b"x" * 1100 + b") mx.example.com; dkim=pass",
    b" " + b" " * 1100 + b"mx.example.com; dkim=pass",
    b" " + b"(a)" * 400 + b" mx.example.com; dkim=pass",
    b" " + b"\r\n\t" * 400 + b"mx.example.com; dkim=pass",
    b" mx.example.com.; dkim=pass",
    b" mx.example.com/12345; dkim=pass",
    b" mx.example.com 1; dkim=pass",
    b"\rmx.example.com; dkim=pass",
    b"\x0bmx.example.com; dkim=pass",
    b"\x00mx.example.com; dkim=pass",
    b"\xc2\xa0mx.example.com; dkim=pass",
    b"\xa0mx.example.com; dkim=pass",
    b' "mx.example.com"; dkim=pass',
    b' "mx\\.example.com"; dkim=pass',
    b" MX.Example.COM; dkim=pass",
    b" (mx.example.com) other.example; dkim=pass",  # a reader that ignores comments sees ours
    b" ((x) mx.example.com) other.example; dkim=pass",  # ...or one that does not nest them
    b" (;) mx.example.com; dkim=pass",
    # RFC 2047 encoded-words: Python's email package (policy.default) and mail
    # clients decode them in any unstructured field, and then read our id.
    b" =?utf-8?b?bXguZXhhbXBsZS5jb20=?=; dkim=pass header.d=bank.example",
    b" =?utf-8?q?mx=2Eexample=2Ecom=3B_dkim=3Dpass?=",
    b" =?UTF-8?Q?MX=2Eexample=2Ecom?= (c); dkim=pass",
    b" =?iso-8859-1?B?bXguZXhhbXBsZS5jb20uOw==?= dkim=pass",
]
LEGACY_DECODED_FORMS = [  # email.header.decode_header(), the older API many scripts use, decodes these too
    b" =?utf-8?q?mx.example.com ?=; dkim=pass",
    b" =?utf-8?b?bXgu ZXhhbXBsZS5jb20=?=; dkim=pass",
]


@pytest.mark.parametrize("value", LEGACY_DECODED_FORMS)
def test_what_the_legacy_email_api_reads_as_ours_is_claimed(value: bytes) -> None:
    parts = email.header.decode_header(value.decode())
    read = b"".join(p if isinstance(p, bytes) else p.encode() for p, _ in parts).decode()
    assert read.split(";")[0].split()[0].casefold() == OURS  # the attack is real
    assert claims_authserv_id(value, OURS)


@pytest.mark.parametrize("value", [v for v in FORGED_FORMS if b"=?" in v])
def test_what_pythons_email_package_reads_as_ours_is_claimed(value: bytes) -> None:
    raw = b"Authentication-Results:" + value + b"\r\n\r\n"
    read = str(email.message_from_bytes(raw, policy=email.policy.default)["Authentication-Results"])
    assert read.split(";")[0].split()[0].casefold().rstrip(".") == OURS  # the attack is real
    assert claims_authserv_id(value, OURS)


@pytest.mark.parametrize("value", FORGED_FORMS)
def test_each_reported_form_is_claimed(value: bytes) -> None:
    assert claims_authserv_id(value, OURS)


@pytest.mark.parametrize(
    "value",
    [
        b" other.example; dkim=pass header.d=mx.example.com",  # our name after the id is not a claim
        b" a.mx.example.com; dkim=pass",
        b" mx.example.community; dkim=pass",
        b" notmx.example.com; dkim=pass",
        b" (comment) other.example; dkim=fail",
        b"",
    ],
)
def test_other_hosts_fields_are_not_claimed(value: bytes) -> None:
    assert not claims_authserv_id(value, OURS)


def test_a_field_we_cannot_delimit_within_our_limits_is_claimed() -> None:
    assert claims_authserv_id(b" (" + b"x" * (AUTHRES_SCAN_BYTES + 10) + b") other.example; x", OURS)
    assert claims_authserv_id(
        b" " + b"(" * (AUTHRES_MAX_DEPTH + 1) + b"x" + b")" * 40 + b" o.example; x", OURS
    )
    assert claims_authserv_id(b' "' + b"x" * (AUTHRES_SCAN_BYTES + 10), OURS)


def test_the_work_is_bounded_whatever_the_size() -> None:
    value = b" " + b"(" * 5_000_000
    start = time.perf_counter()
    assert claims_authserv_id(value, OURS)
    assert claims_authserv_id(b"\\" * 5_000_000, OURS)
    assert time.perf_counter() - start < 1.0


# -- cross-check with the authres package ------------------------------------------------------

try:
    import authres
except ImportError:  # pragma: no cover - the test extra installs it
    authres = None


def _reference_parser() -> Any:
    need(authres is not None, "the authres package", "pip install authres; it is in the test extra")
    return authres


_junk = st.sampled_from(
    [
        " ",
        "\t",
        "\r\n ",
        "(c)",
        "(a (b) c)",
        "(x\\) y)",
        "(" + "z" * 1100 + ")",
        " " * 1100,
        "\x0b",
        "\xa0",
        "\x00",
    ]
)
_id_forms = st.sampled_from(
    [
        "mx.example.com",
        "MX.EXAMPLE.COM",
        "mx.example.com.",
        "mx.example.com/12345",
        '"mx.example.com"',
        "other.example",
    ]
)


def _their_id(value: str) -> str | None:
    try:
        parsed = _reference_parser().AuthenticationResultsHeader.parse_value(value)
    except Exception:  # the reference parser refuses what it cannot read
        return None
    ident = parsed.authserv_id
    return ident if isinstance(ident, str) else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.lists(_junk, max_size=4), ident=_id_forms, version=st.sampled_from(["", " 1"]))
def test_what_an_rfc8601_parser_reads_as_ours_is_claimed(prefix: list[str], ident: str, version: str) -> None:
    _reference_parser()
    value = "".join(prefix) + ident + version + "; dkim=pass header.d=bank.example"
    theirs = _their_id(value)
    if theirs is not None and theirs.casefold().rstrip(".").split("/")[0] == OURS:
        assert claims_authserv_id(value.encode("utf-8"), OURS)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=20_000))
def test_any_bytes_give_an_answer_never_an_exception(value: bytes) -> None:
    assert claims_authserv_id(value, OURS) in (True, False)


@settings(max_examples=100, deadline=None)
@given(depth=st.integers(0, 200_000), closing=st.integers(0, 200_000), tail=st.binary(max_size=100))
def test_nesting_extremes_give_an_answer(depth: int, closing: int, tail: bytes) -> None:
    claims_authserv_id(b"(" * depth + b")" * closing + tail, OURS)
