"""``mailseal sign``: prepend one DKIM-Signature per --key to a message.

The message is read twice in chunks, never held whole: once to hash the body
through the streaming signer, once to copy it after the new fields. Standard
input that cannot be re-read is spooled to a temporary file first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO

from mailseal.cli.messagefile import CHUNK_BYTES, MessageFileError, copy_stream, open_message, read_message
from mailseal.errors import UsageError

SPOOL_IN_MEMORY = 4 << 20  # standard input up to this size stays in memory; more goes to a temp file


def register(commands: Any) -> None:
    """Add the ``sign`` subcommand."""
    p = commands.add_parser("sign", help="sign a message (file or stdin) and write it to stdout")
    p.add_argument("file", nargs="?", metavar="FILE", help="message file (default: standard input)")
    p.add_argument(
        "--key",
        action="append",
        required=True,
        metavar="KEYFILE",
        help="private key file (repeat for several signatures)",
    )
    p.add_argument(
        "--domain",
        action="append",
        required=True,
        metavar="D",
        help="signing domain d= (once, or once per --key)",
    )
    p.add_argument(
        "--selector", action="append", required=True, metavar="S", help="selector s= (once per --key)"
    )
    p.add_argument(
        "--algorithm",
        action="append",
        choices=["rsa-sha256", "ed25519-sha256"],
        metavar="rsa-sha256|ed25519-sha256",
        help="a= (default: from the key type; once, or once per --key)",
    )
    p.add_argument(
        "--canonicalization",
        default="relaxed/relaxed",
        metavar="HEADER/BODY",
        help="HEADER/BODY (default relaxed/relaxed)",
    )
    p.add_argument(
        "--headers",
        metavar="a:b:c",
        help="colon-separated header names to sign (default: the recommended set)",
    )
    p.add_argument(
        "--oversign", default="from", metavar="a:b", help="colon-separated names to oversign (default from)"
    )
    p.add_argument("--body-length", action="store_true", help="add l= (lets others append to the body)")
    p.add_argument("--identity", metavar="AUID", help="AUID for i=, e.g. alice@example.com")
    p.add_argument("--expire", type=int, metavar="SECONDS", help="add x= this many seconds after t=")
    p.add_argument("--timestamp", type=int, help=argparse.SUPPRESS)
    p.add_argument("--allow-insecure-key", action="store_true", help="accept a key file others can read")
    p.set_defaults(handler=run)


def _per_key(values: list[str] | None, count: int, what: str) -> list[str | None]:
    if not values:
        return [None] * count
    if len(values) == 1:
        return [values[0]] * count
    if len(values) != count:
        raise UsageError(f"give --{what} once or once per --key ({count})")
    return list(values)


def run(args: argparse.Namespace) -> int:
    """Sign and write signature fields followed by the untouched message."""
    from mailseal.api import signing_request
    from mailseal.keys.files import read_private_key

    count = len(args.key)
    domains = _per_key(args.domain, count, "domain")
    selectors = _per_key(args.selector, count, "selector")
    algorithms = _per_key(args.algorithm, count, "algorithm")
    headers = [h for h in args.headers.split(":") if h] if args.headers else None
    oversign = [h for h in args.oversign.split(":") if h]
    requests = []
    for path, domain, selector, algorithm in zip(args.key, domains, selectors, algorithms, strict=True):
        assert domain is not None and selector is not None  # noqa: S101 - required options
        requests.append(
            signing_request(
                key=read_private_key(Path(path), allow_insecure=args.allow_insecure_key),
                domain=domain,
                selector=selector,
                algorithm=algorithm,
                canonicalization=args.canonicalization,
                headers=headers,
                oversign=oversign,
                body_length=args.body_length,
                identity=args.identity,
                expire_after=args.expire,
            )
        )
    label = args.file if args.file not in (None, "-") else "standard input"
    try:
        source = open_message(args.file)
        with _rereadable(source) as message:
            fields = _sign(message, requests, args.timestamp)
            out = sys.stdout.buffer
            out.write(fields)
            message.seek(0)
            copy_stream(message, out)
            out.flush()
    except MessageFileError as exc:
        raise UsageError(f"{label}: {exc}") from None
    return 0


def _sign(message: BinaryIO, requests: list[Any], timestamp: int | None) -> bytes:
    """The new fields, from one chunked pass over ``message``; LF-only files get LF fields."""
    from mailseal.core.signer import Signing

    reader = read_message(message)
    signing = Signing(reader.headers, requests, now=int(time.time()) if timestamp is None else timestamp)
    for chunk in reader.body_chunks():
        signing.feed_body(chunk)
    fields = b"".join(signing.finish())
    return fields.replace(b"\r\n", b"\n") if reader.lf_only else fields  # keep a Unix file LF


def _rereadable(source: BinaryIO) -> Any:
    """``source`` itself for a named file; standard input is spooled so it can be read twice."""
    if source is not sys.stdin.buffer:
        return source
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - closed by the with
    copy_stream(source, spool, chunk_bytes=CHUNK_BYTES)  # type: ignore[arg-type]
    spool.seek(0)
    return spool
