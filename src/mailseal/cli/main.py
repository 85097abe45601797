"""``mailseal`` entry point: subcommands, exit codes, one-line errors."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mailseal import __version__
from mailseal.cli import demo, keygen, keys, milter, reports, sign, verify
from mailseal.core.canonicalization import SPEEDUPS
from mailseal.errors import MailsealError, UsageError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to document the CLI)."""
    parser = _Parser(prog="mailseal", description="DKIM signing, verification and keys.")
    speedups = "C speedups" if SPEEDUPS else "pure Python"
    parser.add_argument("--version", action="version", version=f"mailseal {__version__} ({speedups})")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    keygen.register(commands)
    sign.register(commands)
    verify.register(commands)
    demo.register(commands)
    keys.register(commands)
    milter.register(commands)
    reports.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (0 ok, 1 failed, 2 usage, 75 try later)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        status: int = args.handler(args)
    except UsageError as exc:
        print(f"mailseal: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MailsealError as exc:
        print(f"mailseal: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:  # a file or folder the command needed: one line, not a traceback
        where = f"{exc.filename}: " if exc.filename is not None else ""
        print(f"mailseal: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
