"""Whether d= speaks for the visible From domain (the DMARC notion of alignment).

A DKIM pass for ``d=unrelated.example`` says nothing about the From address a
reader sees; alignment is what ties the two together (RFC 7489 3.1.1).
Names are compared as lower-case A-labels (:func:`canonical_domain`), so the
spelling of an internationalized name (U-labels or A-labels) does not matter.
Organizational domains come from the Public Suffix List package's bundled
copy, read once, with no network access.
"""

from __future__ import annotations

from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from mailseal.core.address import author
from mailseal.core.identity import canonical_domain
from mailseal.core.message import HeaderField
from mailseal.core.results import Alignment


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
    """The domain of the single From address; None when there is not exactly one readable one."""
    return author(headers).domain


def alignment(signing_domain: str, author_domain: str | None) -> Alignment:
    """Exact, organizational (same registrable domain) or none; unknown when it cannot be decided.

    Both names are compared in one canonical form (lower-case A-labels, no
    trailing dot), so a From domain in U-labels aligns with a d= in A-labels.
    A name without that form is unknown, never aligned: comparing it as
    written could claim more than DNS would (see :mod:`mailseal.core.identity`).
    """
    if author_domain is None:
        return Alignment.UNKNOWN
    signing = canonical_domain(signing_domain)
    author = canonical_domain(author_domain)
    if signing is None or author is None:
        return Alignment.UNKNOWN
    if signing == author:
        return Alignment.EXACT
    if organizational_domain(signing) == organizational_domain(author):
        return Alignment.ORGANIZATIONAL
    return Alignment.NONE
