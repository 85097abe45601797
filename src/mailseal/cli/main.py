"""``mailseal`` entry point: subcommands, exit codes, one-line errors.

Start-up matters for a command run per message from scripts: only the module
of the command being run is imported (``mailseal verify`` never loads the
milter or the key store), and each command imports the library parts it
needs when it runs. ``build_parser()`` still registers every command, for
``mailseal --help`` and for the tests that compare the help with the README.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from mailseal import __version__
from mailseal.cli import exits
from mailseal.dns import skip_unused_transports
from mailseal.errors import ConfigError, KeyFileError, MailsealError, UsageError

EXIT_USAGE = exits.INPUT
EXIT_BUG = 70  # EX_SOFTWARE (sysexits.h): a bug in mailseal, never the user's input

# command -> module under mailseal.cli that registers and runs it (in --help order)
COMMANDS: dict[str, str] = {
    "keygen": "keygen",
    "sign": "sign",
    "verify": "verify",
    "demo": "demo",
    "keys": "keys",
    "milter": "milter",
    "import-opendkim": "milter",
    "reports": "reports",
}


# commands that always load dnspython's resolver (verify does so itself, and only when it asks DNS)
RESOLVING_COMMANDS = frozenset({"keys", "milter"})


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, except that the exit-status table keeps its lines."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(exits.TABLE[:11]):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one plain line (exit status 2, via UsageError)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _finish(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` and every subcommand parser below it the exit-status table."""
    parser.epilog = f"{parser.epilog}\n\n{exits.TABLE}" if parser.epilog else exits.TABLE
    if parser.formatter_class is argparse.HelpFormatter:
        parser.formatter_class = _Formatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _finish(child)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every command, or only the module of command ``only``."""
    parser = _Parser(prog="mailseal", description="DKIM signing, verification and keys.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    modules = [COMMANDS[only]] if only in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        module: Any = importlib.import_module(f"mailseal.cli.{name}")
        module.register(commands)
    _finish(parser)
    return parser


def _version() -> str:
    from mailseal.core.canonicalization import SPEEDUPS

    return f"mailseal {__version__} ({'C speedups' if SPEEDUPS else 'pure Python'})"


def _command(argv: Sequence[str]) -> str | None:
    """The command word in ``argv``; an unknown leading option is a usage error."""
    for word in argv:
        if word in ("-h", "--help", "--version"):
            return None
        if word.startswith("-"):
            raise UsageError(
                f"mailseal: unknown option {word} (options follow the command: mailseal COMMAND ...)"
            )
        if word not in COMMANDS:
            raise UsageError(f"mailseal: unknown command {word!r}; commands: {', '.join(COMMANDS)}")
        return word
    return None


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` and of the subcommand parsers below it."""
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found |= _options(child)
    return found


def _unknown_option(parser: argparse.ArgumentParser, words: list[str]) -> str | None:
    """The first word that looks like an option no parser knows (argparse may complain of something else first)."""
    known = _options(parser)
    for word in words:
        if word == "--":
            return None
        if (
            word.startswith("-")
            and len(word) > 1
            and not word[1].isdigit()
            and word.split("=", 1)[0] not in known
        ):
            return word
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit status (the table is in :mod:`mailseal.cli.exits`)."""
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        command = _command(words)
        if command in RESOLVING_COMMANDS:
            skip_unused_transports()
        parser = build_parser(command)
        try:
            args, extra = parser.parse_known_args(words)
        except UsageError:
            unknown = _unknown_option(parser, words)
            if unknown is None:
                raise
            where = f"mailseal {command}" if command else "mailseal"
            raise UsageError(f"{where}: unknown option {unknown} (see {where} --help)") from None
        if extra:
            where = f"mailseal {args.command}" if args.command else "mailseal"
            kind = "unknown option" if extra[0].startswith("-") else "unexpected argument"
            raise UsageError(f"{where}: {kind} {extra[0]} (see {where} --help)")
        if args.version:
            print(_version())
            return exits.OK
        if args.command is None:
            raise UsageError(f"mailseal: a command is required: {', '.join(COMMANDS)} (see mailseal --help)")
        status: int = args.handler(args)
    except (UsageError, ConfigError, KeyFileError) as exc:
        _say(exc)
        return exits.INPUT
    except MailsealError as exc:
        _say(exc)
        return exits.TRY_LATER if exc.temporary else exits.NO
    except KeyboardInterrupt:
        return exits.INTERRUPTED
    except BrokenPipeError:
        return exits.NO
    except OSError as exc:  # a file or folder the command needed: one line, not a traceback
        where = f"{exc.filename}: " if exc.filename is not None else ""
        _say(f"{where}{exc.strerror or 'system error'}")
        return exits.INPUT
    except UnicodeError:
        _say("a file named on the command line is not valid UTF-8 text")
        return exits.INPUT
    except Exception as exc:
        if os.environ.get("MAILSEAL_DEBUG"):
            raise
        _say(f"internal error (a bug; MAILSEAL_DEBUG=1 shows where): {type(exc).__name__}: {exc}")
        return EXIT_BUG
    return status


def _say(problem: object) -> None:
    """One line on stderr, prefixed once with ``mailseal``."""
    text = " ".join(str(problem).split("\n"))
    print(text if text.startswith("mailseal") else f"mailseal: {text}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
