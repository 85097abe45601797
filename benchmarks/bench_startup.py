"""Start-up of the command line: is ``mailseal verify`` of one small file dominated by work?

Run: PYTHONPATH=src python benchmarks/bench_startup.py [--runs N] [--src OTHER_SRC]

Interleaved runs, medians. For each tree (this one, and optionally another
checkout's src/ to compare before/after) it prints the wall time of
``mailseal verify --dns-zone ZONE small.eml``, the import time of that run
(the sum of ``python -X importtime``'s top-level entries) and the floor
measured in the same run: a bare ``python -c pass``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMALL = b"From: a@example.com\nTo: b@example.net\nSubject: hi\n\nhello\n"
ZONE = "$ORIGIN example.com.\n@ 300 IN SOA ns hostmaster 1 3600 600 86400 300\n"


def _wall(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=False)
    return time.perf_counter() - started


def _imports_ms(argv: list[str], env: dict[str, str]) -> float:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]], env=env, capture_output=True, check=False
    )
    total = 0
    for line in done.stderr.decode().splitlines()[1:]:
        parts = line.split("|")
        if len(parts) == 3 and parts[2].startswith(" ") and not parts[2].startswith("  "):
            total += int(parts[1])
    return total / 1000


def main() -> None:
    """Print one table row per tree and the floor."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--src", action="append", default=[], help="another src/ folder to measure too")
    args = parser.parse_args()
    here = str(Path(__file__).resolve().parents[1] / "src")
    trees = [here, *args.src]
    with tempfile.TemporaryDirectory() as folder:
        message = Path(folder) / "small.eml"
        message.write_bytes(SMALL)
        zone = Path(folder) / "example.com.zone"
        zone.write_text(ZONE)
        verify = [sys.executable, "-m", "mailseal", "verify", "--dns-zone", str(zone), str(message)]
        walls: dict[str, list[float]] = {tree: [] for tree in trees}
        imports: dict[str, list[float]] = {tree: [] for tree in trees}
        floor: list[float] = []
        for _ in range(args.runs):
            floor.append(_wall([sys.executable, "-c", "pass"], dict(os.environ)))
            for tree in trees:
                env = {**os.environ, "PYTHONPATH": tree}
                walls[tree].append(_wall(verify, env))
                imports[tree].append(_imports_ms(verify, env))
    base = statistics.median(floor)
    print(f"| tree | verify wall (ms) | imports (ms) | wall / python -c pass |  (median of {args.runs})")
    print("| --- | ---: | ---: | ---: |")
    for tree in trees:
        wall = statistics.median(walls[tree])
        print(f"| {tree} | {wall * 1000:.0f} | {statistics.median(imports[tree]):.0f} | {wall / base:.1f} |")
    print(f"| python -c pass (floor) | {base * 1000:.0f} | - | 1.0 |")


if __name__ == "__main__":
    main()
