"""Raw message bytes -> header fields (folding and bytes kept) and the body offset.

RFC 5322 section 2.2: a field is a name, a colon and a value that may be folded
onto continuation lines starting with whitespace. We never re-encode anything:
canonicalization and signing work on the exact bytes received.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_BARE_LF = re.compile(rb"(?<!\r)\n")
_FIELD_END = re.compile(rb"\r\n(?![ \t])")  # a line end that no continuation line follows


class HeaderField:
    """One header field: its name as written and its raw bytes including the final CRLF.

    ``key`` is the lower-cased name, for the case-insensitive comparisons RFC
    5322 asks for; it is computed once because selection compares it often.
    """

    __slots__ = ("key", "name", "raw")

    def __init__(self, name: str, raw: bytes) -> None:
        self.name = name
        self.raw = raw
        self.key = name.lower()

    def __repr__(self) -> str:
        return f"HeaderField({self.name!r}, {self.raw!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HeaderField) and (self.name, self.raw) == (other.name, other.raw)

    def __hash__(self) -> int:
        return hash((self.name, self.raw))

    @property
    def value(self) -> bytes:
        """The raw bytes after the colon, without the final CRLF (folding kept)."""
        colon = self.raw.find(b":")
        end = len(self.raw) - 2 if self.raw.endswith(b"\r\n") else len(self.raw)
        return self.raw[colon + 1 : end]


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed message: header fields in order, top to bottom, and the body bytes."""

    headers: tuple[HeaderField, ...]
    body: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> Message:
        """Split a CRLF (or LF-only) message; never raises for any content."""
        data = to_crlf(data)
        headers, offset = parse_header_block(data)
        return cls(headers, data[offset:])


def to_crlf(data: bytes) -> bytes:
    """Turn LF line ends into CRLF when the message came from a Unix file.

    Mail on the wire is CRLF (RFC 5322 section 2.1); files on disk often use
    LF alone. DKIM canonicalization is defined over CRLF, so a file whose
    first line ends in a bare LF has every bare LF read as a line end. A
    message whose first line ends in CRLF is taken as wire format and left
    untouched: a stray bare LF inside it is content, as RFC 6376 treats it.
    """
    if not is_lf_only(data):
        return data
    return _BARE_LF.sub(b"\r\n", data)


def is_lf_only(data: bytes) -> bool:
    """True when the first line end is a bare LF (a Unix file, not wire format)."""
    first = data.find(b"\n")
    return first >= 0 and (first == 0 or data[first - 1] != 0x0D)


def parse_header_block(data: bytes) -> tuple[tuple[HeaderField, ...], int]:
    """Return the header fields and the offset where the body starts.

    The header ends at the first empty line; a message without one is all
    header and has an empty body. A line that is neither a field nor a
    continuation is kept as a nameless field so no byte is lost, and can never
    be selected by ``h=``. Fields are cut at every CRLF not followed by SP or
    HTAB. The C twin (one pass, the fields made without running Python code)
    does the work when it was built; :func:`parse_header_block_py` is the
    reference, and a property test holds them equal on arbitrary bytes.
    """
    if _fast_header_fields is not None:
        return _fast_header_fields(data, HeaderField)
    return parse_header_block_py(data)


def parse_header_block_py(data: bytes) -> tuple[tuple[HeaderField, ...], int]:
    """:func:`parse_header_block` in Python: one regex split, then one field per piece."""
    if data.startswith(b"\r\n"):
        return (), 2
    end = data.find(b"\r\n\r\n")
    if end < 0:
        block, offset = data, len(data)
    else:
        block, offset = data[: end + 2], end + 4
    pieces = _FIELD_END.split(block)
    last = pieces.pop()  # empty when the block ends in CRLF; else a last field without one
    fields = [_make_field(piece, piece + b"\r\n") for piece in pieces]
    if last:
        fields.append(_make_field(last, last))
    return tuple(fields), offset


def _make_field(text: bytes, raw: bytes) -> HeaderField:
    """``text`` is the field without its final CRLF; the name is what precedes a colon on its first line."""
    colon = text.find(b":")
    if colon < 0 or text.find(b"\r\n", 0, colon) >= 0:
        return HeaderField("", raw)
    return HeaderField(text[:colon].rstrip(b" \t").decode("utf-8", "replace"), raw)


_fast_header_fields: Callable[[bytes, type[HeaderField]], tuple[tuple[HeaderField, ...], int]] | None
try:  # the C twin, built when a compiler was present
    from mailseal.core import _canon
except ImportError:  # pragma: no cover - installs without a C compiler
    _fast_header_fields = None
else:
    _fast_header_fields = _canon.header_fields
