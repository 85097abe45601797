"""``mailseal milter`` as a subprocess: started on port 0, its log read live, stopped by signal."""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import mailseal

SOURCE = str(Path(mailseal.__file__).resolve().parents[1])


class MilterProcess:
    """One ``python -m mailseal milter`` process; ``address`` is parsed from its first log line."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        startup: float = 20.0,
        nofile: tuple[int, int] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        """``nofile``: the (soft, hard) descriptor limit the process starts with; ``extra_env``: added variables."""
        env = dict(os.environ, PYTHONPATH=SOURCE + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.update(extra_env or {})

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, nofile)

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailseal", "milter", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            preexec_fn=limit if nofile is not None else None,
        )
        self.lines: list[str] = []
        self.stdout = b""
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        line = self.wait_for(r"listening on (\S+)", startup)
        match = re.search(r"listening on inet:(\d+)@(\S+)", line or "")
        if match is None:
            self.stop()
            raise RuntimeError("the milter did not start:\n" + self.log)
        self.address = (match.group(2), int(match.group(1)))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 60.0, *, start: int = 0) -> str | None:
        """The first log line from ``start`` on matching ``pattern``, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        with self._changed:
            while True:
                for line in self.lines[start:]:
                    if regex.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return None
                self._changed.wait(min(remaining, 0.1))

    def mark(self) -> int:
        """A position in the log, for ``wait_for(start=...)``."""
        with self._changed:
            return len(self.lines)

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        if self.proc.stdout.closed:
            return self.proc.wait()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait()
        self._reader.join(5)
        self.stdout = self.proc.stdout.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return status

    def __enter__(self) -> MilterProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def children_of(pid: int) -> list[int]:
    """The live (not zombie) child processes of ``pid``, read from /proc: the milter's workers."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def wait_for_children(pid: int, count: int, *, without: int = 0, timeout: float = 60) -> list[int]:
    """Wait until ``pid`` has ``count`` workers other than ``without``; AssertionError at ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [child for child in children_of(pid) if child != without]
        if len(found) == count:
            return found
        time.sleep(0.02)
    raise AssertionError(f"expected {count} worker processes, found {children_of(pid)}")
