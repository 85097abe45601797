"""The fast paths agree with plain references: the C twin, and the piecewise body canonicalizer."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailseal.core import canonicalization, taglist
from mailseal.core.canonicalization import BodyCanonicalizer, Canon
from mailseal.core.problems import SyntaxProblem


def raw_bytes(max_size: int) -> st.SearchStrategy[bytes]:
    """Any bytes, drawn as Latin-1 text: a bytes draw beside int draws makes Hypothesis's own
    cache compare bytes with ints, which ``python -b`` with warnings as errors turns into a failure."""
    return st.text(alphabet=st.characters(max_codepoint=255), max_size=max_size).map(
        lambda text: text.encode("latin-1")
    )


# Bodies rich in what relaxed canonicalization rewrites (runs of SP/HTAB, SP before
# CR, bare CR and LF), long enough to cross the C code's 16-byte blocks many times.
wsp_text = st.text(alphabet=" \t\r\nab", max_size=600).map(str.encode)
line_pieces = st.sampled_from([b"", b"", b" ", b"\t", b"a  b", b"x \t", b"\r", b"\n", b"abc def", b"z" * 40])
lined = st.tuples(st.lists(line_pieces, max_size=40), st.sampled_from([b"", b"\r\n", b"tail", b"\r"])).map(
    lambda parts: b"\r\n".join(parts[0]) + parts[1]
)  # many empty lines and line ends, so pieces often end in a blank line
bodies = st.one_of(raw_bytes(2000), wsp_text, lined)


def _require_speedups() -> None:
    if not canonicalization.SPEEDUPS:
        if os.environ.get("MAILSEAL_REQUIRE_SPEEDUPS"):
            pytest.fail("the C speedup was not built, but MAILSEAL_REQUIRE_SPEEDUPS is set")
        pytest.skip("the C speedup is not built on this install (pip install -e . with a C compiler)")


@settings(max_examples=400, deadline=None)
@given(data=bodies)
def test_c_relaxed_lines_agrees_with_python_on_long_inputs(data: bytes) -> None:
    _require_speedups()
    assert canonicalization.relaxed_lines(data) == canonicalization.relaxed_lines_py(data)


@pytest.mark.parametrize("offset", range(18))
def test_c_relaxed_lines_each_block_position(offset: int) -> None:
    """Every kind of run placed at every offset around a 16-byte block edge."""
    _require_speedups()
    for run in (b"  ", b"\t", b" \t ", b" \r\n", b"\t\r\n", b" \r", b" \n", b" ", b"  \r\n"):
        data = b"x" * offset + run + b"y" * 20 + run
        assert canonicalization.relaxed_lines(data) == canonicalization.relaxed_lines_py(data)


def reference(body: bytes, canon: Canon) -> bytes:
    """RFC 6376 3.4.3/3.4.4 written line by line, as the RFC reads (no streaming)."""
    lines = body.split(b"\r\n")
    if lines[-1] == b"":
        lines.pop()  # the body ended in CRLF (or was empty)
    if canon is Canon.RELAXED:
        lines = [re.sub(rb"[ \t]+", b" ", line).removesuffix(b" ") for line in lines]
    while lines and lines[-1] == b"":
        lines.pop()
    if not lines:
        return b"\r\n" if canon is Canon.SIMPLE else b""
    return b"".join(line + b"\r\n" for line in lines)


@contextmanager
def piece_size(size: int, *, python_twin: bool) -> Iterator[None]:
    """Small pieces; optionally the pure-Python relaxed_lines, as on an install without C."""
    saved = canonicalization.PIECE, canonicalization.relaxed_lines
    canonicalization.PIECE = size
    if python_twin:
        canonicalization.relaxed_lines = canonicalization.relaxed_lines_py
    try:
        yield
    finally:
        canonicalization.PIECE, canonicalization.relaxed_lines = saved


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(lined, wsp_text, raw_bytes(300)),
    piece=st.integers(min_value=1, max_value=40),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=8),
    start=st.integers(min_value=0, max_value=5),
    canon=st.sampled_from(list(Canon)),
    python_twin=st.booleans(),
)
def test_pieces_and_chunks_match_the_reference(
    body: bytes, piece: int, cuts: list[int], start: int, canon: Canon, python_twin: bool
) -> None:
    """Small pieces make every feed() walk the piece loop, long lines and blank-line ends included."""
    prefix = b"H" * start  # the first chunk is fed with an offset, as the library does
    points = sorted({c for c in cuts if c <= len(body)})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    out: list[bytes] = []
    with piece_size(piece, python_twin=python_twin):
        canonicalizer = BodyCanonicalizer(canon, out.append)
        canonicalizer.feed(prefix + chunks[0], start)
        for chunk in chunks[1:]:
            canonicalizer.feed(chunk)
        canonicalizer.finish()
    assert b"".join(out) == reference(body, canon)


def test_a_large_body_is_passed_on_in_bounded_pieces() -> None:
    """No canonical piece handed to the hash is larger than PIECE: never a copy of the whole body."""
    body = b"Line with  two spaces and a tab\there.\r\n" * 20_000  # ~780 KB
    sizes: list[int] = []
    canonicalizer = BodyCanonicalizer(Canon.RELAXED, lambda data: sizes.append(len(data)))
    canonicalizer.feed(body)
    canonicalizer.finish()
    assert max(sizes) <= canonicalization.PIECE
    assert len(sizes) > len(body) // canonicalization.PIECE


# Tag lists: well-formed ones (folded values, trailing ";", odd spacing) and near misses.
tag_names = st.one_of(
    st.sampled_from(["v", "a", "b", "bh", "d", "s", "h", "i", "l", "t", "x", "q", "z", "k", "p", "X_1"]),
    st.sampled_from(["1a", "a b", "", " ", "a-b", "_a", "\u00e9", "a\r\n", "\x01"]),  # near misses
)
tag_values = st.text(alphabet="abAZ09+/=.:-@ \t", max_size=30).map(lambda v: v.replace(" ", "\r\n ", 1))
well_formed = st.tuples(
    st.lists(st.tuples(tag_names, tag_values), max_size=12),
    st.sampled_from(["; ", ";", " ;\r\n\t"]),
    st.sampled_from(["", ";", "; ", "\r\n "]),
).map(lambda parts: parts[1].join(f"{name}={value}" for name, value in parts[0]) + parts[2])
tag_texts = st.one_of(
    well_formed,
    st.text(alphabet="abhlsvdiptxkcq=;: \t\r\n0123456789/+AZ_\x00\x7f\u00e9", max_size=120),
    st.text(max_size=80),
)


@settings(max_examples=500, deadline=None)
@given(text=tag_texts)
def test_c_tag_list_agrees_with_python_or_defers_to_it(text: str) -> None:
    """The C twin returns exactly Python's dict (same order), or None when Python must decide."""
    _require_speedups()
    from mailseal.core import _canon

    fast = _canon.tag_list(text)
    try:
        reference = taglist.parse_tag_list_py(text)
    except SyntaxProblem:
        assert fast is None  # every rejected list is left to Python, which says why
        return
    if fast is not None:
        assert list(fast.items()) == list(reference.items())
    else:
        assert not text.isascii()  # the only valid lists the C path leaves to Python


