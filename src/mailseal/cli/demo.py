"""``mailseal demo``: the whole job offline in a temporary folder, on embedded defaults.

Generates an RSA-2048 and an Ed25519 key, publishes both in a zone file, signs
a sample message with both, verifies it, then shows what a one-byte change does.
"""

from __future__ import annotations

import argparse
import socket
import tempfile
from pathlib import Path
from typing import Any

from mailseal.api import render_authentication_results, sign_many, signing_request, verify_sync
from mailseal.cli.render import explain
from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import generate_private_key
from mailseal.core.keyrecord import KeyRecord, zone_file_record
from mailseal.dns.zonefile import ZoneFileResolver
from mailseal.keys.files import write_private_key

SAMPLE = (
    b"From: Alice <alice@example.com>\r\nTo: Bob <bob@example.net>\r\nSubject: mailseal demo\r\n"
    b"Date: Thu, 1 Jan 2026 10:00:00 +0000\r\nMessage-ID: <demo@example.com>\r\n\r\n"
    b"Hello Bob,\r\n\r\nthis message is signed twice: RSA-2048 and Ed25519.\r\n"
)


def register(commands: Any) -> None:
    """Add the ``demo`` subcommand."""
    p = commands.add_parser("demo", help="keygen -> publish -> sign -> verify, offline, in a temp folder")
    p.add_argument(
        "--dir", metavar="DIR", help="keep the keys, zone file and messages here instead of a temp folder"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; exit 0 when the signed message verifies and the altered one does not."""
    if args.dir:
        return _demo(Path(args.dir))
    with tempfile.TemporaryDirectory(prefix="mailseal-demo-") as folder:
        status = _demo(Path(folder))
    print(
        f"The folder {folder} was a temporary one and is now removed; run mailseal demo --dir DIR to keep it."
    )
    return status


def _demo(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    keys = {"rsa2026": generate_private_key(KeyType.RSA), "ed2026": generate_private_key(KeyType.ED25519)}
    zone = [
        "$ORIGIN example.com.",
        "$TTL 300",
        "@ IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 300",
    ]
    for selector, key in keys.items():
        write_private_key(folder / f"{selector}.example.com.key", key, overwrite=True)
        record = KeyRecord.for_key(key.key_type, key.public_key_b64())
        zone.append(zone_file_record(f"{selector}._domainkey", record.to_txt_strings()))
    zone_path = folder / "example.com.zone"
    zone_path.write_text("\n".join(zone) + "\n")
    print(f"1. keys written to {folder} (mode 0600); DNS records in {zone_path}")
    requests = [signing_request(key=k, domain="example.com", selector=s) for s, k in keys.items()]
    signed = sign_many(SAMPLE, requests) + SAMPLE
    (folder / "signed.eml").write_bytes(signed)
    print(f"2. signed the sample message with both keys: {folder / 'signed.eml'}")
    resolver = ZoneFileResolver(zone_path)
    authserv_id = socket.getfqdn()
    report = verify_sync(signed, resolver=resolver)
    print("3. verified against the zone file:")
    print(explain("signed.eml", report, render_authentication_results(authserv_id, report)))
    altered = signed.replace(b"Hello Bob", b"Hello Eve")
    tampered = verify_sync(altered, resolver=resolver)
    print("4. the same message with one word of the body changed:")
    print(explain("altered.eml", tampered, render_authentication_results(authserv_id, tampered)))
    return 0 if report.passed and not tampered.passed else 1
