"""``mailseal ARGV`` run in this process, with its own binary-capable stdin, stdout and stderr.

For CLI checks where the subprocess is not what is tested (a subprocess costs 2-3 s of
imports on a loaded machine; this costs nothing).
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass

from mailseal.cli.main import main


@dataclass(frozen=True)
class Done:
    """One finished command: its exit status, what it wrote to stdout (bytes) and stderr (text)."""

    status: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")


def mailseal(*argv: str, stdin: bytes | None = b"") -> Done:
    """Run one command; ``stdin`` is what it reads from standard input (None: closed, as with ``<&-``)."""
    out, err = io.BytesIO(), io.BytesIO()
    wrappers = (
        io.TextIOWrapper(io.BytesIO(stdin or b""), encoding="utf-8"),
        io.TextIOWrapper(out, encoding="utf-8", write_through=True),
        io.TextIOWrapper(err, encoding="utf-8", write_through=True),
    )
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = wrappers
    if stdin is None:
        sys.stdin = None  # what Python gives a process started with <&-
    try:
        status = main(list(argv))
    except SystemExit as exc:  # argparse: --help, and usage errors before main's own handling
        status = exc.code if isinstance(exc.code, int) else 1
    finally:
        for stream in wrappers[1:]:
            stream.flush()
        sys.stdin, sys.stdout, sys.stderr = saved
        for stream in wrappers:
            stream.detach()
    return Done(status, out.getvalue(), err.getvalue().decode("utf-8", "replace"))
