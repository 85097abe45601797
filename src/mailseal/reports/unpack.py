"""What arrives -> report documents: e-mail, Maildir, mbox, zip, gzip or bare XML, with caps.

Every way a report can be wrapped is recognised by its first bytes, not by
its name or declared type (reporters label gzip as ``application/octet-stream``,
zip as ``application/x-zip-compressed`` or worse). Every decompression is
capped: a document that grows past ``Limits.xml_bytes`` is refused with that
reason after reading at most that much, so a zip or gzip bomb costs a few
milliseconds and no memory. Nothing here parses XML; it only finds it.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import mailbox
import os
import re
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from enum import StrEnum
from pathlib import Path
from typing import IO, Final

from mailseal.reports.model import Unreadable

__all__ = ["Document", "Item", "Kind", "Limits", "documents", "item_from_stdin", "items_from_paths", "sniff"]

CHUNK: Final = 65536
MiB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps on what one input may cost (bytes)."""

    input_bytes: int = 64 * MiB  # one file, message or stdin
    xml_bytes: int = 32 * MiB  # one report once decompressed
    parts: int = 64  # MIME parts looked at in one message
    members: int = 8  # files in one zip archive
    depth: int = 4  # folder recursion


class Kind(StrEnum):
    """What a blob of bytes is, by its first bytes."""

    GZIP = "gzip"
    ZIP = "zip"
    XML = "xml"
    EMAIL = "e-mail"
    OTHER = "other"


_HEADER: Final = re.compile(rb"[!-9;-~]{1,76}:[ \t]*[^\x00-\x08\x0e-\x1f]*\r?\n")  # RFC 5322 field-name ":"


def sniff(head: bytes) -> Kind:
    """Recognise gzip, zip, XML or an RFC 5322 message from the first bytes."""
    if head.startswith(b"\x1f\x8b"):
        return Kind.GZIP
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return Kind.ZIP
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"<"):
        return Kind.XML
    if _HEADER.match(text) or text.startswith(b"From "):
        return Kind.EMAIL
    return Kind.OTHER


@dataclass(frozen=True, slots=True)
class Document:
    """One report document: where it came from and a way to read its XML (capped) in chunks."""

    label: str
    open: Callable[[], Iterator[bytes]]


@dataclass(frozen=True, slots=True)
class Item:
    """One input as received (a file, a message, stdin): the unit that is quarantined whole.

    A mail with good reports and a bad part stores the good ones and quarantines the mail
    for the bad part (re-ingesting it from quarantine finds the good ones duplicates).
    """

    label: str
    read: Callable[[], bytes]  # the original bytes, for the quarantine copy
    path: Path | None = None
    problem: str | None = None  # already known to be unreadable (e.g. over the input cap)


def _capped(stream: IO[bytes], limit: int, what: str) -> Iterator[bytes]:
    total = 0
    while True:
        try:
            chunk = stream.read(CHUNK)
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as exc:
            raise Unreadable(f"{what}: cannot decompress: {str(exc)[:160]}") from None
        if not chunk:
            return
        total += len(chunk)
        if total > limit:
            raise Unreadable(f"{what}: larger than the {limit // MiB} MiB limit once decompressed")
        yield chunk


def _gunzip(data: bytes, limit: int, what: str) -> Iterator[bytes]:
    """Decompress gzip members one bounded step at a time; bytes after the last member are ignored.

    Some reporters append a line break after the gzip stream (seen from
    Mimecast); ``gzip.GzipFile`` refuses that, a receiver should not.
    """
    total = 0
    rest = data
    while rest[:2] == b"\x1f\x8b":
        engine = zlib.decompressobj(wbits=31)
        pending = rest
        while pending and not engine.eof:
            try:
                chunk = engine.decompress(pending, CHUNK)
            except zlib.error as exc:
                raise Unreadable(f"{what} (gzip): cannot decompress: {exc}") from None
            pending = engine.unconsumed_tail
            total += len(chunk)
            if total > limit:
                raise Unreadable(f"{what} (gzip): larger than the {limit // MiB} MiB limit once decompressed")
            if chunk:
                yield chunk
        if not engine.eof:
            raise Unreadable(f"{what} (gzip): truncated (the compressed stream ends early)")
        rest = engine.unused_data


