"""A private PostgreSQL cluster for tests: initdb in a temp dir, unix socket only, run as an unprivileged user.

The postgres binaries refuse to run as root, so when the tests run as root the
cluster belongs to ``nobody`` (its folder is made for it); otherwise it runs as
whoever runs the tests. It listens on a unix socket in its own folder only
(``listen_addresses = ''``): no port to collide with the other servers the suite
starts. ``fsync = off`` keeps it quick; the tests kill clients, never the server.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from support.managed import ManagedServer
from support.required import need

SUPERUSER = "mailseal_admin"


def postgres_bin() -> Path | None:
    """The newest installed /usr/lib/postgresql/N/bin holding initdb, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def require_postgres() -> Path:
    """The binaries' folder; skip (fail under MAILSEAL_REQUIRE_PEERS=1) when PostgreSQL or psycopg is missing."""
    where = postgres_bin()
    need(where is not None, "PostgreSQL", "apt-get install postgresql")
    need(importlib.util.find_spec("psycopg") is not None, "psycopg", "pip install 'psycopg[binary]'")
    assert where is not None
    return where


class PostgresServer(ManagedServer):
    """One private cluster; ``dsn(dbname)`` is a libpq URL over its socket."""

    def __init__(self, bindir: Path, settings: dict[str, str] | None = None) -> None:
        """Prepare (nothing runs until :meth:`start`); ``settings`` are extra ``-c NAME=VALUE``."""
        self.bindir = bindir
        self.settings = dict(settings or {})
        # A short path of our own: unix socket paths are limited to ~100 characters.
        self.root = Path(tempfile.mkdtemp(prefix="mspg-"))
        self.data = self.root / "data"
        self._log = self.root / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._user: str | None = "nobody" if os.geteuid() == 0 else None
        self._initialised = False

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self._log

    def _owned(self, path: Path) -> None:
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _init(self) -> None:
        os.chmod(self.root, 0o755)  # noqa: S103 - the socket must be reachable by the tests' clients
        self._owned(self.root)
        subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
            check=True,
            capture_output=True,
            user=self._user,
            cwd=self.root,
        )
        self._initialised = True

    def start(self) -> Self:
        """Start the server (initdb first, once) and wait until it accepts connections."""
        if not self._initialised:
            self._init()
        log = self._log.open("ab")
        self._owned(self._log)
        self.process = subprocess.Popen(
            [
                str(self.bindir / "postgres"),
                "-D",
                str(self.data),
                "-k",
                str(self.root),
                "-c",
                "listen_addresses=",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
                *(f"{flag}" for name, value in self.settings.items() for flag in ("-c", f"{name}={value}")),
            ],
            stdout=log,
            stderr=log,
            user=self._user,
            cwd=self.root,
            start_new_session=True,
        )
        log.close()
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n{self.log_text()}")
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start:\n{self.log_text()}") from None
                time.sleep(0.05)

    def dsn(self, dbname: str, user: str = SUPERUSER) -> str:
        """A libpq URL for ``dbname`` over this cluster's socket."""
        return f"postgresql://{user}@/{dbname}?host={self.root}"

    def create_database(self, name: str) -> str:
        """Create a fresh database and return its URL."""
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')  # a test-chosen name
        return self.dsn(name)

    def halt(self) -> None:
        """Stop the server (fast shutdown: clients are cut off), keeping its data for :meth:`start`."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)
