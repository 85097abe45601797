"""``mailseal milter`` (run, check a configuration) and ``mailseal import-opendkim``.

Logs go to standard error, one line per message; standard output carries only
what a person asked for (the DNS record and Postfix lines on a first run, a
converted configuration). Nothing secret is ever printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from mailseal.core.algorithms import KeyType
from mailseal.core.identity import is_domain_name
from mailseal.core.keymaterial import generate_private_key
from mailseal.core.keyrecord import KeyRecord, zone_file_record
from mailseal.errors import ConfigError, MailsealError, UsageError
from mailseal.keys.backends import describe
from mailseal.keys.files import read_private_key, write_private_key
from mailseal.milter.config import load_config, starter_config
from mailseal.milter.loading import key_absent_lines, key_problem_lines, load
from mailseal.milter.opendkim_import import convert
from mailseal.milter.process import run
from mailseal.milter.sockets import exposure_warning

CONFIG_NAME = "milter.toml"
VERIFY_ONLY_MARK = "# mailseal milter: verify-only starter"
# authserv-ids that name no one: what socket.getfqdn() returns on a host without a domain
_ANONYMOUS_IDS = ("localhost", "localhost.localdomain", "localdomain")


def register(commands: Any) -> None:
    """Add ``milter`` and ``import-opendkim``."""
    p = commands.add_parser(
        "milter", help="run the mail filter for Postfix/Sendmail (signs outgoing, verifies incoming mail)"
    )
    p.add_argument("--config", metavar="FILE", help="configuration file (TOML)")
    p.add_argument(
        "--check-config", metavar="FILE", help="check a configuration and its keys, explain problems, exit"
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="without --config: where the generated key and configuration live "
        "(default $XDG_DATA_HOME/mailseal or ~/.local/share/mailseal)",
    )
    p.add_argument("--domain", metavar="D", help="without --config, on first run: the domain to sign for")
    p.add_argument(
        "--workers", type=int, metavar="N", help="worker processes (default: from the configuration)"
    )
    p.add_argument(
        "--reference",
        action="store_true",
        help="print the configuration reference (every setting, commented)",
    )
    p.set_defaults(handler=run_milter)
    q = commands.add_parser(
        "import-opendkim", help="convert OpenDKIM KeyTable/SigningTable files to a milter configuration"
    )
    q.add_argument("--key-table", required=True, metavar="FILE", help="OpenDKIM KeyTable")
    q.add_argument("--signing-table", required=True, metavar="FILE", help="OpenDKIM SigningTable")
    q.add_argument("--refile", action="store_true", help="the SigningTable is a refile: (wildcard) table")
    q.set_defaults(handler=run_import)


def setup_logging() -> None:
    """Log lines to standard error with time, pid and level (for journald, files and tests alike)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s mailseal[%(process)d]: %(levelname)s %(message)s"))
    root = logging.getLogger("mailseal")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def run_milter(args: argparse.Namespace) -> int:
    """Check a configuration, or run the milter until SIGTERM."""
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.reference:
        sys.stdout.write(config_reference())
        return 0
    if args.check_config:
        return check_config(args.check_config)
    setup_logging()
    path = args.config
    if path is None:
        path = str(first_run(data_directory(args.data_dir), args.domain))
    warning = authserv_warning(load_config(path).authserv_id, path)
    if warning:
        logging.getLogger("mailseal").warning("%s", warning)
    return run(path, workers=args.workers)


def authserv_warning(authserv_id: str, path: str) -> str | None:
    """A warning when our name in Authentication-Results names no one (e.g. ``localhost``).

    RFC 8601 section 5 has receivers trust and remove A-R fields by authserv-id:
    ``localhost`` is what every unconfigured host calls itself, so it tells your
    own filters nothing about who added the field.
    """
    lowered = authserv_id.lower().rstrip(".")
    if lowered not in _ANONYMOUS_IDS and "." in lowered and not lowered.endswith(".localdomain"):
        return None
    return (
        f"authserv-id {authserv_id!r} (this host's name) does not name your mail system; "
        f'set authserv_id = "mx.example.com" (your MX name) in [milter] of {path}'
    )