def _zip_documents(data: bytes, label: str, limits: Limits) -> list[Document]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise Unreadable(f"{label}: not a readable zip archive: {str(exc)[:160]}") from None
    if not members:
        raise Unreadable(f"{label}: zip archive holds no file")
    if len(members) > limits.members:
        raise Unreadable(f"{label}: zip archive holds {len(members)} files (limit {limits.members})")
    found = []
    for member in members:
        where = f"{label}: {member.filename[:100]}"
        if member.file_size > limits.xml_bytes:
            raise Unreadable(
                f"{where}: larger than the {limits.xml_bytes // MiB} MiB limit once decompressed"
            )
        if member.flag_bits & 0x1:
            raise Unreadable(f"{where}: encrypted zip member")

        def open_member(member: zipfile.ZipInfo = member, where: str = where) -> Iterator[bytes]:
            try:
                stream = archive.open(member)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, ValueError) as exc:
                raise Unreadable(f"{where}: cannot open zip member: {str(exc)[:160]}") from None
            with stream:
                yield from _capped(stream, limits.xml_bytes, where)

        found.append(Document(where, open_member))
    return found


def documents(data: bytes, label: str, limits: Limits, *, nested: bool = False) -> list[Document]:
    """The report documents in one blob: itself (XML), its gzip/zip contents, or an e-mail's parts."""
    kind = sniff(data[:512])
    if kind is Kind.XML:
        return [Document(label, lambda: iter([data]))]
    if kind is Kind.GZIP:
        return [Document(label, lambda: _gunzip(data, limits.xml_bytes, label))]
    if kind is Kind.ZIP:
        return _zip_documents(data, label, limits)
    if kind is Kind.EMAIL and not nested:
        return _message_documents(data, label, limits)
    if not data.strip():
        raise Unreadable(f"{label}: empty")
    raise Unreadable(f"{label}: neither XML, gzip, zip nor an e-mail message")


_REPORT_TYPES: Final = ("zip", "gzip", "xml", "octet-stream", "x-gzip", "x-zip")
_REPORT_NAMES: Final = (".xml", ".gz", ".zip", ".xml.gz", ".gzip")


def _message_documents(data: bytes, label: str, limits: Limits) -> list[Document]:
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)
    found: list[Document] = []
    problems: list[tuple[str, str]] = []  # (where, reason)
    for number, part in enumerate(_leaves(message, limits), start=1):
        name = part.get_filename() or ""
        ctype = part.get_content_type()
        where = f"{label}: part {number}" + (f" ({name[:80]})" if name else "")
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload.strip():
            continue
        kind = sniff(payload[:512])
        named = name.lower().endswith(_REPORT_NAMES) or any(t in ctype for t in _REPORT_TYPES)
        if kind in (Kind.GZIP, Kind.ZIP) or (kind is Kind.XML and (named or b"<feedback" in payload[:4096])):
            try:
                found.extend(documents(payload, where, limits, nested=True))
            except Unreadable as exc:
                problems.append((where, exc.reason))
        elif named and ctype not in ("text/plain", "text/html"):
            problems.append((where, f"{where}: labelled as a report ({ctype}) but neither XML, gzip nor zip"))
    if problems and not found:
        raise Unreadable("; ".join(reason for _, reason in problems)[:600])
    if not found:
        raise Unreadable(f"{label}: e-mail without a report attachment (zip, gzip or XML)")
    # The good reports are stored; each bad part is its own line, quarantining the whole message.
    return found + [Document(where, _unreadable(reason[:600])) for where, reason in problems]