def test_c_tag_list_takes_real_signatures_and_key_records() -> None:
    _require_speedups()
    from mailseal.core import _canon

    for text in (
        " v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=s;\r\n\tt=1796574575;\r\n\th=from:to;\r\n\t"
        "bh=6XWPKtOR0QbNFRizSrU/NN6y7uak8erNXXxH6hAx/CU=; b=qMETkvFJVCPGdXeJy\r\n\twQ+axwJ9/n12H+cDRzE=",
        "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA",
    ):
        fast = _canon.tag_list(text)
        assert fast is not None
        assert fast == taglist.parse_tag_list_py(text)


def header_block_by_lines(data: bytes) -> tuple[tuple[tuple[str, bytes], ...], int]:
    """RFC 5322 2.2 unfolding read line by line: the straightforward way, as a reference."""
    if data.startswith(b"\r\n"):
        return (), 2
    end = data.find(b"\r\n\r\n")
    block, offset = (data, len(data)) if end < 0 else (data[: end + 2], end + 4)
    groups: list[list[bytes]] = []
    for line in block.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and groups:
            groups[-1].append(line)
        else:
            groups.append([line])
    out = []
    for number, lines in enumerate(groups):
        final = number < len(groups) - 1 or block.endswith(b"\r\n")
        raw = b"\r\n".join(lines) + (b"\r\n" if final else b"")
        colon = lines[0].find(b":")
        name = "" if colon < 0 else lines[0][:colon].rstrip(b" \t").decode("utf-8", "replace")
        out.append((name, raw))
    return tuple(out), offset


