"""Header parsing: folding kept, names case-insensitive, LF-only input, no body."""

from __future__ import annotations

from mailseal.core.message import Message, is_lf_only, to_crlf


def test_folding_and_raw_bytes_are_kept() -> None:
    raw = b"Subject: a\r\n  b\r\nFrom: x@y.z\r\n\r\nbody\r\n"
    message = Message.from_bytes(raw)
    assert [h.raw for h in message.headers] == [b"Subject: a\r\n  b\r\n", b"From: x@y.z\r\n"]
    assert message.headers[0].key == "subject"
    assert message.body == b"body\r\n"


def test_lf_only_is_read_as_crlf() -> None:
    assert to_crlf(b"A: 1\nB: 2\n\nx\n") == b"A: 1\r\nB: 2\r\n\r\nx\r\n"
    assert is_lf_only(b"a\nb\n")
    assert not is_lf_only(b"a\r\nb\r\n")


def test_crlf_input_is_returned_unchanged() -> None:
    data = b"A: 1\r\n\r\nx\r\n"
    assert to_crlf(data) is data


def test_message_without_body_separator() -> None:
    message = Message.from_bytes(b"From: a@b.c\r\nSubject: x\r\n")
    assert [h.key for h in message.headers] == ["from", "subject"]
    assert message.body == b""


def test_header_without_final_crlf() -> None:
    message = Message.from_bytes(b"From: a@b.c")
    assert message.headers[0].value == b" a@b.c"


def test_line_without_colon_is_kept_but_nameless() -> None:
    message = Message.from_bytes(b"From: a@b.c\r\ngarbage line\r\n\r\n")
    assert [h.name for h in message.headers] == ["From", ""]


def test_whitespace_before_colon_is_not_part_of_the_name() -> None:
    (field,) = Message.from_bytes(b"Subject  : x\r\n\r\n").headers
    assert field.key == "subject"


def test_empty_header_section() -> None:
    message = Message.from_bytes(b"\r\nbody")
    assert message.headers == ()
    assert message.body == b"body"
