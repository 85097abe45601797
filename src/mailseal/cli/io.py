"""Reading messages and key files for the CLI, with clear one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

from mailseal.errors import MailsealError


def read_message(path: str | None) -> bytes:
    """The message bytes from ``path`` or, for None or ``-``, standard input."""
    if path is None or path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise MailsealError(f"cannot read {path}: {exc.strerror}") from None
