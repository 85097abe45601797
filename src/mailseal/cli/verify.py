"""``mailseal verify``: check messages and explain each signature in plain words."""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

from mailseal.api import render_authentication_results, verify_sync
from mailseal.cli.io import read_message
from mailseal.cli.render import explain, to_json
from mailseal.core.results import VerificationReport
from mailseal.dns.interface import SyncKeyResolver
from mailseal.errors import UsageError

EXIT_FAIL = 1
EXIT_TEMPFAIL = 75


def register(commands: Any) -> None:
    """Add the ``verify`` subcommand."""
    p = commands.add_parser("verify", help="verify messages (files or stdin)")
    p.add_argument("files", nargs="*", help="message files (default: standard input)")
    p.add_argument("--dns-zone", metavar="ZONEFILE", help="answer key lookups from this zone file (offline)")
    p.add_argument(
        "--zone-origin", metavar="DOMAIN", help="origin for a zone file that has no $ORIGIN or SOA"
    )
    p.add_argument(
        "--nameserver", metavar="IP[:PORT]", action="append", help="DNS server to ask (repeatable)"
    )
    p.add_argument("--timeout", type=float, default=5.0, help="DNS timeout in seconds (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object per message")
    p.add_argument(
        "--authserv-id", default=None, help="authserv-id for Authentication-Results (default: host name)"
    )
    p.add_argument(
        "--allow-rsa-sha1", action="store_true", help="legacy: count rsa-sha1 as pass (RFC 8301 forbids)"
    )
    p.add_argument(
        "--max-signatures", type=int, default=8, help="signatures evaluated per message (default 8)"
    )
    p.add_argument("--now", type=int, help="verify as of this Unix time (for old messages and tests)")
    p.set_defaults(handler=run)


def _resolver(args: argparse.Namespace) -> SyncKeyResolver:
    if args.dns_zone:
        from mailseal.dns.zonefile import ZoneFileResolver

        return ZoneFileResolver(args.dns_zone, origin=args.zone_origin)
    from mailseal.dns.cache import CachingResolver
    from mailseal.dns.resolver import DnsResolver

    return CachingResolver(DnsResolver(nameservers=args.nameserver, timeout=args.timeout))


def run(args: argparse.Namespace) -> int:
    """Verify each message; exit 0 all pass, 75 only temporary errors, else 1."""
    if args.max_signatures < 1:
        raise UsageError("--max-signatures must be at least 1")
    resolver = _resolver(args)
    authserv_id = args.authserv_id or socket.getfqdn()
    names: list[str | None] = list(args.files) or [None]
    worst = 0
    for name in names:
        report = verify_sync(
            read_message(name),
            resolver=resolver,
            allow_rsa_sha1=args.allow_rsa_sha1,
            max_signatures=args.max_signatures,
            now=args.now,
        )
        authres = render_authentication_results(authserv_id, report)
        label = name or "<stdin>"
        if args.json:
            print(json.dumps(to_json(label, report, authres), sort_keys=False))
        else:
            print(explain(label, report, authres))
        worst = max(worst, _status(report), key=_severity)
    sys.stdout.flush()
    return worst


def _status(report: VerificationReport) -> int:
    if report.passed:
        return 0
    if report.only_temporary_errors:
        return EXIT_TEMPFAIL
    return EXIT_FAIL


def _severity(status: int) -> int:
    return {0: 0, EXIT_TEMPFAIL: 1, EXIT_FAIL: 2}[status]
