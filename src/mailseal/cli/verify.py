"""``mailseal verify``: check messages and explain each signature in plain words.

Every message is read in chunks (memory stays flat in message size) and all
key lookups, of one message and of every file given, run concurrently: a dead
nameserver costs one timeout, not one per signature. Reports are printed in
the order the files were given, each file on its own, even after one that
cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from mailseal.cli import exits
from mailseal.cli.messagefile import MessageFileError, open_message, read_message
from mailseal.errors import UsageError

if TYPE_CHECKING:
    from mailseal.core.options import VerifyOptions
    from mailseal.core.results import VerificationReport
    from mailseal.dns.interface import KeyResolver

OPEN_AT_ONCE = 16  # files read and looked up concurrently; bounds open files and memory


def register(commands: Any) -> None:
    """Add the ``verify`` subcommand."""
    p = commands.add_parser("verify", help="verify messages (files or stdin)")
    p.add_argument("files", nargs="*", metavar="FILE", help="message files (default: standard input)")
    p.add_argument("--dns-zone", metavar="ZONEFILE", help="answer key lookups from this zone file (offline)")
    p.add_argument(
        "--zone-origin", metavar="DOMAIN", help="origin for a zone file that has no $ORIGIN or SOA"
    )
    p.add_argument(
        "--nameserver", metavar="IP[:PORT]", action="append", help="DNS server to ask (repeatable)"
    )
    p.add_argument(
        "--timeout", type=float, default=5.0, metavar="SECONDS", help="DNS timeout in seconds (default 5)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per message")
    p.add_argument(
        "--authserv-id",
        metavar="ID",
        default=None,
        help="authserv-id for Authentication-Results (default: host name)",
    )
    p.add_argument(
        "--allow-rsa-sha1", action="store_true", help="legacy: count rsa-sha1 as pass (RFC 8301 forbids)"
    )
    p.add_argument(
        "--max-signatures",
        type=int,
        default=8,
        metavar="N",
        help="signatures evaluated per message (default 8)",
    )
    p.add_argument(
        "--now", type=int, metavar="UNIXTIME", help="verify as of this Unix time (for old messages and tests)"
    )
    p.set_defaults(handler=run)


def _resolver(args: argparse.Namespace) -> KeyResolver:
    if args.dns_zone:
        from mailseal.dns.zonefile import ZoneFileResolver

        return ZoneFileResolver(args.dns_zone, origin=args.zone_origin)
    from mailseal.dns import skip_unused_transports
    from mailseal.dns.cache import CachingResolver

    skip_unused_transports()  # before dnspython's resolver is imported
    from mailseal.dns.resolver import DnsResolver

    return CachingResolver(DnsResolver(nameservers=args.nameserver, timeout=args.timeout))


def run(args: argparse.Namespace) -> int:
    """Verify each message; exit by the worst (see :mod:`mailseal.cli.exits`)."""
    from mailseal.core.options import VerifyOptions

    if args.max_signatures < 1:
        raise UsageError("--max-signatures must be at least 1")
    if not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds")
    options = VerifyOptions(max_signatures=args.max_signatures, allow_rsa_sha1=args.allow_rsa_sha1)
    resolver = _resolver(args)
    authserv_id = args.authserv_id or socket.getfqdn()
    now = int(time.time()) if args.now is None else args.now
    names: list[str | None] = list(args.files) or [None]
    return asyncio.run(_verify_all(names, resolver, options, now, authserv_id, as_json=args.json))


async def _verify_all(
    names: list[str | None],
    resolver: KeyResolver,
    options: VerifyOptions,
    now: int,
    authserv_id: str,
    *,
    as_json: bool,
) -> int:
    from mailseal.cli.render import explain, to_json
    from mailseal.core.authres import authentication_results

    gate = asyncio.Semaphore(OPEN_AT_ONCE)
    tasks = [asyncio.ensure_future(_verify_one(name, gate, resolver, options, now)) for name in names]
    statuses: list[int] = []
    for name, task in zip(names, tasks, strict=True):
        label = name or "<stdin>"
        outcome = await task
        if isinstance(outcome, str):
            print(f"mailseal: {label}: {outcome}", file=sys.stderr)
            if as_json:
                print(json.dumps({"file": label, "result": "error", "error": outcome}))
            statuses.append(exits.INPUT)
            continue
        authres = authentication_results(authserv_id, outcome)
        if as_json:
            print(json.dumps(to_json(label, outcome, authres), sort_keys=False))
        else:
            print(explain(label, outcome, authres))
        statuses.append(_status(outcome))
    sys.stdout.flush()
    return exits.worst(statuses)


async def _verify_one(
    name: str | None, gate: asyncio.Semaphore, resolver: KeyResolver, options: VerifyOptions, now: int
) -> VerificationReport | str:
    """The report for one file, or a plain sentence saying why it could not be read."""
    from mailseal.core.verifier import Verification

    async with gate:
        try:
            stream = open_message(name)
        except MessageFileError as exc:
            return str(exc)
        try:
            reader = read_message(stream)
            verification = Verification(reader.headers, options, now=now)
            queries = verification.key_queries()
            answers = await asyncio.gather(*(resolver.lookup_txt(query) for query in queries))
            for query, answer in zip(queries, answers, strict=True):
                verification.add_key_answer(query, answer)
            for chunk in reader.body_chunks():
                verification.feed_body(chunk)
            return verification.finish()
        except MessageFileError as exc:
            return str(exc)
        finally:
            if name not in (None, "-"):
                stream.close()


def _status(report: VerificationReport) -> int:
    if report.passed:
        return exits.OK
    if report.only_temporary_errors:
        return exits.TRY_LATER
    return exits.NO
