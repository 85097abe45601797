"""Sign/verify throughput of mailseal vs dkimpy vs the bare crypto floor.

Run: python benchmarks/bench_core.py [--quick]

For each message size and key type (relaxed/relaxed) it prints messages per
second (median of 5 rounds in which the three take turns) for mailseal, dkimpy
and the floor: the bare `cryptography` operation plus hashlib SHA-256 of the
whole message. Then it streams 2 MB and 20 MB bodies through the staged verifier and
prints peak Python memory, to show it stays flat with message size.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from importlib.metadata import version as _version
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

import mailseal
from mailseal.core.algorithms import KeyType
from mailseal.core.message import Message
from mailseal.core.verifier import Verification
from mailseal.dns.memory import InMemoryResolver

try:
    import dkim  # dkimpy
except ImportError:  # pragma: no cover - the benchmark still runs without the peer
    dkim = None

SIZES = {"2 KB": 2_000, "20 KB": 20_000, "200 KB": 200_000, "2 MB": 2_000_000}
NOW = 1_767_225_600


def make_message(size: int) -> bytes:
    """A realistic text message of about ``size`` bytes (varied lines, some double spaces)."""
    header = (
        b"From: Alice Example <alice@example.com>\r\nTo: Bob <bob@example.net>\r\n"
        b"Subject: Quarterly report and notes\r\nDate: Thu, 1 Jan 2026 10:00:00 +0000\r\n"
        b"Message-ID: <report-1@example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    lines: list[bytes] = []
    total = len(header)
    while total < size:
        lines.append(b"Line %d of the report: figures, remarks and  a few words more.\r\n" % len(lines))
        total += len(lines[-1])
    return header + b"".join(lines)


def per_second(fns: list[Callable[[], object]], budget: float) -> list[float]:
    """Median ops/s of each function over 5 rounds of about budget/5 seconds each.

    The functions take turns within every round (ours, the floor, the peer,
    then again), so a change in machine load hits all of them alike and the
    ratios between them stay meaningful on a shared machine.
    """
    loops = []
    for fn in fns:
        fn()
        start = time.perf_counter()
        fn()
        once = max(time.perf_counter() - start, 1e-7)
        loops.append(max(1, int(budget / 5 / once)))
    rates: list[list[float]] = [[] for _ in fns]
    for _ in range(5):
        for fn, count, out in zip(fns, loops, rates, strict=True):
            start = time.perf_counter()
            for _ in range(count):
                fn()
            out.append(count / (time.perf_counter() - start))
    return [statistics.median(r) for r in rates]


def floor_ops(key: mailseal.PrivateKey, message: bytes) -> tuple[Callable[[], object], Callable[[], object]]:
    """The bare cryptography operation plus SHA-256 of the message."""
    raw: Any = key.key
    public = raw.public_key()
    digest = hashlib.sha256(message).digest()
    if isinstance(raw, rsa.RSAPrivateKey):
        signature = raw.sign(digest, padding.PKCS1v15(), Prehashed(hashes.SHA256()))

        def sign() -> object:
            return raw.sign(hashlib.sha256(message).digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256()))

        def verify() -> object:
            public.verify(
                signature, hashlib.sha256(message).digest(), padding.PKCS1v15(), Prehashed(hashes.SHA256())
            )
            return None
    else:
        assert isinstance(raw, ed25519.Ed25519PrivateKey)
        signature = raw.sign(digest)

        def sign() -> object:
            return raw.sign(hashlib.sha256(message).digest())

        def verify() -> object:
            public.verify(signature, hashlib.sha256(message).digest())
            return None

    return sign, verify


def dkimpy_ops(
    key: mailseal.PrivateKey, message: bytes, record: bytes
) -> tuple[Callable[[], object], Callable[[], object]] | None:
    if dkim is None:
        return None
    import base64

    from cryptography.hazmat.primitives import serialization

    raw: Any = key.key
    if isinstance(raw, rsa.RSAPrivateKey):
        key_data = raw.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        algorithm = b"rsa-sha256"
    else:
        key_data = base64.b64encode(raw.private_bytes_raw())
        algorithm = b"ed25519-sha256"

    def sign() -> object:
        return dkim.sign(message, b"s", b"example.com", key_data, canonicalize=(b"relaxed", b"relaxed"),
                         signature_algorithm=algorithm)  # fmt: skip

    signed = sign() + message  # type: ignore[operator]

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return record

    def verify() -> object:
        assert dkim.verify(signed, dnsfunc=dnsfunc)
        return None

    return sign, verify


def streaming_memory(key: mailseal.PrivateKey) -> None:
    """Peak traced memory while streaming 2 MB and 20 MB bodies through the staged verifier."""
    print("Streaming verify, 64 KB chunks, peak traced Python memory (the body itself excluded):")
    for size in (2_000_000, 20_000_000):
        message = make_message(size)
        parsed = Message.from_bytes(
            mailseal.sign(message, key=key, domain="example.com", selector="s") + message
        )
        body, headers = parsed.body, parsed.headers
        tracemalloc.start()
        verification = Verification(headers, now=int(time.time()))
        verification.add_key_answer(
            "s._domainkey.example.com",
            mailseal.TxtAnswer.found((f"k=ed25519; p={key.public_key_b64()}".encode(),)),
        )
        for offset in range(0, len(body), 65536):
            verification.feed_body(body[offset : offset + 65536])
        report = verification.finish()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert report.passed
        print(f"  {size / 1e6:5.0f} MB body: peak {peak / 1024:8.1f} KiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (noisier)")
    parser.add_argument(
        "--sizes", default=",".join(SIZES), help="comma-separated subset of: " + ", ".join(SIZES)
    )
    args = parser.parse_args(argv)
    budget = 0.5 if args.quick else 2.0
    keys = {
        "RSA-2048": mailseal.generate_private_key(KeyType.RSA, 2048),
        "Ed25519": mailseal.generate_private_key(KeyType.ED25519),
    }
    print(f"mailseal {mailseal.__version__}, dkimpy {_version('dkimpy') if dkim else 'absent'},"
          f" Python {sys.version.split()[0]}; one core; relaxed/relaxed; messages/s, median of 5")  # fmt: skip
    head = f"{'key':9} {'size':7} {'op':6} {'mailseal':>10} {'dkimpy':>9} {'floor':>9} {'ours/floor time':>16} {'x dkimpy':>9}"
    print(head)
    print("-" * len(head))
    for size_name in args.sizes.split(","):
        message = make_message(SIZES[size_name.strip()])
        for key_name, key in keys.items():
            record = f"v=DKIM1; k={key.key_type}; p={key.public_key_b64()}"
            resolver = InMemoryResolver({"s._domainkey.example.com": record})
            signed = mailseal.sign(message, key=key, domain="example.com", selector="s") + message
            ours = {
                "sign": lambda: mailseal.sign(message, key=key, domain="example.com", selector="s", now=NOW),  # noqa: B023
                "verify": lambda: mailseal.verify_sync(signed, resolver=resolver),  # noqa: B023
            }
            assert mailseal.verify_sync(signed, resolver=resolver).passed
            floor_sign, floor_verify = floor_ops(key, message)
            floor = {"sign": floor_sign, "verify": floor_verify}
            peer = dkimpy_ops(key, message, record.encode())
            for op in ("sign", "verify"):
                fns = [ours[op], floor[op]] + ([peer[0 if op == "sign" else 1]] if peer else [])
                ours_rate, floor_rate, *rest = per_second(fns, budget)
                peer_rate = rest[0] if rest else float("nan")
                print(
                    f"{key_name:9} {size_name:7} {op:6} {ours_rate:10.0f} {peer_rate:9.0f} {floor_rate:9.0f}"
                    f" {floor_rate / ours_rate:16.2f} {ours_rate / peer_rate:9.1f}"
                )
    print()
    streaming_memory(keys["Ed25519"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
