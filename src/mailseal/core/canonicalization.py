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


def relaxed_lines_py(data: bytes | memoryview) -> bytes:
    """3.4.4 a+b on complete lines: WSP runs become one SP; WSP before CRLF goes.

    The reference version. Fast paths matter: typical text has no tabs,
    double spaces or trailing spaces, and ``in`` on bytes is a C-speed scan.
    """
    if isinstance(data, memoryview):
        data = data.tobytes()
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
    relaxed_lines: Callable[[bytes | memoryview], bytes] = relaxed_lines_py
    relaxed_header: Callable[[bytes], bytes] = relaxed_header_py
    SPEEDUPS = False
else:
    relaxed_lines = _canon.relaxed_lines
    relaxed_header = _canon.relaxed_header
    SPEEDUPS = True


PIECE = 65536  # bytes canonicalized and handed to the sink at a time (cut at a CRLF)


class BodyCanonicalizer:
    """Streaming body canonicalizer; emits canonical bytes to ``sink``.

    Simple (3.4.3) keeps lines as they are; relaxed (3.4.4) also reduces
    whitespace. Both drop empty lines at the end. An empty body is CRLF
    under simple and nothing under relaxed (RFC 6376 errata 1384).

    A large chunk is worked through in pieces of about ``PIECE`` bytes, each
    canonicalized and passed on at once: no canonical copy of the whole body is
    ever made, the transient buffers stay small enough to be reused without page
    faults, and each piece is still in cache when the sink hashes it.
    """

    __slots__ = ("_content", "_held", "_pending", "_relaxed", "_sink")

    def __init__(self, canon: Canon, sink: Callable[[bytes], object]) -> None:
        self._relaxed = canon is Canon.RELAXED
        self._sink = sink
        self._pending: list[bytes] = []  # pieces of an incomplete last line (joined once complete)
        self._held = 0  # CRLFs of possibly-trailing empty lines, not yet emitted
        self._content = False  # any non-empty line emitted yet

    def feed(self, chunk: bytes, start: int = 0) -> None:
        """Add the next body bytes, ``chunk[start:]`` (not sliced off); lines may span chunks.

        Only the new chunk is searched for a line end, so a very long line fed
        in many chunks costs linear time; memory is bounded by the longest line.
        """
        end = len(chunk)
        if start >= end:
            return
        if self._pending:  # complete the pending line first
            if chunk[start : start + 1] == b"\n" and self._pending[-1].endswith(b"\r"):
                first = start + 1  # the CRLF was split between the previous chunk and this one
            else:
                first = chunk.find(b"\r\n", start)
                if first < 0:
                    self._pending.append(chunk[start:] if start else chunk)
                    return
                first += 2
            line = b"".join((*self._pending, chunk[start:first]))
            self._pending.clear()
            self._emit_lines(line, 0, len(line))
            start = first
        lines_end = chunk.rfind(b"\r\n", start) + 2
        if lines_end < 2:
            if start < end:
                self._pending.append(chunk[start:] if start else chunk)
            return
        while start < lines_end:
            cut = start + PIECE
            if cut >= lines_end:
                cut = lines_end
            else:  # the last CRLF inside the piece, or the first after it (a longer line)
                crlf = chunk.rfind(b"\r\n", start, cut)
                cut = (crlf if crlf >= 0 else chunk.find(b"\r\n", cut - 1)) + 2
            self._emit_lines(chunk, start, cut)
            start = cut
        if lines_end < end:
            self._pending.append(chunk[lines_end:])

    def _emit_lines(self, data: bytes, start: int, end: int) -> None:
        """Canonicalize and pass on ``data[start:end]``, complete lines ending in CRLF."""
        whole = start == 0 and end == len(data)
        if self._relaxed:
            data = relaxed_lines(data if whole else memoryview(data)[start:end])
            start, end, whole = 0, len(data), True
        if end - start == 2 or data.endswith(b"\r\n\r\n", start, end):  # rare: ends in an empty line
            lines = data if whole else data[start:end]
            first_crlf = _trailing_crlfs(lines)
            crlfs = (len(lines) - first_crlf) // 2
            if first_crlf == 0:
                self._held += crlfs
                return
            text = lines[: first_crlf + 2]  # the last non-empty line with its CRLF
            held = crlfs - 1
        else:
            text = data if whole else data[start:end]  # simple: a copy of one piece
            held = 0
        if self._held:
            self._sink(b"\r\n" * self._held)
        self._sink(text)
        self._content = True
        self._held = held

    def finish(self) -> None:
        """Flush the last line (a CRLF added) or, for an empty simple body, the one CRLF."""
        last = b"".join(self._pending)
        self._pending.clear()
        if last and self._relaxed:
            last = relaxed_lines(last + b"\r\n")[:-2]
        if last:
            if self._held:
                self._sink(b"\r\n" * self._held)
            self._sink(last + b"\r\n")
        elif not self._content and not self._relaxed:
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
