"""Domain names, selectors and AUIDs (RFC 6376 sections 3.1, 3.5): syntax checks.

    selector   = sub-domain *( "." sub-domain )
    sub-domain = Let-dig [Ldh-str]         ; RFC 5321
    domain-name = sub-domain 1*("." sub-domain)

U-labels (RFC 8616) are accepted and compared case-insensitively; underscores
are tolerated, as deployed DNS names use them.

Names are compared in one canonical form, :func:`canonical_domain`: lower-case
A-labels (``bücher.example`` is ``xn--bcher-kva.example``, as DNS sees it).
The conversion is the standard library's IDNA codec, which implements IDNA2003
(RFC 3490, Unicode 3.2 nameprep), not IDNA2008 (RFC 5891) that registries
use today. The two agree on case folding and width mapping; they disagree on
four "deviation" characters that IDNA2003 maps away and IDNA2008 keeps (ß,
final sigma ς, ZERO WIDTH JOINER and NON-JOINER): ``straße.example`` is
``strasse.example`` to the codec but ``xn--strae-oqa.example`` to a registry.
A name holding one of them has no canonical form here, so it is never found
equal to another (fail closed: an alignment or a rule that cannot be decided
is not granted). The ``idna`` package would do IDNA2008 but is not a
dependency of mailseal.
"""

from __future__ import annotations

import encodings.idna
import encodings.punycode  # loaded now, not on first use (the milter drops privileges)
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
    canonical = canonical_domain(name)
    return canonical if canonical is not None else name.lower().removesuffix(".")  # compared as written


_DEVIATIONS = frozenset("\u00df\u03c2\u200c\u200d")
"""ß, ς, ZWNJ, ZWJ: IDNA2003 maps them away, IDNA2008 keeps them (RFC 5895 section 2, UTS #46 section 4.4)."""
_ACE_PREFIX = "xn--"


@functools.lru_cache(maxsize=4096)
def canonical_domain(name: str) -> str | None:
    """``name`` in lower-case A-labels without the root's trailing dot; None when it has none.

    None for: an empty label, a label over 63 octets or a name over 253 once
    encoded, a label the IDNA codec refuses, an ``xn--`` label that is not the
    exact encoding of a valid U-label (malformed Punycode, or an ASCII or
    upper-case disguise), and any deviation character (see the module's notes).
    """
    name = name.removesuffix(".")
    if not name or len(name) > MAX_NAME:  # a U-label is never longer than its A-label
        return None
    if name.isascii() and _ACE_PREFIX not in name.lower():
        name = name.lower()
        labels = name.split(".")
        return name if all(0 < len(label) <= MAX_LABEL for label in labels) else None
    out = []
    for label in name.split("."):
        a_label: str | None = label.lower() if label.isascii() else _a_label(label)
        if a_label is not None and a_label.startswith(_ACE_PREFIX) and label.isascii():
            a_label = _checked_a_label(a_label)
        if a_label is None or not 0 < len(a_label) <= MAX_LABEL:
            return None
        out.append(a_label)
    canonical = ".".join(out)
    return canonical if len(canonical) <= MAX_NAME else None


def _a_label(label: str) -> str | None:
    """The A-label of a U-label, or None (deviation character, or refused by the codec)."""
    if _DEVIATIONS.intersection(label):
        return None
    try:
        return encodings.idna.ToASCII(label).decode("ascii").lower()
    except UnicodeError:
        return None


def _checked_a_label(label: str) -> str | None:
    """``label`` when it is exactly what its own U-label encodes to, else None."""
    try:
        u_label = label[len(_ACE_PREFIX) :].encode("ascii").decode("punycode")
    except UnicodeError:
        return None
    if u_label.isascii():  # "xn--abc-" spells plain "abc": a disguise, not an A-label
        return None
    return label if _a_label(u_label) == label else None
