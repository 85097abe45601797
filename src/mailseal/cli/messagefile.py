"""Read a message file (or standard input) in chunks: the header block, then the body.

The CLI must sign and verify a 60 MB message in well under 100 MB of memory,
so it never holds a whole file: the header block is collected (up to
``MAX_HEADER_BYTES``) and parsed, and the body is handed on chunk by chunk to
the streaming core. Line ends follow :func:`mailseal.core.message.to_crlf`: a
file whose first line ends in a bare LF is a Unix file, and every bare LF is
read as CRLF, also where a chunk boundary splits a CRLF pair.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from mailseal.core.message import HeaderField, parse_header_block

CHUNK_BYTES = 256 << 10
MAX_HEADER_BYTES = 8 << 20  # far above any real header block; the milter's default is 256 KiB
_BARE_LF = re.compile(rb"(?<!\r)\n")
_HEADER_END = b"\r\n\r\n"


class MessageFileError(Exception):
    """A message file that cannot be read (the text is one plain sentence, no path)."""


def open_message(path: str | None) -> BinaryIO:
    """The file at ``path``, or standard input for None or ``-``; errors in plain words."""
    if path is None or path == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise MessageFileError("standard input is closed; give a message file")
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except IsADirectoryError:
        raise MessageFileError("is a folder, not a message file") from None
    except FileNotFoundError:
        raise MessageFileError("no such file") from None
    except PermissionError:
        raise MessageFileError("permission denied") from None
    except OSError as exc:
        raise MessageFileError(f"cannot open it ({exc.strerror or 'system error'})") from None


def _read(stream: BinaryIO, size: int) -> bytes:
    try:
        return stream.read(size)
    except IsADirectoryError:
        raise MessageFileError("is a folder, not a message file") from None
    except OSError as exc:
        raise MessageFileError(f"cannot read it ({exc.strerror or 'system error'})") from None


@dataclass
class MessageReader:
    """One message being read: ``headers`` parsed, ``body_chunks()`` yields the rest (CRLF)."""

    headers: tuple[HeaderField, ...]
    lf_only: bool
    _first_body: bytes
    _chunks: Iterator[bytes]

    def body_chunks(self) -> Iterator[bytes]:
        """The body in canonical CRLF form, chunk by chunk (call once)."""
        if self._first_body:
            yield self._first_body
        yield from self._chunks


def read_message(stream: BinaryIO, *, chunk_bytes: int = CHUNK_BYTES) -> MessageReader:
    """Parse the header block of ``stream``; the body stays unread until asked for.

    A header block larger than ``MAX_HEADER_BYTES`` is refused (it is not mail
    anyone sends, and holding it would make memory grow with hostile input).
    """
    first = b""
    while b"\n" not in first and len(first) <= MAX_HEADER_BYTES:
        chunk = _read(stream, chunk_bytes)
        if not chunk:
            break
        first += chunk
    lf_index = first.find(b"\n")
    lf_only = lf_index >= 0 and (lf_index == 0 or first[lf_index - 1] != 0x0D)
    chunks = _crlf_chunks(first, stream, chunk_bytes) if lf_only else _raw_chunks(first, stream, chunk_bytes)
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        if buffer.startswith(b"\r\n") or _HEADER_END in buffer:
            break
        if len(buffer) > MAX_HEADER_BYTES:
            raise MessageFileError(f"the header block is larger than {MAX_HEADER_BYTES >> 20} MiB")
    headers, offset = parse_header_block(buffer)
    return MessageReader(headers, lf_only, buffer[offset:], chunks)


def _raw_chunks(first: bytes, stream: BinaryIO, size: int) -> Iterator[bytes]:
    if first:
        yield first
    while chunk := _read(stream, size):
        yield chunk


def _crlf_chunks(first: bytes, stream: BinaryIO, size: int) -> Iterator[bytes]:
    """Bare LF -> CRLF across chunks: a trailing CR waits for the next chunk's first byte."""
    held = b""
    for chunk in _raw_chunks(first, stream, size):
        data = held + chunk
        held = b""
        if data.endswith(b"\r"):
            data, held = data[:-1], b"\r"
        yield _BARE_LF.sub(b"\r\n", data)
    if held:
        yield held


def copy_stream(source: BinaryIO, target: BinaryIO, *, chunk_bytes: int = CHUNK_BYTES) -> None:
    """Copy ``source`` to ``target`` in chunks (the untouched message after its signatures)."""
    while chunk := _read(source, chunk_bytes):
        target.write(chunk)
