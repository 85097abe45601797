"""Whether d= speaks for the visible From domain (the DMARC notion of alignment).

A DKIM pass for ``d=unrelated.example`` says nothing about the From address a
reader sees; alignment is what ties the two together (RFC 7489 3.1.1).
Organizational domains come from the Public Suffix List package's bundled
copy, read once, with no network access.
"""

from __future__ import annotations

import re
from email.utils import getaddresses
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from mailseal.core.message import HeaderField
from mailseal.core.results import Alignment

# `Name <local@domain>` or `local@domain` with a plain display name and no comments.
# Anchored, applied to the stripped value, and the optional display name must start with
# a non-space character: no overlapping quantifiers, so matching is linear.
_SIMPLE_FROM = re.compile(r"(?:[\w.-][\w .-]*<)?[\w.+-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)\.?>?\Z")


MAX_FROM = 4096


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


@lru_cache(maxsize=8192)
def organizational_domain(domain: str) -> str:
    """The registrable domain (public suffix plus one label); the name itself if unknown."""
    domain = domain.lower().removesuffix(".")
    try:
        org = _psl().privatesuffix(domain)
    except (ValueError, UnicodeError):
        return domain
    return org if isinstance(org, str) and org else domain


def from_domain(headers: tuple[HeaderField, ...]) -> str | None:
    """The domain of the single From address; None when there is not exactly one."""
    froms = [f for f in headers if f.key == "from"]
    if len(froms) != 1:
        return None
    if len(froms[0].raw) > MAX_FROM:
        return None  # no real From field is this long; do not spend parser time on it
    value = froms[0].value.replace(b"\r\n", b"").decode("utf-8", "replace")
    simple = _SIMPLE_FROM.match(value.strip())
    if simple:  # the common shapes, without the cost of the full RFC 5322 parser
        return simple.group(1).lower().removesuffix(".")
    addresses = [addr for _, addr in getaddresses([value]) if addr]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    domain = addresses[0].rpartition("@")[2].strip().lower().removesuffix(".")
    return domain or None


# `@domain` tokens, for From fields too long (or too odd) to parse properly.
_AT_DOMAIN = re.compile(rb"@\s*([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)")
MAX_FROM_DOMAINS = 64


def from_domains(headers: tuple[HeaderField, ...]) -> frozenset[str]:
    """Every domain named by any From field, bounded: for policy checks when there is no single From.

    Fields up to ``MAX_FROM`` bytes go through the address parser; longer ones
    (and anything the parser misses) are scanned for ``@domain`` tokens, only
    in their first ``MAX_FROM * 4`` bytes. At most ``MAX_FROM_DOMAINS`` names.
    """
    found: set[str] = set()
    for header in headers:
        if header.key != "from":
            continue
        value = header.value[: MAX_FROM * 4].replace(b"\r\n", b"")
        if len(header.raw) <= MAX_FROM:
            text = value.decode("utf-8", "replace")
            for _, addr in getaddresses([text]):
                if "@" in addr:
                    domain = addr.rpartition("@")[2].strip().lower().removesuffix(".")
                    if domain:
                        found.add(domain)
        for match in _AT_DOMAIN.finditer(value):
            found.add(match.group(1).decode("ascii").lower().removesuffix("."))
        if len(found) >= MAX_FROM_DOMAINS:
            break
    return frozenset(sorted(found)[:MAX_FROM_DOMAINS])


def alignment(signing_domain: str, author_domain: str | None) -> Alignment:
    """Exact, organizational (same registrable domain) or none."""
    if author_domain is None:
        return Alignment.UNKNOWN
    signing_domain = signing_domain.lower()
    if signing_domain == author_domain:
        return Alignment.EXACT
    if organizational_domain(signing_domain) == organizational_domain(author_domain):
        return Alignment.ORGANIZATIONAL
    return Alignment.NONE
