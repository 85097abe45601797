"""``mailseal sign``: prepend one DKIM-Signature per --key to a message."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mailseal.api import sign_many, signing_request
from mailseal.cli.io import read_message
from mailseal.core.message import is_lf_only
from mailseal.errors import UsageError
from mailseal.keys.files import read_private_key


def register(commands: Any) -> None:
    """Add the ``sign`` subcommand."""
    p = commands.add_parser("sign", help="sign a message (file or stdin) and write it to stdout")
    p.add_argument("file", nargs="?", help="message file (default: standard input)")
    p.add_argument(
        "--key", action="append", required=True, help="private key file (repeat for several signatures)"
    )
    p.add_argument(
        "--domain", action="append", required=True, help="signing domain d= (once, or once per --key)"
    )
    p.add_argument("--selector", action="append", required=True, help="selector s= (once per --key)")
    p.add_argument(
        "--algorithm",
        action="append",
        choices=["rsa-sha256", "ed25519-sha256"],
        help="a= (default: from the key type; once, or once per --key)",
    )
    p.add_argument(
        "--canonicalization", default="relaxed/relaxed", help="HEADER/BODY (default relaxed/relaxed)"
    )
    p.add_argument("--headers", help="colon-separated header names to sign (default: the recommended set)")
    p.add_argument("--oversign", default="from", help="colon-separated names to oversign (default from)")
    p.add_argument("--body-length", action="store_true", help="add l= (lets others append to the body)")
    p.add_argument("--identity", help="AUID for i=, e.g. alice@example.com")
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
    message = read_message(args.file)
    fields = sign_many(message, requests, now=args.timestamp)
    if is_lf_only(message):
        fields = fields.replace(b"\r\n", b"\n")  # keep a Unix file consistently LF
    out = sys.stdout.buffer
    out.write(fields)
    out.write(message)
    out.flush()
    return 0
