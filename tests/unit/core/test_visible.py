"""core/visible.py: the one rule for showing wire text on a log line or a terminal."""

from __future__ import annotations

import sys

from mailseal.core.visible import escape_char, visible


def test_printable_text_is_kept_as_is_international_names_included() -> None:
    assert visible("Zoë — bücher.example") == "Zoë — bücher.example"


def test_every_unprintable_character_becomes_an_escape_and_nothing_else_does() -> None:
    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF)
    shown = visible(every)
    assert shown.isprintable()
    assert shown.count("\\") == sum(not ch.isprintable() for ch in every) + 1  # + the backslash kept as is


def test_controls_separators_and_bidi_overrides_are_escaped() -> None:
    assert visible("a\nb\x1b[31m\x7f") == "a\\x0ab\\x1b[31m\\x7f"
    assert visible("\u2028\u202e\u2066") == "\\u2028\\u202e\\u2066"
    assert escape_char("\U000e0001") == "\\U000e0001"


def test_also_escapes_characters_the_callers_format_reserves() -> None:
    assert visible("a b=c", also=" =") == "a\\x20b\\x3dc"
    assert visible("a b=c") == "a b=c"
