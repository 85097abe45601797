"""``mailseal reports``: ingest, summarise, fetch and show DMARC aggregate reports.

Exit status: 0 done, 1 failed (``ingest``: a report was quarantined), 2 usage,
75 try again later (``ingest``: the store or the quarantine cannot take the
report now, so the MTA keeps it queued and retries).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from mailseal.errors import MailsealError, UsageError
from mailseal.keys.backends import open_store as open_key_store
from mailseal.keys.backends import parse_location
from mailseal.keys.config import default_config_path, default_store_path, load_config
from mailseal.keys.store import KeyStore
from mailseal.reports.ingest import Ingestor, Status, printable
from mailseal.reports.model import TemporaryFailure
from mailseal.reports.sqlite_store import ReportStoreError, SqliteReportStore
from mailseal.reports.store import DAY, day_of
from mailseal.reports.summary import QUIET_DAYS, Summary, summarize, to_json
from mailseal.reports.unpack import Item, Limits, item_from_stdin, items_from_paths

EXIT_FAIL: Final = 1
_DESCRIPTION: Final = __doc__.replace("``", "") if __doc__ else None  # help is plain text, not reST
EXIT_TEMPFAIL: Final = 75
_URL: Final = re.compile(r"\A(?:[a-z][a-z0-9+.-]*:/|service\s*=)", re.IGNORECASE)  # Path() keeps one slash


def register(commands: Any) -> None:
    """Add ``reports`` and its subcommands."""
    reports = commands.add_parser(
        "reports", help="DMARC aggregate reports: ingest, summary, fetch, serve", description=_DESCRIPTION
    )
    sub = reports.add_subparsers(dest="reports_command", required=True, parser_class=type(reports))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store", type=Path, help="report store file (default: reports.db in the data folder)"
    )
    common.add_argument("--now", type=int, metavar="EPOCH", help="pretend it is this time (UTC seconds)")

    p = sub.add_parser(
        "ingest", parents=[common], help="store reports from files, folders, mbox, Maildir or stdin"
    )
    p.add_argument(
        "paths", nargs="*", type=Path, metavar="FILE|DIR", help="default: one message or file on stdin"
    )
    p.add_argument("--quarantine", type=Path, help="folder for unreadable input (default: beside the store)")
    p.add_argument("--strict", action="store_true", help="quarantine broken XML instead of repairing it")
    p.add_argument(
        "--retention", type=int, metavar="DAYS", help="drop reports older than DAYS after ingesting"
    )
    p.add_argument(
        "--mta",
        action="store_true",
        help="for an alias pipe: exit 0 also when quarantined (kept, so no bounce to the reporter); 75 still retries",
    )
    p.set_defaults(handler=_ingest)

    p = sub.add_parser(
        "summary", parents=[common], help="per domain, selector and receiver; joined with the keys"
    )
    _selection_options(p)
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument(
        "--quiet-days",
        type=int,
        default=QUIET_DAYS,
        help=f"warn after DAYS without a report (default {QUIET_DAYS})",
    )
    p.set_defaults(handler=_summary)

    p = sub.add_parser("prune", parents=[common], help="retention: drop reports older than DAYS")
    p.add_argument("--older-than", type=int, required=True, metavar="DAYS")
    p.set_defaults(handler=_prune)

    _register_more(sub, common)


def _register_more(sub: Any, common: argparse.ArgumentParser) -> None:
    """Subcommands with their own modules (fetch, serve)."""
    from mailseal.cli import reports_fetch, reports_serve  # lazy: imapclient, http.server load only when used

    reports_fetch.register(sub, common)
    reports_serve.register(sub, common)


def _selection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--domain", help="only reports about this domain")
    parser.add_argument(
        "--since", type=int, metavar="DAYS", help="only the last DAYS days (default: everything)"
    )
    parser.add_argument(
        "--keys-store",
        metavar="STORE",
        help="key store to join with: a file, postgresql://... or service=NAME"
        " (default: the keys configuration's, if it exists)",
    )
    parser.add_argument("--no-keys", action="store_true", help="do not join with a key store")


def default_report_store() -> Path:
    """``reports.db`` next to the key store (the keys configuration's, else the data folder's).

    The same place ``keys tick --reports-receivers`` and ``keys check`` look.
    A keys configuration that cannot be read falls back to the data folder
    rather than failing an alias pipe.
    """
    try:
        configured: object = load_config(default_config_path()).store
    except MailsealError:
        configured = None
    if isinstance(configured, Path):  # not a database URL (a fleet's key store)
        return configured.parent / "reports.db"
    return default_store_path().parent / "reports.db"


def now_of(args: argparse.Namespace) -> int:
    """``--now`` or the clock."""
    return int(args.now) if args.now is not None else int(time.time())


def open_store(args: argparse.Namespace, *, readonly: bool = False) -> SqliteReportStore:
    """The store ``--store`` names (or the default)."""
    if args.store is not None and _URL.match(str(args.store)):
        raise UsageError(
            f"--store {args.store}: the report store is an SQLite file; a database URL or service"
            " is for the key store (--keys-store, or store = in the keys configuration)"
        )
    return SqliteReportStore(args.store or default_report_store(), readonly=readonly)


def open_keys(args: argparse.Namespace) -> KeyStore | None:
    """The key store to join with (a file or a PostgreSQL database), or None when none is configured."""
    if getattr(args, "no_keys", False):
        return None
    # Only key names and states are read: no private key is unsealed, so no KEK is needed.
    if args.keys_store is None:
        location = load_config(default_config_path()).store
        if isinstance(location, Path) and not location.exists():
            return None  # no keys configured on this host
    else:
        location = parse_location(args.keys_store)
        if isinstance(location, Path) and not location.exists():
            raise UsageError(f"no key store at {location}")
    return open_key_store(location, readonly=True)


def _items(args: argparse.Namespace, limits: Limits) -> Iterator[Item]:
    if not args.paths:
        if sys.stdin is None:  # started with stdin closed (<&-)
            raise UsageError("standard input is closed: name FILE|DIR, or pipe a report in")
        yield item_from_stdin(limits)
        return
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    yield from items_from_paths(list(args.paths), limits)


def _ingest(args: argparse.Namespace) -> int:
    limits = Limits()
    now = now_of(args)
    try:
        store = open_store(args)
    except (ReportStoreError, TemporaryFailure) as exc:
        print(f"mailseal: {exc} (try again later)", file=sys.stderr)
        return EXIT_TEMPFAIL
    quarantine = args.quarantine or store.path.parent / "reports-quarantine"
    ingestor = Ingestor(store, quarantine, limits=limits, strict=args.strict, clock=lambda: now)
    quarantined = 0
    try:
        for outcome in ingestor.ingest_all(_items(args, limits)):
            print(outcome.line(), flush=True)
            quarantined += outcome.status is Status.QUARANTINED
        if args.retention is not None:
            gone = store.prune(day_of(now - args.retention * DAY))
            if gone:
                print(f"retention: dropped {gone} reports older than {args.retention} days")
    except TemporaryFailure as exc:
        print(f"mailseal: {printable(str(exc), 500)} (try again later)", file=sys.stderr)
        return EXIT_TEMPFAIL
    finally:
        store.close()
    return EXIT_FAIL if quarantined and not args.mta else 0


def _summary(args: argparse.Namespace) -> int:
    if args.since is not None and args.since < 0:
        raise UsageError("--since takes a number of days >= 0")
    store = open_store(args, readonly=(args.store or default_report_store()).exists())
    keys = open_keys(args)
    try:
        summary = summarize(
            store,
            keys,
            domain=args.domain.lower().rstrip(".") if args.domain else None,
            since_days=args.since,
            now=now_of(args),
            quiet_days=args.quiet_days,
        )
    finally:
        store.close()
        if keys is not None:
            keys.close()
    if args.json:
        print(json.dumps(to_json(summary), indent=None))
        return 0
    print(render_summary(summary, joined=keys is not None), end="")
    return 0


def _date(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def render_summary(summary: Summary, *, joined: bool) -> str:
    """The human table: per signing domain, one line per selector and receiver, then the findings."""
    totals = summary.totals
    period = f"since {_date(summary.since_day)}" if summary.since_day is not None else "all stored reports"
    lines = [f"{totals.reports} reports, {totals.records} records, {totals.messages} messages ({period})"]
    if not joined:
        lines.append("(no key store: selectors are not checked against your keys; use --keys-store)")
    current = None
    for row in summary.rows:
        if row.domain != current:
            current = row.domain
            lines.append("")
            lines.append(f"{printable(row.domain)}")
            lines.append(
                f"  {'selector':<20} {'receiver':<28} {'messages':>9} {'dkim pass':>9} {'aligned':>8}"
                f" {'fail':>6} {'fwd/list':>8}  key"
            )
        if row.known_selector is None:
            key = ""
        elif row.selector is None:
            key = "(unsigned)"
        else:
            key = row.key_state or "UNKNOWN"
        lines.append(
            f"  {_cell(row.selector or '-', 20)} {_cell(row.receiver, 28)} {row.messages:>9} "
            f"{_percent(row.dkim_pass, row.messages):>9} {_percent(row.aligned_pass, row.messages):>8}"
            f" {row.real_fail:>6} {row.forwarded_fail:>8}  {key}"
        )
    if summary.findings:
        lines.append("")
        lines.extend(f"warning [{f.code}] {printable(f.message, 400)}" for f in summary.findings)
    return "\n".join(lines) + "\n"


def _cell(text: str, width: int) -> str:
    """Escaped and cut to a table column."""
    shown = printable(text, 200)
    return f"{shown:<{width}}" if len(shown) <= width else shown[: width - 1] + "~"


def _prune(args: argparse.Namespace) -> int:
    if args.older_than < 0:
        raise UsageError("--older-than takes a number of days >= 0")
    if not (args.store or default_report_store()).exists():
        raise UsageError(f"no report store at {args.store or default_report_store()} (nothing to prune)")
    store = open_store(args)
    try:
        gone = store.prune(day_of(now_of(args) - args.older_than * DAY))
    except TemporaryFailure as exc:
        raise MailsealError(str(exc)) from None
    finally:
        store.close()
    print(f"dropped {gone} reports older than {args.older_than} days")
    return 0
