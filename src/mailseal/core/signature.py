"""The DKIM-Signature header field (RFC 6376 section 3.5) as a value type.

``DKIMSignature.from_header()`` parses strictly and raises ``SyntaxProblem``
with a precise reason. Writing a field is the signer's job
(``mailseal.core.signer.format_unsigned_field`` folds it with b= last).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from mailseal.core.algorithms import ALGORITHMS, Algorithm
from mailseal.core.canonicalization import Canon
from mailseal.core.identity import MAX_NAME, is_dns_name, is_domain_name, is_selector, is_within
from mailseal.core.problems import SyntaxProblem
from mailseal.core.quotedprintable import decode_dkim_qp
from mailseal.core.results import Reason
from mailseal.core.taglist import parse_tag_list, strip_fws

REQUIRED_TAGS = ("v", "a", "b", "bh", "d", "h", "s")
_REQUIRED = frozenset(REQUIRED_TAGS)


@dataclass(frozen=True, slots=True)
class DKIMSignature:
    """The parsed tags of one DKIM-Signature; names are the RFC's in words."""

    algorithm: Algorithm
    signature: bytes
    body_hash: bytes
    header_canon: Canon
    body_canon: Canon
    domain: str
    selector: str
    signed_headers: tuple[str, ...]
    auid: str
    body_length: int | None
    timestamp: int | None
    expiration: int | None
    signature_b64: str
    copied_headers: str | None = None

    @property
    def key_query_name(self) -> str:
        """Where the public key lives: ``selector._domainkey.domain`` (3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def canonicalization(self) -> str:
        """The c= value in its full form, e.g. ``relaxed/simple``."""
        return f"{self.header_canon}/{self.body_canon}"

    @classmethod
    def from_header(cls, value: bytes) -> DKIMSignature:
        """Parse the value of a DKIM-Signature field (the bytes after the colon)."""
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise SyntaxProblem(
                Reason.SIG_SYNTAX, "the signature contains bytes that are not UTF-8"
            ) from None
        return cls.from_tags(parse_tag_list(text))

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> DKIMSignature:
        """Check every tag RFC 6376 section 3.5 defines; unknown tags are ignored."""
        if not tags.keys() >= _REQUIRED:
            missing = [t for t in REQUIRED_TAGS if t not in tags]
            raise SyntaxProblem(Reason.SIG_MISSING_TAG, f"required tag(s) {', '.join(missing)} missing")
        if tags["v"] != "1":
            raise SyntaxProblem(Reason.SIG_VERSION, f"unsupported signature version v={tags['v']}")
        algorithm = ALGORITHMS.get(tags["a"].lower())
        if algorithm is None:
            raise SyntaxProblem(Reason.SIG_ALGORITHM_UNKNOWN, f"unknown signing algorithm a={tags['a']}")
        signature_b64 = strip_fws(tags["b"])
        signature = _b64(signature_b64, "b")
        if not signature:
            raise SyntaxProblem(Reason.SIG_BAD_BASE64, "b= is empty")
        body_hash = _b64(strip_fws(tags["bh"]), "bh")
        header_canon, body_canon = _canonicalization(tags.get("c", "simple/simple"))
        domain = tags["d"]
        selector = tags["s"]
        problem = _key_name_problem(domain, selector)
        if problem is not None:
            raise SyntaxProblem(*problem)  # a new exception each time: a cached one would grow its traceback
        h_value = tags["h"]
        if " " in h_value or "\t" in h_value or "\r" in h_value or "\n" in h_value:
            signed = tuple(h.strip(" \t\r\n") for h in h_value.split(":"))
        else:  # the usual, unspaced list: no per-name strip
            signed = tuple(h_value.split(":"))
        if "" in signed:
            raise SyntaxProblem(Reason.SIG_SYNTAX, "h= contains an empty header name")
        if "from" not in signed and "from" not in ":".join(signed).lower().split(":"):  # one lower()
            raise SyntaxProblem(Reason.SIG_FROM_NOT_SIGNED, "h= does not include From (RFC 6376 5.4)")
        auid = _auid(tags.get("i"), domain)
        if "q" in tags:
            methods = [m.strip(" \t\r\n").lower() for m in tags["q"].split(":")]
            if "dns/txt" not in methods and "dns" not in methods:
                raise SyntaxProblem(
                    Reason.SIG_QUERY_METHOD_UNKNOWN, f"no supported query method in q={tags['q']}"
                )
        body_length = _number(tags, "l", Reason.SIG_BAD_BODY_LENGTH)
        timestamp = _number(tags, "t", Reason.SIG_BAD_TIMESTAMP)
        expiration = _number(tags, "x", Reason.SIG_BAD_TIMESTAMP)
        if timestamp is not None and expiration is not None and expiration <= timestamp:
            raise SyntaxProblem(
                Reason.SIG_EXPIRY_BEFORE_TIMESTAMP,
                f"x={expiration} is not after t={timestamp} (RFC 6376 3.5)",
            )
        return cls(
            algorithm=algorithm,
            signature=signature,
            body_hash=body_hash,
            header_canon=header_canon,
            body_canon=body_canon,
            domain=domain.lower().removesuffix("."),
            selector=selector,
            signed_headers=signed,
            auid=auid,
            body_length=body_length,
            timestamp=timestamp,
            expiration=expiration,
            signature_b64=signature_b64,
            copied_headers=tags.get("z"),
        )


def without_b_value_py(raw_value: bytes) -> bytes:
    """The field value with b='s value removed, everything else byte-exact (3.7).

    Same result as substituting ``(^|;)FWS b FWS = [^;]*`` once, at a third of
    the cost. The reference for the C twin :func:`without_b_value` uses when built.
    """
    parts = raw_value.split(b";")
    for i, part in enumerate(parts):
        name, eq, _ = part.partition(b"=")
        if eq and name.strip(b" \t\r\n") == b"b":
            parts[i] = name + b"="
            return b";".join(parts)
    return raw_value


without_b_value: Callable[[bytes], bytes]
try:  # the C twin (one pass, no list of pieces), built when a compiler was present
    from mailseal.core import _canon
except ImportError:  # pragma: no cover - installs without a C compiler
    without_b_value = without_b_value_py
else:
    without_b_value = _canon.without_b_value


def _key_name_problem(domain: str, selector: str) -> tuple[Reason, str] | None:
    """What is wrong with d= and s= (None: nothing); memoized for name-sized values only."""
    if len(domain) + len(selector) <= 2 * MAX_NAME:
        return _key_name_problem_cached(domain, selector)
    return _key_name_problem_of(domain, selector)  # hostile sizes never fill the cache


@lru_cache(maxsize=4096)
def _key_name_problem_cached(domain: str, selector: str) -> tuple[Reason, str] | None:
    """Memoized: the same signers (d=, s=) recur all day."""
    return _key_name_problem_of(domain, selector)


def _key_name_problem_of(domain: str, selector: str) -> tuple[Reason, str] | None:
    if not is_domain_name(domain):
        return Reason.SIG_BAD_DOMAIN, f"d={domain} is not a valid domain name"
    if not is_selector(selector):
        return Reason.SIG_BAD_SELECTOR, f"s={selector} is not a valid selector"
    if not is_dns_name(f"{selector}._domainkey.{domain}"):
        return (
            Reason.SIG_BAD_SELECTOR,
            f"{selector}._domainkey.{domain} cannot exist in DNS (too long or not IDNA)",
        )
    return None


def _b64(value: str, tag: str) -> bytes:
    try:  # strict: only the base64 alphabet, correct padding, nothing after it
        return binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SyntaxProblem(Reason.SIG_BAD_BASE64, f"{tag}= is not valid base64") from None


_CANONS = {canon.value: canon for canon in Canon}  # a dict lookup; Canon(...) runs Python code


def _canonicalization(value: str) -> tuple[Canon, Canon]:
    header, _, body = value.lower().partition("/")
    header_canon = _CANONS.get(header)
    body_canon = _CANONS.get(body or "simple")
    if header_canon is None or body_canon is None:
        raise SyntaxProblem(Reason.SIG_CANONICALIZATION_UNKNOWN, f"unknown canonicalization c={value}")
    return header_canon, body_canon


def _auid(value: str | None, domain: str) -> str:
    if value is None:
        return "@" + domain.lower()
    auid = decode_dkim_qp(value)
    if "@" not in auid:
        raise SyntaxProblem(Reason.SIG_SYNTAX, f"i={value} has no '@'")
    local, _, auid_domain = auid.rpartition("@")
    if not all(ch.isprintable() and not ch.isspace() for ch in local) or not is_domain_name(auid_domain):
        # Decoded =0D=0A and friends must never reach Authentication-Results or a terminal.
        raise SyntaxProblem(Reason.SIG_SYNTAX, "i= holds characters an address cannot contain")
    if not is_within(auid_domain, domain):
        raise SyntaxProblem(
            Reason.SIG_AUID_NOT_IN_DOMAIN, f"i={auid} is not within d={domain} (RFC 6376 3.5)"
        )
    return auid


def _number(tags: dict[str, str], name: str, reason: Reason) -> int | None:
    value = tags.get(name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 76):  # [0-9]{1,76}, without a regex
        raise SyntaxProblem(reason, f"{name}={value} is not a decimal number")
    return int(value)
