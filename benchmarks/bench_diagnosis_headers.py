"""What a header failure's diagnosis costs under simple canonicalization (the fold search).

Run: python benchmarks/bench_diagnosis_headers.py [--quick]

A message with 14 signed header fields of about 750 bytes each (c=simple/simple,
RSA-2048) is verified intact, with its Subject changed (the worst case: every
reconstruction, the fold search included, runs and fails), and with one long
field unfolded by a relay (the search finds it). Medians of repeats in one run;
the ratios to the intact verification are what to quote (hosts differ 3x).
"""

from __future__ import annotations

import argparse
import statistics
import time

import mailseal
from mailseal import InMemoryResolver, generate_private_key
from mailseal.core.algorithms import KeyType

NOW = 1_767_225_600


def median_seconds(message: bytes, resolver: InMemoryResolver, repeats: int) -> tuple[float, str]:
    times = []
    code = "-"
    for _ in range(repeats):
        start = time.perf_counter()
        result = mailseal.verify_sync(message, resolver=resolver, now=NOW)
        times.append(time.perf_counter() - start)
        diagnosis = result.signatures[0].diagnosis
        code = diagnosis.code.value if diagnosis is not None else "pass"
    return statistics.median(times), code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    repeats = 7 if parser.parse_args().quick else 41
    key = generate_private_key(KeyType.RSA, 2048)
    resolver = InMemoryResolver({"sel._domainkey.example.com": f"v=DKIM1; k=rsa; p={key.public_key_b64()}"})
    words = " ".join(["word"] * 150)
    folded = " ".join(["word"] * 14) + "\r\n " + " ".join(["word"] * 14)
    fields = "".join(f"X-H{i}: {words}\r\n" for i in range(12))
    message = f"From: a@example.com\r\nSubject: s\r\nX-Folded: {folded}\r\n{fields}\r\nbody\r\n".encode()
    names = ["from", "subject", "x-folded"] + [f"x-h{i}" for i in range(12)]
    signed = (
        mailseal.sign(
            message, key=key, domain="example.com", selector="sel", now=NOW,
            canonicalization="simple/simple", headers=names,
        )
        + message
    )  # fmt: skip
    cases = {
        "intact": signed,
        "Subject changed (worst case)": signed.replace(b"Subject: s", b"Subject: t"),
        "X-Folded unfolded by a relay": signed.replace(b"\r\n word", b" word", 1),
    }
    base, _ = median_seconds(signed, resolver, repeats)
    print("| case | median ms | x intact | diagnosis |\n|---|---:|---:|---|")
    for name, data in cases.items():
        seconds, code = median_seconds(data, resolver, repeats)
        print(f"| {name} | {seconds * 1e3:.2f} | {seconds / base:.1f} | {code} |")


if __name__ == "__main__":
    main()