def config_reference() -> str:
    """The README's configuration reference, read from the installed package's metadata.

    The installed package has no docs/ folder, but its metadata carries the
    README (pyproject ``readme``): the reference printed here is the one the
    README shows, so they cannot differ.
    """
    from importlib import metadata

    checkout = Path(__file__).resolve().parents[3] / "README.md"  # a source checkout: its own README
    if checkout.is_file():
        text = checkout.read_text(encoding="utf-8")
    else:
        try:
            text = str(metadata.metadata("mailseal").get_payload() or "")  # type: ignore[attr-defined]
        except metadata.PackageNotFoundError:
            text = ""
    start = text.find("### Configuration reference")
    fence = text.find("```toml\n", start)
    end = text.find("```", fence + 8)
    if start < 0 or fence < 0 or end < 0:
        return "# the configuration reference is in README.md, section 'Configuration reference'\n"
    return text[fence + 8 : end]


def check_config(path: str) -> int:
    """Print every problem with its line, or a one-line summary; exit 1 on problems.

    A store entry whose domain has no active key yet is a warning, not a
    problem: the configuration is right and the milter picks the key up as
    soon as ``mailseal keys tick`` activates one.
    """
    try:
        loaded = load(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    problems = key_problem_lines(loaded)
    for line in problems:
        print(line, file=sys.stderr)
    if problems:
        return 1
    for line in key_absent_lines(loaded):
        print(
            f"warning: {line}; until one is active such mail gets on_failure.sign_key_unavailable",
            file=sys.stderr,
        )
    config = loaded.config
    exposed = exposure_warning(config.milter.socket)
    if exposed:
        print(f"warning: {exposed}", file=sys.stderr)
    anonymous = authserv_warning(config.authserv_id, path)
    if anonymous:
        print(f"warning: {anonymous}", file=sys.stderr)
    store = f", key store {describe(config.key_store)}" if config.store_keys and config.key_store else ""
    print(
        f"{path}: ok -- listens on {config.milter.socket} (Postfix: {config.milter.socket.postfix()}), "
        f"{len(loaded.keyset.keys)} key(s) loaded{store}, {len(config.rules)} signing rule(s), "
        f"authserv-id {config.authserv_id}"
    )
    return 0


def data_directory(given: str | None) -> Path:
    """--data-dir, else $XDG_DATA_HOME/mailseal, else ~/.local/share/mailseal."""
    if given:
        return Path(given)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mailseal"


def guess_domain() -> str:
    """This host's domain (mx.example.com -> example.com), for a first run without --domain."""
    name = socket.getfqdn().lower().rstrip(".")
    labels = name.split(".")
    if len(labels) >= 3:
        return ".".join(labels[1:])
    return name if len(labels) == 2 else ""


def first_run(folder: Path, domain: str | None) -> Path:
    """Use (or create) the embedded default configuration in ``folder``; print what to publish.

    On a host whose name has no domain (``hostname`` = ``vm``) and without
    --domain there is no domain to sign for, and any guess would sign mail
    in someone else's name. What a user running the README's command expects
    is a filter that runs: so it runs verify-only (incoming mail gets
    Authentication-Results, nothing is signed) and says how to start signing.
    That starter is replaced as soon as --domain is given.
    """
    config_path = folder / CONFIG_NAME
    verify_only = config_path.exists() and _is_verify_only(config_path)
    if not config_path.exists() or (verify_only and domain):
        chosen = (domain or guess_domain()).lower().rstrip(".")
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not is_domain_name(chosen, min_labels=2):
            if domain:
                raise UsageError(f"--domain {domain!r} is not a domain name such as example.com")
            config_path.write_text(_verify_only_config(), encoding="utf-8")
            print(f"Created {config_path} (verify-only).")
            _say_verify_only(config_path)
            return config_path
        selector = time.strftime("ms%Y%m", time.gmtime())
        key_path = folder / "keys" / f"{selector}.{chosen}.key"
        (folder / "keys").mkdir(exist_ok=True, mode=0o700)
        write_private_key(key_path, generate_private_key(KeyType.RSA))
        config_path.write_text(
            starter_config(domain=chosen, selector=selector, key_file=str(key_path)), encoding="utf-8"
        )
        print(f"Created {config_path} and an RSA-2048 key (mode 0600) in {key_path.parent}.")
    elif domain:
        print(f"note: {config_path} exists; --domain is ignored (edit the file instead)", file=sys.stderr)
    elif verify_only:
        _say_verify_only(config_path)
        return config_path
    _print_setup(config_path)
    return config_path


def _is_verify_only(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as file:
            return file.readline().startswith(VERIFY_ONLY_MARK)
    except (OSError, UnicodeDecodeError):
        return False


def _verify_only_config() -> str:
    return f"""\
{VERIFY_ONLY_MARK} (this host's name has no domain to sign for).
# Start signing with: mailseal milter --domain example.com  (replaces this file, makes a key).
# Every setting: mailseal milter --reference. Check: mailseal milter --check-config FILE

[milter]
socket = "inet:8891@127.0.0.1"
# authserv_id = "mx.example.com"    # names us in Authentication-Results; default: host name

[routing]
sign = false                        # nothing to sign for yet
verify = true
"""


def _say_verify_only(config_path: Path) -> None:
    name = socket.gethostname()
    print(
        f"This host's name ({name}) has no domain, so mailseal cannot tell which domain to sign for:\n"
        f"mailseal milter runs verify-only on {config_path} (incoming mail gets Authentication-Results;\n"
        "nothing is signed). To sign, run: mailseal milter --domain example.com\n"
        "Add to Postfix main.cf, then run `postfix reload`:"
    )
    _print_postfix_lines(str(config_path))


def _print_setup(config_path: Path) -> None:
    """The DNS record(s) to publish and the Postfix main.cf lines."""
    loaded = load(str(config_path))
    config = loaded.config
    print(f"mailseal milter runs on {config_path}. Publish in DNS:")
    for entry in config.keys:
        try:
            key = read_private_key(entry.path)
        except MailsealError as exc:
            print(f"  ({entry.name}: {exc})")
            continue
        record = KeyRecord.for_key(key.key_type, key.public_key_b64())
        print(zone_file_record(f"{entry.selector}._domainkey.{entry.domain}.", record.to_txt_strings()))
    for store_entry in config.store_keys:
        print(
            f"  ({store_entry.name}: keys of {store_entry.domain} from the key store; mailseal keys publishes them)"
        )
    print("Add to Postfix main.cf, then run `postfix reload`:")
    _print_postfix_lines(str(config_path))


def _print_postfix_lines(path: str) -> None:
    postfix = load_config(path).milter.socket.postfix()
    print(f"  smtpd_milters = {postfix}")
    print("  non_smtpd_milters = $smtpd_milters")
    print("  milter_default_action = tempfail")
    print("  milter_protocol = 6")
    sys.stdout.flush()


def run_import(args: argparse.Namespace) -> int:
    """Print the converted configuration; warnings go to standard error."""
    texts = []
    for path in (args.key_table, args.signing_table):
        name = path.split(":", 1)[1] if path.startswith(("file:", "refile:")) else path
        try:
            texts.append(Path(name).read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot read {name}: {exc.strerror or 'system error'}") from None
        except UnicodeDecodeError:
            raise UsageError(f"cannot read {name}: not UTF-8 text") from None
    refile = args.refile or args.signing_table.startswith("refile:")
    result = convert(
        texts[0],
        texts[1],
        refile=refile,
        key_table_label=args.key_table,
        signing_table_label=args.signing_table,
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    sys.stdout.write(result.toml)
    return 0
