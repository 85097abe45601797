"""Attacker-chosen text made safe to show on one line of a log or a terminal.

One rule for every place that prints what came from the wire (milter log
lines, diagnosis evidence, report ingest messages): a character Python does
not call printable (C0/C1 controls, DEL, line and paragraph separators, the
bidirectional overrides that reorder what a terminal shows) becomes a visible
escape, ``\\xNN`` below 256, else ``\\uNNNN`` / ``\\UNNNNNNNN``. Printable
text, international names included, stays as it is, so the line stays readable.
"""

from __future__ import annotations


def escape_char(ch: str) -> str:
    """The visible escape of one character: ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``."""
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str, also: str = "") -> str:
    """``text`` with every unprintable character (and each one in ``also``) escaped.

    ``also`` names printable characters the caller's format reserves (a space
    or ``=`` in a ``key=value`` log line); they get the same ``\\xNN`` escape.
    """
    if text.isprintable() and not any(ch in text for ch in also):
        return text
    return "".join(escape_char(ch) if not ch.isprintable() or ch in also else ch for ch in text)
