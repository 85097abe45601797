"""Domain names, selectors and AUIDs (RFC 6376 sections 3.1, 3.5): syntax checks.

    selector   = sub-domain *( "." sub-domain )
    sub-domain = Let-dig [Ldh-str]         ; RFC 5321
    domain-name = sub-domain 1*("." sub-domain)

U-labels (RFC 8616) are accepted and compared case-insensitively; underscores
are tolerated, as deployed DNS names use them.
"""

from __future__ import annotations

import functools
import re

MAX_NAME = 253  # RFC 1035 2.3.4, in presentation form without the final dot
MAX_LABEL = 63

_LABEL = r"(?:[A-Za-z0-9_\x80-\U0010ffff](?:[A-Za-z0-9_\x80-\U0010ffff-]{0,61}[A-Za-z0-9_\x80-\U0010ffff])?)"


@functools.cache
def _unicode_name() -> re.Pattern[str]:
    """Compiled on first use: the Unicode class costs ~12 ms to compile, and most names are ASCII."""
    return re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")


_ASCII_NAME = re.compile(
    r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\Z"
)


def is_domain_name(value: str, *, min_labels: int = 1) -> bool:
    """True for a syntactically valid name of at least ``min_labels`` labels."""
    value = value.removesuffix(".")
    if not value or len(value) > MAX_NAME or value.count(".") + 1 < min_labels:
        return False
    if value.isascii():
        return bool(_ASCII_NAME.match(value))
    return bool(_unicode_name().match(value))


def is_dns_name(name: str) -> bool:
    """True when ``name`` can be looked up: IDNA-encodable, labels of 1-63 octets, 253 in all."""
    try:
        encoded = name.encode("idna") if not name.isascii() else name.encode("ascii")
    except UnicodeError:
        return False
    labels = encoded.split(b".")
    return len(encoded) <= MAX_NAME and all(0 < len(label) <= MAX_LABEL for label in labels)


def is_selector(value: str) -> bool:
    """True for a valid selector (dot-separated labels)."""
    return is_domain_name(value)


def domain_of_auid(auid: str) -> str:
    """The domain part of an i= value (``[local-part] "@" domain``)."""
    return auid.rpartition("@")[2]


def is_within(domain: str, parent: str) -> bool:
    """True when ``domain`` equals ``parent`` or is a subdomain of it (case-insensitive).

    Internationalized names compare in A-labels (``bänk.example`` is
    ``xn--bnk-qla.example``, as DNS and mail clients see it), so a rule or a
    d= written in one form covers the other.
    """
    domain = _comparable(domain)
    parent = _comparable(parent)
    return domain == parent or domain.endswith("." + parent)


def _comparable(name: str) -> str:
    name = name.lower().removesuffix(".")
    if name.isascii():
        return name
    try:
        return name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return name  # not IDNA-encodable: compared as written