header_lines = st.lists(
    st.one_of(
        st.sampled_from([b"From: a@b", b"Subject:x", b" folded", b"\tmore", b" ", b"X :y", b"no colon", b""]),
        raw_bytes(12),
    ),
    max_size=10,
).map(b"\r\n".join)


@settings(max_examples=400, deadline=None)
@given(data=st.one_of(header_lines, header_lines.map(lambda b: b + b"\r\n\r\nbody"), raw_bytes(80)))
def test_header_block_split_matches_line_by_line_unfolding(data: bytes) -> None:
    from mailseal.core.message import parse_header_block, parse_header_block_py

    expected = (list(header_block_by_lines(data)[0]), header_block_by_lines(data)[1])
    for parse in (parse_header_block, parse_header_block_py):  # the C twin when built, and Python
        fields, offset = parse(data)
        assert ([(f.name, f.raw) for f in fields], offset) == expected


# Header blocks rich in what the split looks at: CR, LF, SP/HTAB after a CRLF, colons,
# upper case, 8-bit names (valid and invalid UTF-8, ones whose lower() changes length).
header_pieces = st.sampled_from(
    [
        b"\r\n",
        b"\r\n",
        b"\r",
        b"\n",
        b" ",
        b"\t",
        b":",
        b"From",
        b"X-A",
        b"\xc3\x84",
        b"\xc4\xb0",
        b"\xff",
        b"v",
    ]
)
header_blocks = st.one_of(
    st.lists(header_pieces, max_size=40).map(b"".join),
    header_lines,
    header_lines.map(lambda b: b + b"\r\n\r\nbody\r\n\r\n"),
    raw_bytes(120),
)


@settings(max_examples=600, deadline=None)
@given(data=header_blocks)
def test_c_header_split_agrees_with_python(data: bytes) -> None:
    """Same fields (name, raw bytes, lower-cased key, in order) and the same body offset."""
    _require_speedups()
    from mailseal.core import _canon
    from mailseal.core.message import HeaderField, parse_header_block_py

    fields, offset = _canon.header_fields(data, HeaderField)
    expected, expected_offset = parse_header_block_py(data)
    assert offset == expected_offset
    assert [(f.name, f.raw, f.key) for f in fields] == [(f.name, f.raw, f.key) for f in expected]
    assert all(type(f) is HeaderField and type(f.raw) is bytes for f in fields)


def test_c_header_split_refuses_what_it_cannot_read() -> None:
    _require_speedups()
    from mailseal.core import _canon
    from mailseal.core.message import HeaderField

    with pytest.raises(TypeError):
        _canon.header_fields("From: a\r\n", HeaderField)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _canon.header_fields(b"From: a\r\n", "HeaderField")  # type: ignore[arg-type]


signature_values = st.one_of(
    st.lists(
        st.sampled_from([b"b", b"bh", b"B", b" ", b"\t", b"\r\n", b"=", b";", b"x", b"ab"]), max_size=30
    ).map(b"".join),
    raw_bytes(80),
)


@settings(max_examples=500, deadline=None)
@given(value=signature_values)
def test_c_b_value_removal_agrees_with_python(value: bytes) -> None:
    _require_speedups()
    from mailseal.core import _canon
    from mailseal.core.signature import without_b_value_py

    assert _canon.without_b_value(value) == without_b_value_py(value)
