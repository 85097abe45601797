"""RFC 6376 3.4.5 examples, end-of-body rules and chunking invariance."""

from __future__ import annotations

import pytest

from mailseal.core.canonicalization import BodyCanonicalizer, Canon, canonicalize_body, canonicalize_header
from mailseal.core.message import Message
from support.messages import SAMPLE, chunkings

# RFC 6376 section 3.4.5, with the RFC's <SP>/<HTAB>/<CRLF> spelled out.
EXAMPLE = b"A: <SP> X <CRLF>B <SP> : <SP> Y <HTAB><CRLF> <HTAB> Z <SP><SP><CRLF><CRLF> <SP> C <SP><CRLF>D <SP><HTAB><SP> E <CRLF><CRLF><CRLF>"


def _spell(text: bytes) -> bytes:
    return (
        text.replace(b" ", b"").replace(b"<SP>", b" ").replace(b"<HTAB>", b"\t").replace(b"<CRLF>", b"\r\n")
    )


def _example() -> Message:
    return Message.from_bytes(_spell(EXAMPLE))


def test_rfc_example_relaxed_headers() -> None:
    headers = [canonicalize_header(h, Canon.RELAXED) for h in _example().headers]
    assert headers == [b"a:X\r\n", b"b:Y Z\r\n"]


def test_rfc_example_relaxed_body() -> None:
    assert canonicalize_body(_example().body, Canon.RELAXED) == b" C\r\nD E\r\n"


def test_rfc_example_simple_headers() -> None:
    headers = [canonicalize_header(h, Canon.SIMPLE) for h in _example().headers]
    assert headers == [b"A: X\r\n", b"B : Y\t\r\n\tZ  \r\n"]


def test_rfc_example_simple_body() -> None:
    assert canonicalize_body(_example().body, Canon.SIMPLE) == b" C \r\nD \t E\r\n"


@pytest.mark.parametrize(
    ("body", "simple", "relaxed"),
    [
        (b"", b"\r\n", b""),  # RFC 6376 errata 1384: relaxed empty body is empty
        (b"\r\n", b"\r\n", b""),
        (b"\r\n\r\n\r\n", b"\r\n", b""),
        (b"x", b"x\r\n", b"x\r\n"),  # no final CRLF: one is added
        (b"x\r\n\r\n", b"x\r\n", b"x\r\n"),
        (b"  \r\n", b"  \r\n", b""),  # whitespace-only line is empty under relaxed
        (b"a\r\n \r\n\t\r\n", b"a\r\n \r\n\t\r\n", b"a\r\n"),
        (b"a \t b \r\n", b"a \t b \r\n", b"a b\r\n"),
        (b"a\r\n\r\nb", b"a\r\n\r\nb\r\n", b"a\r\n\r\nb\r\n"),
        (b"a\rb\nc\r\n", b"a\rb\nc\r\n", b"a\rb\nc\r\n"),  # bare CR/LF are not line ends
        (b"tail  ", b"tail  \r\n", b"tail\r\n"),
    ],
)
def test_body_end_rules(body: bytes, simple: bytes, relaxed: bytes) -> None:
    assert canonicalize_body(body, Canon.SIMPLE) == simple
    assert canonicalize_body(body, Canon.RELAXED) == relaxed


@pytest.mark.parametrize("canon", list(Canon))
@pytest.mark.parametrize(
    "body", [Message.from_bytes(SAMPLE).body, _example().body, b"a\r\n\r\n \r\nb \r\n\r\n"]
)
def test_chunking_does_not_change_output(canon: Canon, body: bytes) -> None:
    expected = canonicalize_body(body, canon)
    for chunks in chunkings(body):
        out: list[bytes] = []
        canonicalizer = BodyCanonicalizer(canon, out.append)
        for chunk in chunks:
            canonicalizer.feed(chunk)
        canonicalizer.finish()
        assert b"".join(out) == expected


def test_relaxed_header_unfolds_and_lowercases() -> None:
    (field,) = Message.from_bytes(b"SUBJECT \t:  Hello\r\n \t World  \r\n\r\n").headers
    assert canonicalize_header(field, Canon.RELAXED) == b"subject:Hello World\r\n"


@pytest.mark.parametrize(
    ("body", "simple"),
    [
        (b"a\r\r\n\r\n\r\n", b"a\r\r\n"),  # a stray CR stays part of the last line
        (b"a\n\r\n\r\n", b"a\n\r\n"),  # a bare LF is content, not a line end
        (b"x" * 50_000 + b"\r\n\r\n", b"x" * 50_000 + b"\r\n"),  # long chunk ending in a blank line
    ],
)
def test_trailing_empty_lines_after_stray_line_end_bytes(body: bytes, simple: bytes) -> None:
    assert canonicalize_body(body, Canon.SIMPLE) == simple
