"""``mailseal keygen``: a new key pair, the private half 0600, the record printed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mailseal.core.algorithms import KeyType
from mailseal.core.identity import is_domain_name, is_selector
from mailseal.core.keymaterial import DEFAULT_RSA_BITS, generate_private_key
from mailseal.core.keyrecord import KeyRecord, zone_file_record
from mailseal.errors import UsageError
from mailseal.keys.files import write_private_key


def register(commands: Any) -> None:
    """Add the ``keygen`` subcommand."""
    p = commands.add_parser("keygen", help="generate a key pair and print its DNS record")
    p.add_argument("--domain", required=True, metavar="D", help="signing domain (d=)")
    p.add_argument("--selector", required=True, metavar="S", help="selector (s=)")
    p.add_argument(
        "--algorithm",
        choices=["rsa", "ed25519"],
        default="rsa",
        metavar="rsa|ed25519",
        help="key type (default rsa)",
    )
    p.add_argument(
        "--bits", type=int, default=DEFAULT_RSA_BITS, metavar="N", help="RSA key size (default 2048)"
    )
    p.add_argument("--out", default=".", metavar="DIR", help="directory for the private key file (default .)")
    p.add_argument("--force", action="store_true", help="overwrite an existing key file")
    p.add_argument("--testing", action="store_true", help="publish with t=y (testing mode)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Generate, write the key 0600, print the TXT record in zone-file form."""
    domain = args.domain.lower().removesuffix(".")
    if not is_domain_name(domain, min_labels=2):
        raise UsageError(f"{args.domain!r} is not a valid domain name")
    if not is_selector(args.selector):
        raise UsageError(f"{args.selector!r} is not a valid selector")
    key = generate_private_key(KeyType(args.algorithm), args.bits)
    path = Path(args.out) / f"{args.selector}.{domain}.key"
    write_private_key(path, key, overwrite=args.force)
    record = KeyRecord.for_key(key.key_type, key.public_key_b64(), flags=("y",) if args.testing else ())
    name = f"{args.selector}._domainkey.{domain}."
    print(f"; private key written to {path} (mode 0600); publish this record:", file=sys.stderr)
    print(zone_file_record(name, record.to_txt_strings()))
    return 0
