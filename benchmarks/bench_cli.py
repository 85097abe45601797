"""The command line at its edges: a dead nameserver and a 60 MB message.

Run: PYTHONPATH=src python benchmarks/bench_cli.py [--src OTHER_SRC ...] [--timeout SECONDS]

For each tree (this one, and any other checkout's src/ given, to compare
before/after in the same run) it prints:

* the wall time of ``mailseal verify`` for one message with 8 signatures and
  for three such files, when the nameserver never answers (a loopback UDP
  socket): concurrent lookups cost one timeout, sequential ones one per
  signature;
* the peak RSS (the child's own ``ru_maxrss``, from ``os.wait4``) to sign and
  to verify a 60 MiB message with LF line ends.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(HERE))

import mailseal  # noqa: E402 - after choosing which tree to import
from mailseal.core.algorithms import KeyType  # noqa: E402
from mailseal.core.keyrecord import KeyRecord, zone_file_record  # noqa: E402
from mailseal.keys.files import write_private_key  # noqa: E402

MESSAGE = b"From: a@example.com\r\nTo: b@example.net\r\nSubject: x\r\n\r\nhello\r\n"
LINE = b"0123456789 abcdefghijklmnopqrstuvwxyz  ABCDEFGHIJKLMNOPQRSTUVWXYZ \t\n"


# Linux carries a process's peak RSS across fork and exec, so a child of this
# (larger) process would report our peak: a small launcher starts the command and
# reports that grandchild's own ru_maxrss from os.wait4.
_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:], stdin=0, stdout=1, stderr=2)
_, status, usage = os.wait4(child.pid, 0)
os.write(int(sys.argv[1]), str(usage.ru_maxrss).encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _child(src: str, args: list[str], stdout: int = subprocess.DEVNULL) -> tuple[int, float, int]:
    """Exit status, wall seconds and peak RSS (MiB) of ``python -m mailseal ARGS`` on tree ``src``."""
    report_read, report_write = os.pipe()
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, str(report_write), sys.executable, "-m", "mailseal", *args],
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": src},
        pass_fds=(report_write,),
    )
    os.close(report_write)
    status = child.wait()
    elapsed = time.perf_counter() - started
    peak = int(os.read(report_read, 64) or b"0")
    os.close(report_read)
    return status, elapsed, peak // 1024


def main() -> None:
    """Measure every tree on the same files, in one run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", action="append", default=[], help="another src/ folder to measure too")
    parser.add_argument("--timeout", type=float, default=2.0, help="--timeout given to verify (seconds)")
    args = parser.parse_args()
    trees = [str(HERE), *args.src]
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        key = mailseal.generate_private_key(KeyType.ED25519)
        key_path = folder / "ed.example.com.key"
        write_private_key(key_path, key)
        zone = folder / "example.com.zone"
        record = KeyRecord.for_key(key.key_type, key.public_key_b64()).to_txt_strings()
        zone.write_text(
            "$ORIGIN example.com.\n@ 300 IN SOA ns hostmaster 1 3600 600 86400 300\n"
            + zone_file_record("ed._domainkey", record)
            + "\n"
        )
        files = []
        for n in range(3):
            requests = [
                mailseal.signing_request(key=key, domain=f"d{n}.example", selector=f"s{i}") for i in range(8)
            ]
            path = folder / f"eight{n}.eml"
            path.write_bytes(mailseal.sign_many(MESSAGE, requests) + MESSAGE)
            files.append(str(path))
        big = folder / "big.eml"
        with big.open("wb") as out:
            out.write(MESSAGE.replace(b"\r\n", b"\n"))
            block = LINE * (1 << 14)
            for _ in range((60 << 20) // len(block) + 1):
                out.write(block)
        dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        dead.bind(("127.0.0.1", 0))
        server = f"127.0.0.1:{dead.getsockname()[1]}"
        print(
            "| tree | 8 sigs, dead DNS (s) | 3 files x 8 sigs (s) | sign 60 MiB peak RSS | verify 60 MiB peak RSS |"
        )
        print("| --- | ---: | ---: | ---: | ---: |")
        for tree in trees:
            verify = ["verify", "--nameserver", server, "--timeout", str(args.timeout)]
            _, one, _ = _child(tree, [*verify, files[0]])
            _, three, _ = _child(tree, [*verify, *files])
            signed = folder / "big-signed.eml"
            with signed.open("wb") as out:
                sign_args = [
                    "sign",
                    "--key",
                    str(key_path),
                    "--domain",
                    "example.com",
                    "--selector",
                    "ed",
                    str(big),
                ]
                _, _, sign_rss = _child(tree, sign_args, stdout=out.fileno())
            _, _, verify_rss = _child(tree, ["verify", "--dns-zone", str(zone), str(signed)])
            print(f"| {tree} | {one:.1f} | {three:.1f} | {sign_rss} MiB | {verify_rss} MiB |")
        dead.close()
        print(f"(verify --timeout {args.timeout}; the 60 MiB message has LF line ends)")


if __name__ == "__main__":
    main()
