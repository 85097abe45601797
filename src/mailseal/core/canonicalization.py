"""Simple and relaxed canonicalization (RFC 6376 section 3.4), headers and body.

The body canonicalizers are streaming: ``feed()`` any chunks (a CRLF may be
split between two), ``finish()`` once; output goes to a sink callback, so
memory stays flat whatever the message size. Only complete lines are
transformed; empty lines at the end are held back because RFC 6376 removes
them (3.4.3, 3.4.4) and we cannot know they are at the end until ``finish()``.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from mailseal.core.message import HeaderField


class Canon(StrEnum):
    """The two canonicalization algorithms of RFC 6376 section 3.4."""

    SIMPLE = "simple"
    RELAXED = "relaxed"


def canonicalize_header(field: HeaderField, canon: Canon) -> bytes:
    """Canonicalize one header field, CRLF included (3.4.1, 3.4.2)."""
    if canon is Canon.SIMPLE:
        return field.raw if field.raw.endswith(b"\r\n") else field.raw + b"\r\n"
    return relaxed_header(field.raw)


def relaxed_header_py(raw: bytes) -> bytes:
    """3.4.2: lower-case the name, unfold, collapse WSP, trim around the colon (reference)."""
    colon = raw.find(b":")
    name = raw[:colon].rstrip(b" \t").lower()
    value = raw[colon + 1 :]
    if b"\r\n" in value:
        value = value.replace(b"\r\n", b"")
    if b"\t" in value:
        value = value.replace(b"\t", b" ")
    while b"  " in value:  # bytes methods beat a regex on these short strings
        value = value.replace(b"  ", b" ")
    return name + b":" + value.strip(b" ") + b"\r\n"


def relaxed_lines_py(data: bytes) -> bytes:
    """3.4.4 a+b on complete lines: WSP runs become one SP; WSP before CRLF goes.

    The reference version. Fast paths matter: typical text has no tabs,
    double spaces or trailing spaces, and ``in`` on bytes is a C-speed scan.
    """
    if b"\t" in data:
        data = data.replace(b"\t", b" ")
    while b"  " in data:  # each pass halves every run of spaces, at C speed
        data = data.replace(b"  ", b" ")
    if b" \r\n" in data:
        data = data.replace(b" \r\n", b"\r\n")
    return data


try:  # the same transformations in one C pass each, built when a compiler was present
    from mailseal.core import _canon
except ImportError:  # pragma: no cover - exercised on installs without a C compiler
    relaxed_lines: Callable[[bytes], bytes] = relaxed_lines_py
    relaxed_header: Callable[[bytes], bytes] = relaxed_header_py
    SPEEDUPS = False
else:
    relaxed_lines = _canon.relaxed_lines
    relaxed_header = _canon.relaxed_header
    SPEEDUPS = True


class BodyCanonicalizer:
    """Streaming body canonicalizer; emits canonical bytes to ``sink``.

    Simple (3.4.3) keeps lines as they are; relaxed (3.4.4) also reduces
    whitespace. Both drop empty lines at the end. An empty body is CRLF
    under simple and nothing under relaxed (RFC 6376 errata 1384).
    """

    __slots__ = ("_content", "_held", "_pending", "_relaxed", "_sink")

    def __init__(self, canon: Canon, sink: Callable[[bytes], object]) -> None:
        self._relaxed = canon is Canon.RELAXED
        self._sink = sink
        self._pending: list[bytes] = []  # pieces of an incomplete last line (joined once complete)
        self._held = 0  # CRLFs of possibly-trailing empty lines, not yet emitted
        self._content = False  # any non-empty line emitted yet

    def feed(self, chunk: bytes) -> None:
        """Add the next body bytes; lines may span chunks.

        Only the new chunk is searched for a line end, so a very long line fed
        in many chunks costs linear time; memory is bounded by the longest line.
        """
        if not chunk:
            return
        cut = chunk.rfind(b"\r\n")
        if cut >= 0:
            cut += 2
        elif chunk[:1] == b"\n" and self._pending and self._pending[-1].endswith(b"\r"):
            cut = 1  # the CRLF was split between the previous chunk and this one
        else:
            self._pending.append(chunk)
            return
        head = chunk[:cut] if cut != len(chunk) else chunk
        if self._pending:
            head = b"".join((*self._pending, head))
            self._pending.clear()
        self._emit_lines(head)
        if cut != len(chunk):
            self._pending.append(chunk[cut:])

    def _emit_lines(self, lines: bytes) -> None:
        if self._relaxed:
            lines = relaxed_lines(lines)
        if lines.endswith(b"\r\n\r\n"):
            start = _trailing_crlfs(lines)
            text = lines[:start]
            crlfs = (len(lines) - start) // 2
        else:
            text = lines[:-2]
            crlfs = 1
        if text:
            if self._held:
                self._sink(b"\r\n" * self._held)
            self._sink(text)
            self._content = True
            self._held = crlfs
        else:
            self._held += crlfs

    def finish(self) -> None:
        """Flush the last line and the one CRLF that ends the body, if any."""
        last = b"".join(self._pending)
        self._pending.clear()
        if last and self._relaxed:
            last = relaxed_lines(last + b"\r\n")[:-2]
        if last:
            if self._held:
                self._sink(b"\r\n" * self._held)
            self._sink(last + b"\r\n")
        elif self._content or not self._relaxed:
            self._sink(b"\r\n")


def _trailing_crlfs(lines: bytes) -> int:
    """Where the run of CRLFs that ends ``lines`` starts.

    Not a regex: a search for "one or more CRLFs at the end" tries every
    position of the chunk (about 1 ms for 40 KB), and bodies often end in a
    blank line.
    """
    end = len(lines)
    start = len(lines.rstrip(b"\r\n"))
    count, odd = divmod(end - start, 2)
    if not odd and lines[start:] == b"\r\n" * count:
        return start
    position = end  # a stray CR or LF among the final line ends: only whole CRLFs count
    while position >= 2 and lines[position - 2 : position] == b"\r\n":
        position -= 2
    return position


def canonicalize_body(body: bytes, canon: Canon) -> bytes:
    """Whole-body convenience over :class:`BodyCanonicalizer` (tests, small bodies)."""
    out: list[bytes] = []
    canonicalizer = BodyCanonicalizer(canon, out.append)
    canonicalizer.feed(body)
    canonicalizer.finish()
    return b"".join(out)
