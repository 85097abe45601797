"""The reports' part in ``mailseal keys``: the ``tick`` revocation gate and ``check``'s report lines."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from mailseal.errors import UsageError
from mailseal.keys.config import parse_duration
from mailseal.keys.lifecycle import Lifecycle
from mailseal.keys.store import KeyEntry
from mailseal.reports.feedback import ReportsGate, selector_feedback
from mailseal.reports.sqlite_store import SqliteReportStore
from mailseal.reports.store import DAY, day_of

DEFAULT_DEADLINE: Final = "14d"
CHECK_DAYS: Final = 30


def add_tick_options(parser: argparse.ArgumentParser) -> None:
    """``--reports-receivers N`` turns the gate on."""
    g = parser.add_argument_group("DMARC report feedback (off unless --reports-receivers is given)")
    g.add_argument(
        "--reports-receivers",
        type=int,
        metavar="N",
        help="revoke a retiring key only once reports show its successor passing at N receivers",
    )
    g.add_argument(
        "--reports-deadline",
        default=DEFAULT_DEADLINE,
        metavar="DURATION",
        help=f"after retirement + DURATION revoke anyway, with a warning (default {DEFAULT_DEADLINE})",
    )
    g.add_argument(
        "--reports-store", type=Path, help="report store (default: reports.db beside the key store)"
    )


def add_check_options(parser: argparse.ArgumentParser) -> None:
    """``keys check`` reads the report store when there is one."""
    parser.add_argument(
        "--reports-store",
        type=Path,
        help="report store to quote (default: reports.db beside the key store, if any)",
    )


def _store_path(args: argparse.Namespace, key_store: object) -> Path | None:
    """``--reports-store``, else reports.db beside a key store file (None beside a database store)."""
    if args.reports_store is not None:
        return Path(args.reports_store)
    return key_store.parent / "reports.db" if isinstance(key_store, Path) else None


def install_gate(
    lifecycle: Lifecycle, args: argparse.Namespace, key_store: object
) -> SqliteReportStore | None:
    """Set the lifecycle's revocation gate when asked; returns the store to close afterwards."""
    if args.reports_receivers is None:
        return None
    if args.reports_receivers < 1:
        raise UsageError("--reports-receivers takes a number >= 1")
    deadline = parse_duration(args.reports_deadline, "--reports-deadline")
    path = _store_path(args, key_store)
    if path is None or not path.exists():
        raise UsageError(
            f"no report store at {path or 'the default place'} (ingest reports first, or give --reports-store)"
        )
    store = SqliteReportStore(path, readonly=True)
    lifecycle.revoke_gate = ReportsGate(store, receivers=args.reports_receivers, deadline=deadline)
    return store


def check_lines(
    args: argparse.Namespace, key_store: object, keys: Sequence[KeyEntry], now: int
) -> dict[str, str]:
    """Per key name, what the last 30 days of reports say ({} when there is no report store)."""
    path = _store_path(args, key_store)
    if path is None or not path.exists():
        return {}
    store = SqliteReportStore(path, readonly=True)
    try:
        since = day_of(now - CHECK_DAYS * DAY)
        return {
            key.name: selector_feedback(store, key.domain, key.selector, since_day=since).sentence()
            for key in keys
        }
    finally:
        store.close()
