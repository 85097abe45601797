"""``mailseal reports fetch``: read reports from an IMAP mailbox over TLS and move what was processed.

Safe from cron (each run processes what is there and exits) or as a loop
(``--loop SECONDS``). Exit status: 0 done, 1 a report was quarantined, 75 the
server or the store could not be reached (try again later).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Final

from mailseal.errors import ConfigError, UsageError
from mailseal.keys.config import refuse_readable
from mailseal.reports.ingest import Ingestor, printable
from mailseal.reports.model import TemporaryFailure
from mailseal.reports.sqlite_store import ReportStoreError, SqliteReportStore

EXIT_TEMPFAIL: Final = 75


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``reports fetch``."""
    p = sub.add_parser("fetch", parents=[common], help="ingest reports from an IMAP mailbox (TLS), move them")
    p.add_argument("--host", required=True, help="IMAP server (implicit TLS)")
    p.add_argument("--port", type=int, default=993, help="default 993")
    p.add_argument("--user", required=True)
    p.add_argument(
        "--password-file",
        type=Path,
        help="file holding the password (mode 0600); else $MAILSEAL_IMAP_PASSWORD",
    )
    p.add_argument("--mailbox", default="INBOX", help="folder the reports arrive in (default INBOX)")
    p.add_argument(
        "--done-folder", default="dmarc-done", help="where processed mail goes (created if missing)"
    )
    p.add_argument("--quarantine-folder", default="dmarc-quarantine", help="where unreadable mail goes")
    p.add_argument(
        "--cafile", type=Path, help="CA certificate to trust (a private server); default: the system's"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds for each network step (default 60)")
    p.add_argument("--loop", type=float, metavar="SECONDS", help="keep running, one pass every SECONDS")
    p.add_argument("--quarantine", type=Path, help="local quarantine folder (default: beside the store)")
    p.add_argument("--strict", action="store_true", help="quarantine broken XML instead of repairing it")
    p.set_defaults(handler=_fetch)


def _password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        path: Path = args.password_file
        if path.is_dir():
            raise ConfigError("is a directory, not a password file", path=str(path))
        refuse_readable(path, "holds the IMAP password")
        try:
            return path.read_bytes().decode("utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from None
        except UnicodeDecodeError:
            raise ConfigError("the password is not UTF-8 text", path=str(path)) from None
    secret = os.environ.get("MAILSEAL_IMAP_PASSWORD")
    if not secret:
        raise UsageError("give --password-file or set MAILSEAL_IMAP_PASSWORD")
    return secret


def _open_store(args: argparse.Namespace) -> SqliteReportStore:
    from mailseal.cli.reports import default_report_store  # the parent module, which imports this one

    return SqliteReportStore(args.store or default_report_store())


def _fetch(args: argparse.Namespace) -> int:
    from mailseal.reports.fetch import FetchError, ImapSettings, fetch_once  # imapclient: loaded only here

    settings = ImapSettings(
        host=args.host,
        port=args.port,
        user=args.user,
        password=_password(args),
        mailbox=args.mailbox,
        done=args.done_folder,
        quarantine=args.quarantine_folder,
        cafile=args.cafile,
        timeout=args.timeout,
    )
    while True:
        status = 0
        try:
            store = _open_store(args)
        except (ReportStoreError, TemporaryFailure) as exc:
            print(f"mailseal: {exc} (try again later)", file=sys.stderr)
            status = EXIT_TEMPFAIL
        else:
            quarantine = args.quarantine or store.path.parent / "reports-quarantine"
            ingestor = Ingestor(
                store,
                quarantine,
                strict=args.strict,
                clock=lambda: int(args.now) if args.now is not None else int(time.time()),
            )
            try:
                result = fetch_once(settings, ingestor, on_outcome=lambda o: print(o.line(), flush=True))
                status = 1 if result.quarantined else 0
            except (FetchError, TemporaryFailure) as exc:
                print(f"mailseal: {printable(str(exc), 500)} (try again later)", file=sys.stderr)
                status = EXIT_TEMPFAIL
            finally:
                store.close()
        if args.loop is None:
            return status
        time.sleep(max(1.0, args.loop))
