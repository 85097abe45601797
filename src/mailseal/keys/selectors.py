"""Selector naming schemes such as ``ms{year}q{quarter}`` -> ``ms2026q4``, never reusing a selector."""

from __future__ import annotations

import re
import string
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Final

from mailseal.core.algorithms import KeyType
from mailseal.core.identity import is_selector
from mailseal.errors import UsageError

__all__ = ["DEFAULT_SCHEME", "check_scheme", "selector_for"]

DEFAULT_SCHEME: Final = "ms{year}q{quarter}"
"""Quarter-stamped selectors: readable in DNS and in Authentication-Results, sortable, never reused."""

_PLACEHOLDER: Final = re.compile(r"\{([a-z]*)\}")
_NAMES: Final = ("year", "quarter", "month", "day", "type")
_TYPE_WORD: Final = {KeyType.RSA: "rsa", KeyType.ED25519: "ed"}


def _expand(scheme: str, now: int, key_type: KeyType) -> str:
    when = datetime.fromtimestamp(now, tz=UTC)
    values = {
        "year": f"{when.year:04d}",
        "quarter": str((when.month - 1) // 3 + 1),
        "month": f"{when.month:02d}",
        "day": f"{when.day:02d}",
        "type": _TYPE_WORD[key_type],
    }

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise UsageError(
                f"selector scheme {scheme!r}: unknown placeholder {{{name}}}; "
                f"use {', '.join('{' + n + '}' for n in _NAMES)}"
            )
        return values[name]

    return _PLACEHOLDER.sub(substitute, scheme).lower()


def check_scheme(scheme: str) -> str:
    """Return ``scheme`` if it expands to valid selectors, else raise :class:`UsageError`."""
    sample = _expand(scheme, 0, KeyType.RSA)
    if "{" in sample or "}" in sample or not is_selector(sample):
        raise UsageError(f"selector scheme {scheme!r} does not make a valid selector (got {sample!r})")
    return scheme


def selector_for(scheme: str, now: int, *, key_type: KeyType, taken: Collection[str]) -> str:
    """The selector ``scheme`` gives at ``now``; ``b``, ``c``, ... appended when that one was used before.

    Selectors are never reused (``taken`` holds every selector the domain
    ever had): a verifier holding old mail must never find a new key at an
    old name.
    """
    check_scheme(scheme)
    base = _expand(scheme, now, key_type)
    used = {name.lower() for name in taken}
    if base not in used:
        return base
    for suffix in string.ascii_lowercase[1:]:
        if base + suffix not in used:
            return base + suffix
    number = 2
    while f"{base}-{number}" in used:
        number += 1
    return f"{base}-{number}"