def _unreadable(reason: str) -> Callable[[], Iterator[bytes]]:
    """A document that cannot be opened: reading it says why, so it gets its own quarantine line."""

    def open_() -> Iterator[bytes]:
        raise Unreadable(reason)

    return open_


def _leaves(message: Message, limits: Limits) -> Iterator[Message]:
    """Non-multipart parts, depth-first, at most ``limits.parts`` of them."""
    stack = [message]
    seen = 0
    while stack:
        part = stack.pop()
        seen += 1
        if seen > limits.parts:
            raise Unreadable(f"more than {limits.parts} MIME parts")
        if part.is_multipart():
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend(reversed([c for c in children if isinstance(c, Message)]))
            continue
        yield part


def _read_capped(path: Path, limit: int) -> bytes:
    size = path.stat().st_size
    if size > limit:
        raise Unreadable(f"{path}: {size // MiB} MiB, larger than the {limit // MiB} MiB input limit")
    with path.open("rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise Unreadable(f"{path}: larger than the {limit // MiB} MiB input limit")
    return data


def item_documents(item: Item, limits: Limits) -> list[Document]:
    """The documents in one item; a plain XML file is streamed from disk rather than read whole."""
    if item.problem is not None:
        raise Unreadable(item.problem)
    if item.path is not None:
        with item.path.open("rb") as handle:
            head = handle.read(512)
        if sniff(head) is Kind.XML:
            size = item.path.stat().st_size
            if size > limits.xml_bytes:
                raise Unreadable(
                    f"{item.label}: {size // MiB} MiB, larger than the {limits.xml_bytes // MiB} MiB report limit"
                )
            path = item.path

            def stream() -> Iterator[bytes]:
                with path.open("rb") as handle:
                    yield from _capped(handle, limits.xml_bytes, str(path))

            return [Document(item.label, stream)]
    return documents(item.read(), item.label, limits)


def _file_item(path: Path, limits: Limits) -> Item:
    return Item(str(path), lambda: _read_capped(path, limits.input_bytes), path)


def _is_mbox(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(5) == b"From "


def items_from_paths(paths: list[Path], limits: Limits) -> Iterator[Item]:
    """Files, folders (recursively), Maildir folders and mbox files -> items, in a stable order."""
    for path in paths:
        yield from _items(path, limits, 0)


def _items(path: Path, limits: Limits, depth: int) -> Iterator[Item]:
    if path.is_dir():
        if (path / "cur").is_dir() and (path / "new").is_dir():
            for sub in ("new", "cur"):
                for entry in sorted((path / sub).iterdir()):
                    if entry.is_file():
                        yield _file_item(entry, limits)
            return
        if depth >= limits.depth:
            return
        for entry in sorted(path.iterdir()):
            if not entry.name.startswith("."):
                yield from _items(entry, limits, depth + 1)
        return
    if not path.exists():
        raise FileNotFoundError(2, os.strerror(2), str(path))
    if path.is_file() and _is_mbox(path):
        box = mailbox.mbox(path, create=False)
        try:
            for number, key in enumerate(box.iterkeys(), start=1):
                yield _message_item(f"{path}: message {number}", box.get_bytes(key))
        finally:
            box.close()
        return
    yield _file_item(path, limits)


def _message_item(label: str, data: bytes) -> Item:
    return Item(label, lambda: data)


def item_from_stdin(limits: Limits) -> Item:
    """Everything on standard input (an alias pipe), capped."""
    data = sys.stdin.buffer.read(limits.input_bytes + 1)
    if len(data) > limits.input_bytes:
        # Kept (the first input_bytes + 1 bytes) in quarantine rather than dropped.
        return Item(
            "stdin",
            lambda: data,
            problem=f"stdin: larger than the {limits.input_bytes // MiB} MiB input limit",
        )
    return Item("stdin", lambda: data)
