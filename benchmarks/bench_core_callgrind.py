"""Instructions per library verify, counted by callgrind: an A/B that a busy machine cannot blur.

    python benchmarks/bench_core_callgrind.py [--size 20000] [--loops 300] [--baseline SRC]

Runs a child Python under ``valgrind --tool=callgrind`` twice, once verifying
one message and once ``1 + --loops`` times, and prints the difference per
verification: user-space instructions of ``mailseal.verify_sync`` (RSA-2048,
relaxed/relaxed, the message of bench_core.py) and of the floor (the bare
``cryptography`` verify plus SHA-256 of the message), with the part spent in
the Python interpreter itself (libpython) beside them. One fixed key and a
fixed t= make the two runs differ only by the loop. With ``--baseline SRC``
the same counts come from another ``src`` folder too (e.g. ``git worktree``
of main), so two builds are compared in one go.

Instruction counts do not depend on load, so they decide "did this change
help" while others use the machine; bench_core.py still gives the times.
Under valgrind OpenSSL takes a generic path (no SHA-NI), so the floor weighs
more here than on the real CPU: compare builds, not the ratio to the floor.
Needs valgrind (apt-get install valgrind); about a minute per build.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
_LIBPYTHON = re.compile(r"^\s*([\d,]+)\s.*\[[^\]]*libpython[^\]]*\]\s*$")


def child(mode: str, key_path: str, size: int, count: int) -> None:
    """The measured process: ``count`` verifications (or floor operations) of one message."""
    sys.path.insert(0, str(HERE))
    import mailseal
    from bench_core import floor_ops, make_message
    from mailseal.core.keymaterial import load_private_key
    from mailseal.dns.memory import InMemoryResolver

    key = load_private_key(Path(key_path).read_bytes())
    message = make_message(size)
    record = f"v=DKIM1; k={key.key_type}; p={key.public_key_b64()}"
    resolver = InMemoryResolver({"s._domainkey.example.com": record})
    now = 1_767_225_600
    signed = mailseal.sign(message, key=key, domain="example.com", selector="s", now=now) + message
    if mode == "mailseal":
        for _ in range(count):
            assert mailseal.verify_sync(signed, resolver=resolver, now=now).passed
    else:
        verify = floor_ops(key, message)[1]
        for _ in range(count):
            verify()


def counts(src: str, mode: str, key_path: str, size: int, count: int) -> tuple[int, int]:
    """(all instructions, those in libpython) of one child run under callgrind."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "callgrind.out")
        env = {**os.environ, "PYTHONPATH": src, "PYTHONHASHSEED": "0"}
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
                   __file__, "--child", mode, key_path, str(size), str(count)]  # fmt: skip
        subprocess.run(command, env=env, check=True, capture_output=True)
        report = subprocess.run(
            ["callgrind_annotate", out], check=True, capture_output=True, text=True
        ).stdout
    found = re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", report)
    if found is None:
        raise RuntimeError("callgrind_annotate printed no program total")
    total = int(found.group(1).replace(",", ""))
    python = sum(
        int(m.group(1).replace(",", "")) for line in report.splitlines() if (m := _LIBPYTHON.match(line))
    )
    return total, python


def per_operation(src: str, mode: str, key_path: str, size: int, loops: int) -> tuple[float, float]:
    """Instructions per operation, all and in libpython: (1 + loops) runs minus 1 run."""
    once = counts(src, mode, key_path, size, 1)
    many = counts(src, mode, key_path, size, 1 + loops)
    return (many[0] - once[0]) / loops, (many[1] - once[1]) / loops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000, help="message size in bytes (default 20000)")
    parser.add_argument("--loops", type=int, default=300, help="operations counted per run (default 300)")
    parser.add_argument("--baseline", help="another src folder to count too (e.g. main's)")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(HERE.parent / "src"))
    from mailseal.core.algorithms import KeyType
    from mailseal.core.keymaterial import generate_private_key

    builds = {"this tree": str(HERE.parent / "src")}
    if args.baseline:
        builds["baseline"] = str(Path(args.baseline).resolve())
    with tempfile.TemporaryDirectory() as folder:
        key_path = os.path.join(folder, "key.pem")
        Path(key_path).write_bytes(generate_private_key(KeyType.RSA, 2048).to_pem())
        os.chmod(key_path, 0o600)
        print(f"RSA-2048, relaxed/relaxed, {args.size}-byte message; instructions per verification")
        print(f"{'build':10} {'what':9} {'all':>11} {'libpython':>11}")
        floor_all, _ = per_operation(builds["this tree"], "floor", key_path, args.size, args.loops)
        print(f"{'':10} {'floor':9} {floor_all:11,.0f} {'':>11}")
        for name, src in builds.items():
            ours_all, ours_python = per_operation(src, "mailseal", key_path, args.size, args.loops)
            print(f"{name:10} {'mailseal':9} {ours_all:11,.0f} {ours_python:11,.0f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        raise SystemExit(main())
