"""Chunked message reading gives exactly what the whole-message parser gives, at any chunk size."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailseal.cli import messagefile
from mailseal.cli.messagefile import MessageFileError, read_message
from mailseal.core.message import Message, is_lf_only
from support.messages import SAMPLE

LF_SAMPLE = SAMPLE.replace(b"\r\n", b"\n")


def _read(data: bytes, chunk: int) -> tuple[Message, bool]:
    reader = read_message(io.BytesIO(data), chunk_bytes=chunk)
    return Message(reader.headers, b"".join(reader.body_chunks())), reader.lf_only


@pytest.mark.parametrize("data", [SAMPLE, LF_SAMPLE, b"", b"\r\n", b"\n", b"no header end", b"A: b\r\n"])
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_chunked_read_equals_whole_parse(data: bytes, chunk: int) -> None:
    assert _read(data, chunk) == (Message.from_bytes(data), is_lf_only(data))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b":", b" ", b"\r", b"\n", b"\r\n", b"\n\n", b"x: y\n"]), max_size=40),
    st.integers(min_value=1, max_value=9),
)
def test_chunked_read_equals_whole_parse_for_any_line_ends(parts: list[bytes], chunk: int) -> None:
    data = b"".join(parts)
    assert _read(data, chunk) == (Message.from_bytes(data), is_lf_only(data))


def test_a_header_block_past_the_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(messagefile, "MAX_HEADER_BYTES", 1000)
    endless = b"X-Junk: " + b"a" * 5000 + b"\r\n\r\nbody"
    with pytest.raises(MessageFileError, match="header block is larger"):
        read_message(io.BytesIO(endless), chunk_bytes=100)
