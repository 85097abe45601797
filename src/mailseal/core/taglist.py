"""Tag=value lists (RFC 6376 section 3.2): strict parsing and formatting.

    tag-list  =  tag-spec *( ";" tag-spec ) [ ";" ]
    tag-spec  =  [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]
    tag-name  =  ALPHA *ALNUMPUNC          ; ALNUMPUNC = ALPHA / DIGIT / "_"
    tag-value =  [ tval *( 1*(WSP / FWS) tval ) ]
    tval      =  1*VALCHAR                 ; VALCHAR = %x21-3A / %x3C-7E

"Tags with duplicate names MUST NOT occur within a single tag-list; if a tag
name does occur more than once, the entire tag-list is invalid."
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mailseal.core.problems import SyntaxProblem
from mailseal.core.results import Reason

# VALCHAR plus folding whitespace inside the value; 8-bit allowed for RFC 8616 (EAI).
_BAD_VALUE_CHAR = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FWS = " \t\r\n"

MAX_TAG_LIST_BYTES = 65536
"""Longest tag list read: an RSA-8192 key record or a signature with a long h= is a few KB."""
MAX_TAGS = 100
"""Most tags read in one list: a signature uses 14 names at most, a key record 7 (unknown ones are ignored)."""
_SHOWN = 40  # characters of a bad tag name echoed in a problem's detail (which reaches logs and A-R)

_fast_tag_list: Callable[[str], dict[str, str] | None] | None
try:  # a C twin for the common case, built when a compiler was present
    from mailseal.core import _canon
except ImportError:  # pragma: no cover - installs without a C compiler
    _fast_tag_list = None
else:
    _fast_tag_list = _canon.tag_list


def parse_tag_list(text: str, *, reason_prefix: str = "sig") -> dict[str, str]:
    """Parse a tag-list into a dict of tag name -> value (FWS around values removed).

    Raises :class:`SyntaxProblem` with ``SIG_DUPLICATE_TAG``/``SIG_SYNTAX`` (or the
    ``KEY_*`` equivalents when ``reason_prefix="key"``).
    """
    if _fast_tag_list is not None and len(text) <= MAX_TAG_LIST_BYTES:
        # the C twin takes well-formed ASCII lists; anything else (and any list over a bound) comes here
        tags = _fast_tag_list(text)
        if tags is not None and len(tags) <= MAX_TAGS:
            return tags
    return parse_tag_list_py(text, reason_prefix=reason_prefix)


def parse_tag_list_py(text: str, *, reason_prefix: str = "sig") -> dict[str, str]:
    """:func:`parse_tag_list` in Python: the reference, and the only one that explains errors."""
    syntax = Reason.KEY_SYNTAX if reason_prefix == "key" else Reason.SIG_SYNTAX
    duplicate = Reason.KEY_SYNTAX if reason_prefix == "key" else Reason.SIG_DUPLICATE_TAG
    if len(text) > MAX_TAG_LIST_BYTES:
        raise SyntaxProblem(syntax, f"the tag list is longer than {MAX_TAG_LIST_BYTES} characters")
    if _BAD_VALUE_CHAR.search(text):
        raise SyntaxProblem(syntax, "the tag list contains a control character")
    folded = "\r" in text or "\n" in text
    tags: dict[str, str] = {}
    parts = text.split(";", MAX_TAGS + 1)
    if parts and not parts[-1].strip(_FWS):
        parts.pop()  # the optional trailing ";"
    if len(parts) > MAX_TAGS:
        raise SyntaxProblem(syntax, f"the tag list has more than {MAX_TAGS} tags")
    for part in parts:
        name, eq, value = part.partition("=")
        name = name.strip(_FWS)
        if not eq:
            if not name:
                raise SyntaxProblem(syntax, "empty tag between two semicolons")
            raise SyntaxProblem(syntax, f"tag {name[:_SHOWN]!r} has no '='")
        if not (name.isascii() and name.replace("_", "a").isalnum() and name[0].isalpha()):
            raise SyntaxProblem(syntax, f"invalid tag name {name[:_SHOWN]!r}")
        value = value.strip(_FWS)
        if folded and ("\r" in value or "\n" in value):
            value = _unfold(value, name, syntax)
        if name in tags:
            raise SyntaxProblem(duplicate, f"tag {name}= appears more than once")
        tags[name] = value
    return tags


def _unfold(value: str, name: str, syntax: Reason) -> str:
    """Remove CRLF that folds a value; a CR or LF anywhere else is a syntax error."""
    unfolded = value.replace("\r\n ", " ").replace("\r\n\t", "\t")
    if "\r" in unfolded or "\n" in unfolded:
        raise SyntaxProblem(syntax, f"tag {name}= contains a bare line break")
    return unfolded


def strip_fws(value: str) -> str:
    """Remove all whitespace, as base64 values (b=, bh=, p=) allow FWS anywhere."""
    if " " in value or "\t" in value or "\r" in value or "\n" in value:
        return "".join(value.split())
    return value


def format_tag_list(tags: list[tuple[str, str]]) -> str:
    """Join tags as ``a=b; c=d``; the caller chooses order and folding."""
    return "; ".join(f"{name}={value}" for name, value in tags)
