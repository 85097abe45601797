"""Instructions per message of the milter, counted by callgrind: an A/B that a busy machine cannot blur.

    python benchmarks/bench_milter_callgrind.py [--modes sign,verify] [--loops asyncio,uvloop]
        [--messages 100] [--baseline SRC]

Runs ``mailseal milter --workers 1`` under ``valgrind --tool=callgrind``, sends
30 messages to warm up (imports, the first DNS lookup), zeroes the counters
(``callgrind_control -z``), sends ``--messages`` more the way Postfix does (see
bench_milter_loopback.py) and dumps the counters: user-space instructions per
message, all libraries included (Python, OpenSSL, libc). Kernel work (system
calls) is not counted; wall time under valgrind is meaningless. With
``--baseline SRC`` each configuration also runs from another ``src`` folder
(e.g. ``git archive`` of main) so two builds are compared in one go.

Instruction counts do not depend on load, so they decide A/B questions while
others use the machine; CPU time still needs bench_milter.py. Note that under
valgrind OpenSSL may take a generic code path, so RSA signing weighs more here
than on the real CPU: compare builds, not modes. Needs valgrind
(apt-get install valgrind); about a minute per configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import dns.message
import dns.rrset

import mailseal
from bench_milter_loopback import DOMAIN, SELECTOR, bench_config, message, run
from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import PrivateKey, generate_private_key
from support.dnsserver import ScriptedDnsServer, txt_strings

SOURCE = str(Path(mailseal.__file__).resolve().parents[1])


def count(folder: Path, key: PrivateKey, nameserver: str, mode: str, loop: str, source: str, n: int) -> float:
    """Instructions per message for one configuration."""
    path = bench_config(folder, key, nameserver, f"{mode}-{loop}.toml")
    out = folder / f"callgrind-{mode}-{loop}.out"
    env = dict(os.environ, MAILSEAL_EVENT_LOOP=loop, PYTHONPATH=source)
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m", "mailseal"]
    process = subprocess.Popen(
        [*argv, "milter", "--config", str(path), "--workers", "1"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stderr is not None
    try:
        port = None
        for line in process.stderr:
            found = re.search(rb"listening on inet:(\d+)@", line)
            if found:
                port = int(found.group(1))
                break
        if port is None:
            raise RuntimeError("the milter did not start under valgrind")
        stderr = process.stderr
        threading.Thread(target=lambda: [None for _ in stderr], daemon=True).start()
        data = message(4096)
        if mode == "verify":
            data = mailseal.sign(data, key=key, domain=DOMAIN, selector=SELECTOR) + data
        run(("127.0.0.1", port), data, 30, 1, mode)
        subprocess.run(["callgrind_control", "-z", str(process.pid)], capture_output=True, check=True)
        run(("127.0.0.1", port), data, n, 1, mode)
        subprocess.run(["callgrind_control", "-d", str(process.pid)], capture_output=True, check=True)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    dumps = sorted(glob.glob(f"{out}.*"), key=os.path.getmtime)
    text = Path(dumps[0]).read_text()  # the first dump: the counters for the n measured messages
    total = re.search(r"^(?:summary|totals): (\d+)", text, re.MULTILINE)
    assert total is not None, "no totals in the callgrind dump"
    return int(total.group(1)) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--modes", default="sign,verify", help="comma-separated: sign, verify")
    parser.add_argument("--loops", default="asyncio,uvloop", help="comma-separated: asyncio, uvloop")
    parser.add_argument("--baseline", metavar="SRC", help="also count a build from this src folder")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    key = generate_private_key(KeyType.RSA, 2048)
    record = f"v=DKIM1; k=rsa; p={key.public_key_b64()}"

    def answer(query: dns.message.Message, _transport: str) -> dns.message.Message:
        reply = dns.message.make_response(query)
        name = query.question[0].name
        reply.answer.append(dns.rrset.from_text(name, 86400, "IN", "TXT", txt_strings(record)))
        return reply

    builds = {"this": SOURCE, **({"baseline": args.baseline} if args.baseline else {})}
    print(f"Python {sys.version.split()[0]}; {args.messages} messages of 4 KB; k instructions per message")
    print(f"{'mode':7} {'loop':8} " + " ".join(f"{name:>10}" for name in builds))
    with ScriptedDnsServer(answer) as nameserver, contextlib.ExitStack() as stack:
        for mode in args.modes.split(","):
            for loop in args.loops.split(","):
                counts = []
                for source in builds.values():
                    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ms-callgrind-")))
                    counts.append(
                        count(folder, key, nameserver.nameserver, mode, loop, source, args.messages)
                    )
                print(f"{mode:7} {loop:8} " + " ".join(f"{c / 1000:>10.0f}" for c in counts), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
