"""What every server the tests start has in common: start/stop as a context manager, a log."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Self


class ManagedServer(ABC):
    """A test server: ``with Server(...) as s:`` starts it and always stops it."""

    @property
    @abstractmethod
    def log_path(self) -> Path:
        """Where the server writes its log."""

    @abstractmethod
    def start(self) -> Self:
        """Start and wait until it serves."""

    @abstractmethod
    def stop(self) -> None:
        """Stop and clean up; safe to call twice."""

    def log_text(self) -> str:
        """What the server logged so far (for failure messages); empty when there is none yet."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def stop_process_group(
    process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, grace: float = 5.0
) -> None:
    """Send ``sig`` to a server's process group, SIGKILL it after ``grace`` seconds; always reaped.

    For servers started with ``start_new_session=True``, so that workers the
    server forked go too. Nothing happens when the leader has already exited.
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
