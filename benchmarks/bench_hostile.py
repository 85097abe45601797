"""What hostile messages cost the verifier, as a ratio to an honest message measured in the same run.

Run: python benchmarks/bench_hostile.py [--quick]

Each row verifies one message with ``mailseal.verify_sync`` (keys from memory,
so no DNS wait) and prints the median time, its ratio to the honest message
of the first row, the message result and the reasons. dkimpy, where it is
installed, verifies the same message in the same run (its first signature
only, as ``dkim.verify`` does), for comparison. The cases are issue 8's:
a key with a 3,070-bit public exponent (items 7), junk signatures above a
valid one (item 8), and a From of 500 nested comments (item 1).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import mailseal
from mailseal.core.algorithms import KeyType
from mailseal.dns.memory import InMemoryResolver

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.hostile_keys import modulus_of, odd_number, rsa_p

try:
    import dkim  # dkimpy
except ImportError:  # pragma: no cover - the benchmark still runs without the peer
    dkim = None

NOW = 1_767_225_600
MESSAGE = (
    b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: hello\r\n"
    b"Date: Thu, 1 Jan 2026 10:00:00 +0000\r\nMessage-ID: <b@example.com>\r\n\r\n" + b"Hello Bob.\r\n" * 20
)


def median_ms(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def signed_by(key: mailseal.PrivateKey, selectors: list[str], message: bytes = MESSAGE) -> bytes:
    for selector in selectors:
        message = mailseal.sign(message, key=key, domain="example.com", selector=selector, now=NOW) + message
    return message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    repeats = 5 if parser.parse_args().quick else 21
    key = mailseal.generate_private_key(KeyType.RSA, 3072)
    honest = f"v=DKIM1; k=rsa; p={key.public_key_b64()}"
    costly = f"v=DKIM1; k=rsa; p={rsa_p(modulus_of(key.public_key_b64()), odd_number(3070))}"
    eight = [f"s{i}" for i in range(8)]
    field = mailseal.sign(MESSAGE, key=key, domain="example.com", selector="sel", now=NOW)
    body_hash = re.search(rb"bh=([^;]+);", field)
    assert body_hash is not None

    def junk(count: int) -> bytes:
        return b"".join(
            b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=junk%d; h=from; bh=%s; b=AAAA\r\n"
            % (i, body_hash.group(1))
            for i in range(count)
        )

    nested = MESSAGE.replace(b"Alice <alice@example.com>", b"(" * 500 + b")" * 500 + b" alice@example.com")
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        ("honest: 1 signature, RSA-3072", field + MESSAGE, {"sel._domainkey.example.com": honest}),
        (
            "8 signatures, RSA-3072",
            signed_by(key, eight),
            {f"{s}._domainkey.example.com": honest for s in eight},
        ),
        (
            "8 signatures, 3,070-bit exponent",
            signed_by(key, eight),
            {f"{s}._domainkey.example.com": costly for s in eight},
        ),
        (
            "8 junk fields above a valid one",
            junk(8) + field + MESSAGE,
            {"sel._domainkey.example.com": honest},
        ),
        (
            "1,000 junk fields above a valid one",
            junk(1000) + field + MESSAGE,
            {"sel._domainkey.example.com": honest},
        ),
        (
            "From of 500 nested comments, signed",
            signed_by(key, ["sel"], nested),
            {"sel._domainkey.example.com": honest},
        ),
    ]
    print(f"mailseal {mailseal.__version__}, Python {sys.version.split()[0]}, median of {repeats}")
    print(f"{'case':40} {'ms':>8} {'ratio':>7} {'dkimpy ms':>10}  result (reasons)")
    base = 0.0
    for name, message, records in cases:
        resolver = InMemoryResolver(records)
        report = mailseal.verify_sync(message, resolver=resolver, now=NOW)

        def ours(m: bytes = message, r: InMemoryResolver = resolver) -> object:
            return mailseal.verify_sync(m, resolver=r, now=NOW)

        ms = median_ms(ours, repeats)
        base = base or ms
        peer = "n/a"
        if dkim is not None:

            def dnsfunc(name: bytes, timeout: int = 5, found: dict[str, str] = records) -> bytes:
                return found.get(name.decode().rstrip(".").lower(), "").encode()

            def check(m: bytes = message, lookup: Callable[..., bytes] = dnsfunc) -> object:
                try:
                    return dkim.verify(m, dnsfunc=lookup)
                except Exception as exc:
                    return exc

            peer = f"{median_ms(check, repeats):.2f}"
        reasons = sorted({str(s.reason) for s in report.signatures if s.reason is not None})
        extra = f", {report.left_out} left out" if report.left_out else ""
        print(
            f"{name:40} {ms:8.2f} {ms / base:6.1f}x {peer:>10}  {report.result} ({', '.join(reasons) or '-'}{extra})"
        )


if __name__ == "__main__":
    main()
