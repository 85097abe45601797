"""dkimpy-milter (PyPI) run as a real milter on loopback, for benchmarks and end-to-end comparisons.

dkimpy-milter needs pymilter, which builds against libmilter (Debian
``libmilter-dev``, ``python3-dev``, ``gcc``). :func:`ensure_venv` makes a
dedicated virtualenv for it outside this project's environment. The milter
drops privileges to ``UserID`` after start, and a venv whose interpreter lives
under /root (pyenv's, for one) then crashes on its first import; this fixture
configures ``UserID root`` so that it does not drop them.

``dns_override`` is dkimpy-milter's ``DNSOverride``: the one TXT record every
key lookup answers, so verification needs no DNS server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from support.managed import ManagedServer
from support.opendkim_milter import MilterStartError, tcp_listening, unix_socket_listening
from support.postfix import LOOPBACK, free_tcp_port

DEFAULT_VENV = Path("/var/tmp/mailseal-bench/dkimpy-milter")
BUILD_DEBS = ("libmilter-dev", "python3-dev", "gcc")


def venv_binary(venv: Path = DEFAULT_VENV) -> Path:
    """The ``dkimpy-milter`` entry point inside ``venv``."""
    return venv / "bin" / "dkimpy-milter"


def ensure_venv(venv: Path = DEFAULT_VENV, *, log: Path | None = None) -> str | None:
    """Create ``venv`` with dkimpy-milter installed, unless it is there; None or why it failed."""
    if os.access(venv_binary(venv), os.X_OK):
        return None
    missing = [
        deb
        for deb in BUILD_DEBS
        if subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", deb], capture_output=True, text=True, check=False
        ).stdout.find("install ok installed")
        < 0
    ]
    if missing:
        return f"pymilter needs the Debian packages {' '.join(missing)} (apt-get install {' '.join(missing)})"
    python = sys.executable
    venv.parent.mkdir(parents=True, exist_ok=True)
    venv.parent.chmod(0o755)
    steps = [[python, "-m", "venv", str(venv)], [str(venv / "bin" / "pip"), "install", "-q", "dkimpy-milter"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=600, check=False)
        if log is not None:
            with log.open("a") as handle:
                handle.write(done.stdout + done.stderr)
        if done.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            return f"{' '.join(step[:3])} failed: {(done.stdout + done.stderr)[-1500:]}"
    return None


def _stop(holder: list[subprocess.Popen[bytes]], workdir: Path) -> None:
    for process in holder:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)


class DkimpyMilter(ManagedServer):
    """``dkimpy-milter CONF`` on loopback with one RSA key for one domain; a context manager.

    ``mode`` is dkimpy-milter's Mode (``s``, ``v``, ``sv``); ``sign_headers``
    its SignHeaders list (None: dkimpy's default set).
    """

    def __init__(
        self,
        *,
        private_key_pem: bytes,
        domain: str,
        selector: str,
        mode: str = "sv",
        socket: Literal["inet", "unix"] = "inet",
        canonicalization: str = "relaxed/relaxed",
        internal_hosts: Sequence[str] = ("127.0.0.1",),
        authserv_id: str = "mx.mailseal.test",
        sign_headers: Sequence[str] | None = None,
        dns_override: str | None = None,
        venv: Path = DEFAULT_VENV,
        startup_timeout: float = 20.0,
    ) -> None:
        """Write the configuration (not start); ``with DkimpyMilter(...) as milter``."""
        self.socket_kind = socket
        self.venv = venv
        self.startup_timeout = startup_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="ms-dkimpy-", dir="/tmp"))
        self.workdir.chmod(0o755)
        self.port = free_tcp_port() if socket == "inet" else 0
        self._processes: list[subprocess.Popen[bytes]] = []
        self._finalizer = weakref.finalize(self, _stop, self._processes, self.workdir)
        key = serialization.load_pem_private_key(private_key_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("this fixture signs with one RSA key")
        key_path = self.workdir / "signing.key"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                )
            )
        socket_value = f"inet:{self.port}@{LOOPBACK}" if socket == "inet" else f"local:{self.socket_path}"
        settings = {
            "Syslog": "no",
            "UserID": "root",
            "UMask": "0",
            "Mode": mode,
            "Socket": socket_value,
            "Domain": domain,
            "Selector": selector,
            "KeyFile": str(key_path),
            "Canonicalization": canonicalization,
            "InternalHosts": ",".join(internal_hosts),
            "AuthservID": authserv_id,
        }
        if sign_headers is not None:
            settings["SignHeaders"] = ",".join(sign_headers)
        if dns_override is not None:
            settings["DNSOverride"] = dns_override
        self.config_path.write_text("".join(f"{k} {v}\n" for k, v in settings.items()))

    @property
    def config_path(self) -> Path:
        """The dkimpy-milter.conf written for this milter."""
        return self.workdir / "dkimpy-milter.conf"

    @property
    def socket_path(self) -> Path:
        """The unix socket (``socket="unix"``)."""
        return self.workdir / "milter.sock"

    @property
    def postfix_spec(self) -> str:
        """The milter address as Postfix's ``smtpd_milters`` takes it."""
        return f"inet:{LOOPBACK}:{self.port}" if self.socket_kind == "inet" else f"unix:{self.socket_path}"

    @property
    def pid(self) -> int | None:
        """The running milter process, if any."""
        live = [p for p in self._processes if p.poll() is None]
        return live[-1].pid if live else None

    @property
    def log_path(self) -> Path:
        """What the milter prints goes here."""
        return self.workdir / "dkimpy-milter.log"

    def start(self) -> Self:
        """Start the milter and wait until it listens."""
        binary = venv_binary(self.venv)
        if not os.access(binary, os.X_OK):
            raise MilterStartError(f"{binary} missing: run support.dkimpy_milter.ensure_venv() first")
        if self.socket_kind == "unix":
            self.socket_path.unlink(missing_ok=True)
        with (self.workdir / "dkimpy-milter.log").open("ab") as log:
            process = subprocess.Popen(
                [str(binary), str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        self._processes.append(process)
        deadline = time.monotonic() + self.startup_timeout
        while not (
            tcp_listening(self.port)
            if self.socket_kind == "inet"
            else unix_socket_listening(self.socket_path)
        ):
            if process.poll() is not None or time.monotonic() > deadline:
                _stop([process], Path("/nonexistent"))
                raise MilterStartError(f"dkimpy-milter did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop the milter and remove its directory."""
        self._finalizer()
