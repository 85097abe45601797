"""What a failure's diagnosis costs: verifying broken mail vs verifying the same mail intact.

Run: python benchmarks/bench_diagnosis.py [--quick]

For each body size (relaxed/relaxed and simple/simple, RSA-2048) it times, as
medians of repeats in one run: mailseal verifying the intact message (no
diagnosis), the message with a list footer appended (found after one prefix
pass), with one word changed (the worst case: every diagnosis step runs and
fails), and dkimpy verifying the changed message (the peer, which says only
"body hash did not verify"). Ratios are to mailseal's intact verification;
quote those, not the milliseconds (hosts differ 3x).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import mailseal
from bench_core import NOW, make_message  # the same message as the verify benchmark
from mailseal.core.algorithms import KeyType
from mailseal.core.diagnosis import Cause

try:
    import dkim  # dkimpy
except ImportError:  # pragma: no cover - the benchmark still runs without the peer
    dkim = None

SIZES = {"2 KB": 2_000, "20 KB": 20_000, "200 KB": 200_000, "1 MB": 1_000_000}
FOOTER = b"-- \r\nteam mailing list\r\nhttps://lists.example.org/team\r\n"


def seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds per call over ``repeats`` timed batches."""
    fn()
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-7)
    loops = max(1, int(0.05 / once))
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        runs.append((time.perf_counter() - start) / loops)
    return statistics.median(runs)


def main() -> None:
    """Print one table row per size and canonicalization."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, small sizes only")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    sizes = dict(list(SIZES.items())[:2]) if args.quick else SIZES
    key = mailseal.generate_private_key(KeyType.RSA, 2048)
    record = f"v=DKIM1; k=rsa; p={key.public_key_b64()}"
    resolver = mailseal.InMemoryResolver({"sel._domainkey.example.com": record})
    print(f"{'size':>7} {'c=':>15} {'intact ms':>10} {'footer':>8} {'changed':>8} {'dkimpy changed':>15}")
    for label, size in sizes.items():
        for canon in ("relaxed/relaxed", "simple/simple"):
            message = make_message(size)
            signed = (
                mailseal.sign(
                    message, key=key, domain="example.com", selector="sel", canonicalization=canon, now=NOW
                )
                + message
            )
            footer = signed + FOOTER
            changed = signed.replace(b"Line 1 of", b"Line 7 of")
            cases = {"intact": signed, "footer": footer, "changed": changed}
            expected = {"intact": None, "footer": Cause.BODY_APPENDED, "changed": Cause.BODY_MODIFIED}
            timings = {}
            for name, data in cases.items():
                (sig,) = mailseal.verify_sync(data, resolver=resolver, now=NOW).signatures
                got = sig.diagnosis.code if sig.diagnosis else None
                assert got is expected[name], (name, got)
                timings[name] = seconds(
                    functools.partial(mailseal.verify_sync, data, resolver=resolver, now=NOW), repeats
                )
            peer = "-"
            if dkim is not None:
                dns = {b"sel._domainkey.example.com.": record.encode()}

                def dkimpy_verify(d: bytes = changed, dns: dict[bytes, bytes] = dns) -> object:
                    return dkim.verify(d, dnsfunc=lambda qname, timeout=5: dns.get(qname))

                peer = f"{seconds(dkimpy_verify, repeats) / timings['intact']:.2f}x"
            base = timings["intact"]
            print(
                f"{label:>7} {canon:>15} {base * 1000:>10.3f} {timings['footer'] / base:>7.2f}x"
                f" {timings['changed'] / base:>7.2f}x {peer:>15}"
            )


if __name__ == "__main__":
    main()
