"""Staged, I/O-free signing: headers in, body chunks in, DKIM-Signature fields out.

Several keys can sign in one pass (RSA and Ed25519 together, as RFC 8463
recommends); the body is canonicalized and hashed once per distinct setting.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from mailseal.core.algorithms import Algorithm, sign_digest
from mailseal.core.bodyhash import BodyHasher, BodyHashSpec
from mailseal.core.canonicalization import Canon, canonicalize_header, relaxed_header
from mailseal.core.identity import domain_of_auid, is_domain_name, is_selector, is_within
from mailseal.core.keymaterial import PrivateKey
from mailseal.core.message import HeaderField
from mailseal.core.options import RECOMMENDED_HEADERS, SignOptions
from mailseal.core.quotedprintable import encode_dkim_qp
from mailseal.core.selection import index_by_name, select
from mailseal.errors import UsageError

FOLD_AT = 76
_FIELD_NAME = re.compile(r"[!-9<-~]+\Z")  # RFC 5322 ftext without ';', which ends a tag
FIELD_NAME = b"DKIM-Signature"


@dataclass(frozen=True, slots=True)
class SigningRequest:
    """One signature to add: the key, d=, s=, and how to sign."""

    key: PrivateKey = field(repr=False)
    domain: str
    selector: str
    algorithm: Algorithm | None = None
    options: SignOptions = field(default_factory=SignOptions)

    def checked_algorithm(self) -> Algorithm:
        """The a= to use; refuses a mismatch with the key and rsa-sha1 (RFC 8301)."""
        algorithm = self.algorithm or self.key.default_algorithm
        if algorithm.key_type is not self.key.key_type:
            raise UsageError(f"{algorithm.name} cannot be used with a {self.key.key_type} key")
        if algorithm.legacy:
            raise UsageError("signing with rsa-sha1 is refused (RFC 8301); use rsa-sha256")
        return algorithm


class Signing:
    """Sign one message: create with its headers, feed the body, then ``finish()``."""

    def __init__(
        self, headers: Sequence[HeaderField], requests: Sequence[SigningRequest], *, now: int
    ) -> None:
        if not requests:
            raise UsageError("nothing to sign with: give at least one key")
        if not any(h.key == "from" for h in headers):
            raise UsageError("the message has no From header field; DKIM must sign From (RFC 6376 5.4)")
        self._headers = tuple(headers)
        self._now = now
        self._plans = [self._plan(r) for r in requests]
        self._body = BodyHasher(p.body_spec for p in self._plans)

    def _plan(self, request: SigningRequest) -> _Plan:
        algorithm = request.checked_algorithm()
        domain = _checked_domain_and_selector(request.domain, request.selector)
        options = request.options
        if options.auid is not None and (
            not options.auid.isprintable()
            or any(ch.isspace() for ch in options.auid)
            or "@" not in options.auid
            or not is_within(domain_of_auid(options.auid), domain)
        ):
            raise UsageError(f"identity {options.auid!r} must be an address at {domain} or a subdomain")
        if options.expire_after is not None and options.expire_after <= 0:
            raise UsageError("expiry must be a positive number of seconds")
        names = self._header_names(options)
        body_spec: BodyHashSpec = (options.body_canon, algorithm.hash_name, None)  # l= is the whole body
        return _Plan(request, algorithm, domain, names, body_spec)

    def _header_names(self, options: SignOptions) -> list[str]:
        chosen = options.headers if options.headers is not None else RECOMMENDED_HEADERS
        wanted, oversign = _wanted_names(tuple(chosen), tuple(options.oversign))
        counts: dict[str, int] = {}
        for h in self._headers:
            counts[h.key] = counts.get(h.key, 0) + 1
        names: list[str] = []
        for name in wanted:
            names.extend([name] * counts.get(name, 0))
            if name in oversign:
                names.append(name)
        return names

    def feed_body(self, chunk: bytes, start: int = 0) -> None:
        """Add the next body bytes, ``chunk[start:]`` (any chunking)."""
        self._body.feed(chunk, start)

    def finish(self) -> list[bytes]:
        """The DKIM-Signature fields, each ending in CRLF, in request order."""
        self._body.finish()
        index = index_by_name(self._headers)
        fields = []
        for plan in self._plans:
            options = plan.request.options
            body_hash = self._body.digest(plan.body_spec)
            tags = [
                ("v", "1"),
                ("a", plan.algorithm.name),
                ("c", f"{options.header_canon}/{options.body_canon}"),
                ("d", plan.domain),
                ("s", plan.request.selector),
            ]
            if options.auid is not None:
                tags.append(("i", encode_dkim_qp(options.auid)))
            if options.body_length:
                tags.append(("l", str(self._body.canonical_length(options.body_canon))))
            tags.append(("t", str(self._now)))
            if options.expire_after is not None:
                tags.append(("x", str(self._now + options.expire_after)))
            tags.append(("h", ":".join(plan.header_names)))
            tags.append(("bh", base64.b64encode(body_hash).decode("ascii")))
            unsigned = format_unsigned_field(tags)
            digest = plan.algorithm.new_hash()
            chosen, _ = select(plan.header_names, index)
            for position in chosen:
                digest.update(canonicalize_header(self._headers[position], options.header_canon))
            if options.header_canon is Canon.RELAXED:
                digest.update(relaxed_header(unsigned)[:-2])
            else:
                digest.update(unsigned)
            signature = sign_digest(plan.algorithm, plan.request.key.key, digest)
            fields.append(
                unsigned + fold_b64(base64.b64encode(signature), _last_line_length(unsigned)) + b"\r\n"
            )
        return fields


@lru_cache(maxsize=256)
def _checked_domain_and_selector(domain: str, selector: str) -> str:
    """d= in canonical form, or UsageError; memoized because a server signs with the same few keys."""
    canonical = domain.lower().removesuffix(".")
    if not is_domain_name(canonical):
        raise UsageError(f"{domain!r} is not a valid signing domain")
    if not is_selector(selector):
        raise UsageError(f"{selector!r} is not a valid selector")
    return canonical


@lru_cache(maxsize=256)
def _wanted_names(
    chosen: tuple[str, ...], oversign: tuple[str, ...]
) -> tuple[tuple[str, ...], frozenset[str]]:
    """The distinct lower-case names to sign in order (From always), and those to oversign.

    Checked and memoized per setting, not per message: the names come from the
    configuration, and checking them is most of the per-message cost otherwise.
    """
    for name in (*chosen, *oversign):
        if not _FIELD_NAME.match(name):
            raise UsageError(f"{name!r} is not a header field name (RFC 5322 ftext, no ':' or ';')")
    over = [h.lower() for h in oversign]
    wanted = dict.fromkeys(h.lower() for h in (*chosen, "from", *over))
    wanted.pop("dkim-signature", None)
    return tuple(wanted), frozenset(over)


@dataclass(frozen=True, slots=True)
class _Plan:
    request: SigningRequest
    algorithm: Algorithm
    domain: str
    header_names: list[str]
    body_spec: BodyHashSpec


def format_unsigned_field(tags: Sequence[tuple[str, str]]) -> bytes:
    """``DKIM-Signature: v=1; ...; b=`` folded before 76 columns; h= folds at colons."""
    lines: list[str] = []
    line = "DKIM-Signature:"
    for name, value in [*tags, ("b", "")]:
        piece = f"{name}={value}" + ("" if name == "b" else ";")
        if name == "h" and len(line) + 1 + len(piece) > FOLD_AT:
            lines.append(line)
            line = "\t"
            parts = piece.split(":")
            for i, part in enumerate(parts):
                text = part + (":" if i < len(parts) - 1 else "")
                if len(line) + len(text) > FOLD_AT and line.strip():
                    lines.append(line)
                    line = "\t"
                line += text
            continue
        if len(line) + 1 + len(piece) > FOLD_AT:
            lines.append(line)
            line = "\t" + piece
        else:
            line += " " + piece
    lines.append(line)
    return "\r\n".join(lines).encode("utf-8")


def _last_line_length(data: bytes) -> int:
    return len(data) - data.rfind(b"\n") - 1 + 7  # a tab counts as up to 8 columns


def fold_b64(value: bytes, column: int) -> bytes:
    """Fold a base64 value with CRLF TAB so no line passes ``FOLD_AT`` columns."""
    first = max(FOLD_AT - column, 8)
    pieces = [value[:first]]
    width = FOLD_AT - 8
    pieces.extend(value[i : i + width] for i in range(first, len(value), width))
    return b"\r\n\t".join(p for p in pieces if p)
