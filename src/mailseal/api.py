"""The library surface: short drivers that join the sans-IO core to DNS and the clock.

``sign`` and ``verify`` never raise for the content of a message or of a DNS
answer; they raise :class:`~mailseal.errors.UsageError` for options that
cannot work. Any other exception is a bug.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable, Sequence

from mailseal.core.algorithms import ALGORITHMS, Algorithm
from mailseal.core.authres import authentication_results
from mailseal.core.canonicalization import Canon
from mailseal.core.keymaterial import PrivateKey, load_private_key
from mailseal.core.message import parse_header_block, to_crlf
from mailseal.core.options import SignOptions, VerifyOptions
from mailseal.core.results import VerificationReport
from mailseal.core.signer import Signing, SigningRequest
from mailseal.core.txtanswer import TxtAnswer
from mailseal.core.verifier import Verification
from mailseal.dns.interface import KeyResolver, SyncKeyResolver
from mailseal.errors import UsageError

__all__ = ["load_private_key", "sign", "sign_many", "verify", "verify_sync"]


def sign(
    message: bytes,
    *,
    key: PrivateKey,
    domain: str,
    selector: str,
    algorithm: str | None = None,
    canonicalization: str = "relaxed/relaxed",
    headers: Sequence[str] | None = None,
    oversign: Sequence[str] = ("from",),
    body_length: bool = False,
    identity: str | None = None,
    expire_after: int | None = None,
    now: int | None = None,
) -> bytes:
    """Return the DKIM-Signature header field (ending in CRLF) to prepend to ``message``.

    The message itself is not modified. LF-only input (a Unix file) is read as
    CRLF; to keep such a file consistent, prepend the field with its CRLFs turned
    into LFs, as ``mailseal sign`` does.
    """
    request = signing_request(
        key=key,
        domain=domain,
        selector=selector,
        algorithm=algorithm,
        canonicalization=canonicalization,
        headers=headers,
        oversign=oversign,
        body_length=body_length,
        identity=identity,
        expire_after=expire_after,
    )
    return sign_many(message, [request], now=now)


def sign_many(message: bytes, requests: Sequence[SigningRequest], *, now: int | None = None) -> bytes:
    """Sign once per request in one pass (e.g. RSA and Ed25519); the fields joined, first on top."""
    data = to_crlf(message)
    headers, offset = parse_header_block(data)
    signing = Signing(headers, requests, now=int(time.time()) if now is None else now)
    signing.feed_body(data, offset)  # the body is not copied out of the message
    return b"".join(signing.finish())


def signing_request(
    *,
    key: PrivateKey,
    domain: str,
    selector: str,
    algorithm: str | None = None,
    canonicalization: str = "relaxed/relaxed",
    headers: Sequence[str] | None = None,
    oversign: Sequence[str] = ("from",),
    body_length: bool = False,
    identity: str | None = None,
    expire_after: int | None = None,
) -> SigningRequest:
    """Build and check one :class:`SigningRequest` from plain arguments."""
    if not isinstance(key, PrivateKey):
        raise UsageError("key must come from mailseal.load_private_key()")
    return SigningRequest(
        key=key,
        domain=domain,
        selector=selector,
        algorithm=_algorithm(algorithm),
        options=SignOptions(
            *parse_canonicalization(canonicalization),
            headers=tuple(headers) if headers is not None else None,
            oversign=tuple(oversign),
            body_length=body_length,
            auid=identity,
            expire_after=expire_after,
        ),
    )


def parse_canonicalization(value: str) -> tuple[Canon, Canon]:
    """``relaxed/simple`` -> (header, body); a single word applies to the header only."""
    header, _, body = value.lower().partition("/")
    try:
        return Canon(header), Canon(body or "simple")
    except ValueError:
        raise UsageError(
            f"unknown canonicalization {value!r}: use simple or relaxed, e.g. relaxed/relaxed"
        ) from None


def _algorithm(name: str | None) -> Algorithm | None:
    if name is None:
        return None
    algorithm = ALGORITHMS.get(name.lower())
    if algorithm is None:
        raise UsageError(f"unknown algorithm {name!r}: use rsa-sha256 or ed25519-sha256")
    return algorithm


_DEFAULT_VERIFY_OPTIONS = VerifyOptions()


def _verify_options(
    options: VerifyOptions | None, *, allow_rsa_sha1: bool | None, max_signatures: int | None
) -> VerifyOptions:
    base = options or _DEFAULT_VERIFY_OPTIONS
    if allow_rsa_sha1 is not None or max_signatures is not None:
        base = dataclasses.replace(
            base,
            max_signatures=base.max_signatures if max_signatures is None else max_signatures,
            allow_rsa_sha1=base.allow_rsa_sha1 if allow_rsa_sha1 is None else allow_rsa_sha1,
        )
    if base.max_signatures < 1:
        raise UsageError("max_signatures must be at least 1")
    if base.max_verify_work < 1:
        raise UsageError("max_verify_work must be at least 1")
    if base.max_rsa_bits < base.min_rsa_bits:
        raise UsageError("max_rsa_bits cannot be below min_rsa_bits")
    if base.clock_skew < 0:
        raise UsageError("clock_skew cannot be negative")
    return base


def _default_resolver() -> KeyResolver | SyncKeyResolver:
    from mailseal.dns.cache import CachingResolver
    from mailseal.dns.resolver import DnsResolver

    return CachingResolver(DnsResolver())


_shared_resolver: list[KeyResolver | SyncKeyResolver] = []


def _resolver() -> KeyResolver | SyncKeyResolver:
    """One process-wide caching resolver for callers that pass none."""
    if not _shared_resolver:
        _shared_resolver.append(_default_resolver())
    return _shared_resolver[0]


def _start(message: bytes, options: VerifyOptions, now: int | None) -> tuple[Verification, bytes, int]:
    data = to_crlf(message)
    headers, offset = parse_header_block(data)
    verification = Verification(headers, options, now=int(time.time()) if now is None else now)
    return verification, data, offset


def _finish(verification: Verification, data: bytes, offset: int) -> VerificationReport:
    verification.feed_body(data, offset)  # already in memory: one pass, the body not copied
    return verification.finish(data, offset)  # a failure's diagnosis may look at the whole body again


async def verify(
    message: bytes,
    *,
    resolver: KeyResolver | None = None,
    options: VerifyOptions | None = None,
    allow_rsa_sha1: bool | None = None,
    max_signatures: int | None = None,
    now: int | None = None,
) -> VerificationReport:
    """Verify every DKIM-Signature of ``message``; key lookups run concurrently."""
    verification, data, offset = _start(
        message, _verify_options(options, allow_rsa_sha1=allow_rsa_sha1, max_signatures=max_signatures), now
    )
    chosen = resolver if resolver is not None else _resolver()
    if not hasattr(chosen, "lookup_txt"):
        raise UsageError("verify() needs a resolver with an async lookup_txt(); use verify_sync() otherwise")
    names = verification.key_queries()
    answers: Iterable[TxtAnswer] = await asyncio.gather(*(chosen.lookup_txt(n) for n in names))
    for name, answer in zip(names, answers, strict=True):
        verification.add_key_answer(name, answer)
    return _finish(verification, data, offset)


def verify_sync(
    message: bytes,
    *,
    resolver: SyncKeyResolver | None = None,
    options: VerifyOptions | None = None,
    allow_rsa_sha1: bool | None = None,
    max_signatures: int | None = None,
    now: int | None = None,
) -> VerificationReport:
    """Blocking :func:`verify`, for scripts and code without an event loop."""
    verification, data, offset = _start(
        message, _verify_options(options, allow_rsa_sha1=allow_rsa_sha1, max_signatures=max_signatures), now
    )
    chosen = resolver if resolver is not None else _resolver()
    if not hasattr(chosen, "lookup_txt_sync"):
        raise UsageError("verify_sync() needs a resolver with lookup_txt_sync()")
    for name in verification.key_queries():
        verification.add_key_answer(name, chosen.lookup_txt_sync(name))
    return _finish(verification, data, offset)


def render_authentication_results(authserv_id: str, report: VerificationReport) -> str:
    """The Authentication-Results value for ``report`` (RFC 8601)."""
    return authentication_results(authserv_id, report)
