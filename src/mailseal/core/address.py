"""RFC 5322 address lists and the message's author (the From domain), read without recursion.

The From field is hostile input: a reader must never raise on it, never
spend more than linear time on it, and must say plainly when it could not
read it, because require rules and alignment depend on the answer. So:

* the tokenizer is one regular-expression scan plus an explicit depth
  counter for comments (RFC 5322 3.2.2 lets comments nest without limit;
  we stop at ``MAX_COMMENT_DEPTH``), with no recursion anywhere;
* a field longer than ``MAX_FROM_BYTES``, deeper than ``MAX_COMMENT_DEPTH``,
  naming more than ``MAX_ADDRESSES`` addresses, holding a control character
  (NUL, a bare CR or LF, ESC...) or not matching the grammar is *unreadable*,
  a value of its own (:attr:`AuthorStatus.UNREADABLE`), never "no domain";
* an address hidden in an RFC 2047 encoded-word is not an address (RFC 2047
  section 5: an encoded-word must not appear in an addr-spec), so a From
  whose only "address" is encoded, or whose local part holds an
  encoded-word, is unreadable too.

Grammar (RFC 5322 3.4, with the obsolete forms of 4.4 that real mail uses)::

    address-list  = (address *("," address)) / obs-addr-list
    address       = mailbox / group
    mailbox       = name-addr / addr-spec
    name-addr     = [display-name] angle-addr
    angle-addr    = [CFWS] "<" addr-spec ">" [CFWS] / obs-angle-addr
    obs-angle-addr = [CFWS] "<" obs-route addr-spec ">" [CFWS]
    group         = display-name ":" [group-list] ";" [CFWS]
    addr-spec     = local-part "@" domain
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Final

from mailseal.core.message import HeaderField

MAX_FROM_BYTES: Final = 8192
"""Bytes of one From field we read. Real ones are under 1 KB; past this the author is unreadable."""
MAX_COMMENT_DEPTH: Final = 16
"""Nesting of ``(comments)``. Real mail uses 1 or 2; deeper is unreadable, never a recursion."""
MAX_ADDRESSES: Final = 64
"""Addresses in all From fields together; more makes the author unreadable."""
MAX_FROM_FIELDS: Final = 16
"""From fields looked at; a message with more has an unreadable author."""

# One token per match, alternatives disjoint at their first character, no nested
# quantifiers: the scan is linear whatever the input.
_TOKEN = re.compile(
    r"""
    (?P<space>[ \t]+)
  | (?P<quoted>"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*")
  | (?P<literal>\[(?:[^\[\]\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*\])
  | (?P<atom>[^\x00-\x20\x7f()<>\[\]:;@\\,."]+)
  | (?P<special>[<>@:;,.])
  | (?P<comment>\()
    """,
    re.VERBOSE,
)
_COMMENT_PART = re.compile(r"[^()\\\x00-\x08\x0a-\x1f\x7f]+|\\[^\x00-\x08\x0a-\x1f\x7f]|[()]")
_LABEL = re.compile(
    r"(?!-)[\w-]{1,63}(?<!-)"
)  # \w: letters and digits of any script, and "_" (deployed names)
_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[^?\s]*\?")  # "=?charset?encoding?" opens an RFC 2047 word
_FOLD = re.compile(r"\r\n(?=[ \t])")

# The common shapes (`Name <local@domain>`, `local@domain`) without the tokenizer: one
# anchored match, no overlapping quantifiers. Anything else goes through the full reader.
_ADDR = r"([A-Za-z0-9._+-]+)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)"
_SIMPLE = re.compile(rf"[ \t]*(?:[A-Za-z0-9][A-Za-z0-9 .-]*<{_ADDR}>|{_ADDR})[ \t]*\Z")


class AddressProblem(ValueError):
    """An address list we cannot read within our bounds; the text says why (for logs and tests)."""


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One address: the local part as written (quotes kept) and the domain, lower-cased.

    A domain literal (``[192.0.2.1]``) is kept with its brackets.
    """

    local: str
    domain: str

    @property
    def address(self) -> str:
        """``local@domain``."""
        return f"{self.local}@{self.domain}"


class AuthorStatus(StrEnum):
    """What the From fields let us say about who the author is (RFC 5322 3.6.2)."""

    SINGLE = "single"
    """Exactly one From field with exactly one address: the author domain is known."""
    MULTIPLE = "multiple"
    """Several From fields or several addresses, all readable: ``domains`` names them all."""
    MISSING = "missing"
    """No From field at all (RFC 5322 requires one)."""
    UNREADABLE = "unreadable"
    """A From field we cannot read within our bounds: any domain may be the one a reader sees."""


@dataclass(frozen=True, slots=True)
class Author:
    """The author as far as the From fields tell it; see :class:`AuthorStatus`."""

    status: AuthorStatus
    domains: tuple[str, ...] = ()
    """Every domain of every readable address, in order, without duplicates."""
    detail: str = ""
    """Why the author is not a single address, in a few words (empty for SINGLE)."""
    mailbox: Mailbox | None = None
    """The one address, for SINGLE."""

    @property
    def domain(self) -> str | None:
        """The author domain, only when there is exactly one (the one alignment can use)."""
        return self.mailbox.domain if self.mailbox is not None else None

    @property
    def determined(self) -> bool:
        """True when the domains a reader may see are all known (SINGLE or MULTIPLE)."""
        return self.status in (AuthorStatus.SINGLE, AuthorStatus.MULTIPLE)


def parse_address_list(value: bytes | str) -> tuple[Mailbox, ...]:
    """Every mailbox of an address list (groups flattened); raises :class:`AddressProblem`.

    ``value`` is a field value as received (folding allowed). Never recurses;
    linear in the length of ``value``, which the caller bounds.
    """
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if "\r\n" in text:
        text = _FOLD.sub("", text)
    simple = _SIMPLE.match(text)
    if simple:
        local, domain = simple.group(1, 2) if simple.group(1) else simple.group(3, 4)
        if "-" not in domain or all(_LABEL.fullmatch(label) for label in domain.split(".")):
            return (Mailbox(local, domain.lower()),)
    return _parse_tokens(_tokens(text))


MAX_CACHED_FROM: Final = 512
"""From fields up to this size are memoized (senders recur; a hostile size never fills the cache)."""


def author(headers: Iterable[HeaderField]) -> Author:
    """Who the message says it is from, or why that cannot be told; never raises."""
    fields = [h for h in headers if h.key == "from"]
    if len(fields) == 1 and len(fields[0].raw) <= MAX_CACHED_FROM:
        return _one_from(fields[0].raw)
    return _author(fields)


@lru_cache(maxsize=4096)
def _one_from(raw: bytes) -> Author:
    """The author of a message with this one From field: a pure function of its bytes, so memoized."""
    return _author([HeaderField("From", raw)])


def _author(fields: list[HeaderField]) -> Author:
    if len(fields) == 1 and len(fields[0].raw) <= MAX_FROM_BYTES:  # the usual case, kept short
        try:
            found = parse_address_list(fields[0].value)
        except AddressProblem as problem:
            return Author(AuthorStatus.UNREADABLE, detail=f"unreadable From: {problem}")
        if len(found) == 1:
            return Author(AuthorStatus.SINGLE, (found[0].domain,), mailbox=found[0])
    if not fields:
        return Author(AuthorStatus.MISSING, detail="no From field")
    if len(fields) > MAX_FROM_FIELDS:
        return Author(AuthorStatus.UNREADABLE, detail=f"more than {MAX_FROM_FIELDS} From fields")
    mailboxes: list[Mailbox] = []
    for field in fields:
        if len(field.raw) > MAX_FROM_BYTES:
            return Author(
                AuthorStatus.UNREADABLE, detail=f"a From field is longer than {MAX_FROM_BYTES} bytes"
            )
        try:
            mailboxes.extend(parse_address_list(field.value))
        except AddressProblem as problem:
            return Author(AuthorStatus.UNREADABLE, detail=f"unreadable From: {problem}")
        if len(mailboxes) > MAX_ADDRESSES:
            return Author(AuthorStatus.UNREADABLE, detail=f"more than {MAX_ADDRESSES} From addresses")
    domains = tuple(dict.fromkeys(m.domain for m in mailboxes))
    if not mailboxes:
        return Author(AuthorStatus.UNREADABLE, detail="the From field names no address")
    if len(fields) == 1 and len(mailboxes) == 1:
        return Author(AuthorStatus.SINGLE, domains, mailbox=mailboxes[0])
    what = "From fields" if len(fields) > 1 else "addresses in From"
    return Author(AuthorStatus.MULTIPLE, domains, detail=f"{max(len(fields), len(mailboxes))} {what}")


# -- the tokenizer ---------------------------------------------------------------------

_Token = tuple[str, str]  # (kind, text): kind is quoted, literal, atom or the special character


def _tokens(text: str) -> list[_Token]:
    """Split into tokens, dropping white space and comments; raises on anything else."""
    out: list[_Token] = []
    position = 0
    end = len(text)
    match_token = _TOKEN.match
    while position < end:
        match = match_token(text, position)
        if match is None:
            raise AddressProblem(f"unexpected character {text[position]!r} at offset {position}")
        kind = match.lastgroup
        position = match.end()
        if kind == "space":
            continue
        if kind == "comment":
            position = _skip_comment(text, position)
        elif kind == "special":
            out.append((match.group(), match.group()))
        else:
            assert kind is not None  # noqa: S101 - every alternative is named
            out.append((kind, match.group()))
    return out


def _skip_comment(text: str, position: int) -> int:
    """Past the comment whose "(" ends before ``position``; a depth counter, not recursion."""
    depth = 1
    match_part = _COMMENT_PART.match
    while depth:
        match = match_part(text, position)
        if match is None:
            if position >= len(text):
                raise AddressProblem("a comment is not closed")
            raise AddressProblem(f"unexpected character {text[position]!r} in a comment")
        part = match.group()
        if part == "(":
            depth += 1
            if depth > MAX_COMMENT_DEPTH:
                raise AddressProblem(f"comments nested deeper than {MAX_COMMENT_DEPTH}")
        elif part == ")":
            depth -= 1
        position = match.end()
    return position


# -- the grammar --------------------------------------------------------------------------


def _parse_tokens(tokens: list[_Token]) -> tuple[Mailbox, ...]:
    """address-list over tokens: a flat loop with two flags (inside <...>, inside a group)."""
    mailboxes: list[Mailbox] = []
    segment: list[_Token] = []
    in_angle = False
    in_group = False
    for token in tokens:
        kind = token[0]
        if kind == "<":
            if in_angle:
                raise AddressProblem("'<' inside an angle address")
            in_angle = True
        elif kind == ">":
            if not in_angle:
                raise AddressProblem("'>' without '<'")
            in_angle = False
        elif in_angle:
            pass  # ":" and "," of an obs-route belong to the angle address
        elif kind == ":" and not in_group and not any(t[0] in ("@", "<") for t in segment):
            in_group = True  # the segment so far was the group's display name
            segment = []
            continue
        elif kind == "," or (kind == ";" and in_group):
            _add_mailbox(segment, mailboxes)
            segment = []
            in_group = in_group and kind == ","
            continue
        segment.append(token)
        if len(mailboxes) > MAX_ADDRESSES:
            raise AddressProblem(f"more than {MAX_ADDRESSES} addresses")
    if in_angle:
        raise AddressProblem("'<' is not closed")
    if in_group:
        raise AddressProblem("a group is not closed with ';'")
    _add_mailbox(segment, mailboxes)
    return tuple(mailboxes)


def _add_mailbox(segment: list[_Token], out: list[Mailbox]) -> None:
    """One mailbox (name-addr or addr-spec); an empty list element is allowed (obs-mbox-list)."""
    if not segment:
        return
    kinds = [t[0] for t in segment]
    if "<" in kinds:
        start = kinds.index("<")
        stop = kinds.index(">")
        if stop != len(segment) - 1:
            raise AddressProblem("text after '>'")
        if not all(k in ("atom", "quoted", ".") for k in kinds[:start]):
            raise AddressProblem("the display name is not a phrase")
        inner = segment[start + 1 : stop]
        out.append(_addr_spec(_without_route(inner)))
        return
    out.append(_addr_spec(segment))


def _without_route(inner: list[_Token]) -> list[_Token]:
    """Drop an obs-route (``@a.example,@b.example:``) in front of the addr-spec."""
    kinds = [t[0] for t in inner]
    if kinds and kinds[0] == "@" and ":" in kinds:
        return inner[kinds.index(":") + 1 :]
    return inner


def _is_address_literal(content: str) -> bool:
    """``1.2.3.4`` or ``IPv6:...``, the address literals mail uses (RFC 5321 4.1.3)."""
    text = content.strip(" \t")
    try:
        if text[:5].lower() == "ipv6:":
            ipaddress.IPv6Address(text[5:])
        else:
            ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _addr_spec(tokens: list[_Token]) -> Mailbox:
    kinds = [t[0] for t in tokens]
    if kinds.count("@") != 1:
        raise AddressProblem("an address must have exactly one '@'" if kinds else "an empty address")
    at = kinds.index("@")
    local_tokens, domain_tokens = tokens[:at], tokens[at + 1 :]
    if not local_tokens or not all(k in ("atom", "quoted", ".") for k in kinds[:at]):
        raise AddressProblem("the local part is not words and dots")
    if any(a != "." and b != "." for a, b in itertools.pairwise(kinds[:at])):
        raise AddressProblem("two words in the local part with no dot between them")
    local = "".join(t[1] for t in local_tokens)
    if _ENCODED_WORD.search(local):
        # RFC 2047 section 5: an encoded-word MUST NOT appear in an addr-spec. A client that
        # decodes it anyway shows another address (Postfix turns a bare encoded "address" into
        # "=?utf-8?q?alice=40bank.example?=@our.host"), so nobody can tell which one a reader sees.
        raise AddressProblem("an encoded-word inside the address")
    return Mailbox(local, _domain(domain_tokens))


def _domain(tokens: list[_Token]) -> str:
    if len(tokens) == 1 and tokens[0][0] == "literal":
        if not _is_address_literal(tokens[0][1][1:-1]):
            # "alice@[bank.example]": a client shows bank.example, no rule would cover "[bank.example]"
            raise AddressProblem("a domain literal that is not an IP address (RFC 5321 4.1.3)")
        return tokens[0][1]
    kinds = [t[0] for t in tokens]
    if not all(k == ("atom" if i % 2 == 0 else ".") for i, k in enumerate(kinds)):
        raise AddressProblem("the domain is not dot-separated labels")
    text = "".join(t[1] for t in tokens)
    text = text.removesuffix(".")
    labels = text.split(".")
    if not text or not all(_LABEL.fullmatch(label) for label in labels):
        raise AddressProblem(f"{text[:64]!r} is not a domain name")
    return text.lower()
