"""OpenDKIM (Debian ``opendkim``) run as a real milter on loopback, for end-to-end tests and benchmarks.

``OpenDKIMMilter`` writes an ``opendkim.conf`` with a KeyTable and a
``refile:`` SigningTable into a fresh directory under /tmp and runs
``opendkim -f -x CONF`` in its own process group, listening on
``inet:PORT@127.0.0.1`` or on a unix socket there. The address stays the same
across :meth:`kill` and :meth:`start`, so a Postfix configured with
:attr:`postfix_spec` finds the milter again after a restart.

Keys sit under /tmp, which OpenDKIM calls unsafe (it then refuses every
message), hence ``RequireSafeKeys no``. For verifying without real DNS,
``test_dns`` gives OpenDKIM's ``TestDNSData`` records; ``nameserver`` instead
sends its lookups to a loopback DNS server (through libunbound's forwarder).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

from support.managed import ManagedServer, stop_process_group
from support.postfix import LOOPBACK, free_tcp_port

OPENDKIM = "/usr/sbin/opendkim"


def opendkim_available() -> bool:
    """Whether the ``opendkim`` milter binary is installed (Debian ``opendkim``)."""
    return os.access(OPENDKIM, os.X_OK)


@dataclass(frozen=True)
class SigningKey:
    """One KeyTable entry: ``name domain:selector:keyfile``; the key as PKCS#8 PEM (RSA or Ed25519)."""

    name: str
    domain: str
    selector: str
    private_key_pem: bytes


class MilterStartError(RuntimeError):
    """The milter did not come up; the message carries its output."""


def _terminate(process: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal the milter's process group and reap it.

    SIGKILL by default: OpenDKIM has nothing to flush here, and on SIGTERM
    libmilter takes about 5 s to notice (its listener polls with a 5 s timeout).
    """
    stop_process_group(process, sig=sig, grace=10)


def _cleanup(holder: list[subprocess.Popen[bytes]], workdir: Path) -> None:
    for process in holder:
        _terminate(process)
    shutil.rmtree(workdir, ignore_errors=True)


def unix_socket_listening(path: Path) -> bool:
    """Whether a listening unix socket is bound at ``path`` (from /proc/net/unix, no connect)."""
    wanted = str(path)
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7] == wanted and fields[3] == "00010000":
            return True
    return False


def tcp_listening(port: int) -> bool:
    """Whether a socket listens on 127.0.0.1:port (from /proc/net/tcp, no connect)."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":
            return True
    return False


class OpenDKIMMilter(ManagedServer):
    """``opendkim -f -x CONF`` on loopback; a context manager.

    ``keys`` fill the KeyTable; ``signing_table`` is a list of (sender
    pattern, key name) lines for the ``refile:`` SigningTable (default: every
    key for ``*@its-domain``). ``mode`` is OpenDKIM's Mode (``s``, ``v``,
    ``sv``); clients in ``internal_hosts`` (or SASL-authenticated ones) get
    their mail signed, others verified. ``extra`` adds or overrides
    configuration lines (``{"OversignHeaders": "From"}``).
    """

    def __init__(
        self,
        *,
        keys: Sequence[SigningKey] = (),
        signing_table: Sequence[tuple[str, str]] | None = None,
        mode: str = "sv",
        socket: Literal["inet", "unix"] = "inet",
        canonicalization: str = "relaxed/relaxed",
        internal_hosts: Sequence[str] = ("127.0.0.1",),
        authserv_id: str = "mx.mailseal.test",
        test_dns: Mapping[str, str] | None = None,
        nameserver: tuple[str, int] | None = None,
        extra: Mapping[str, str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        """Prepare (not start); ``with OpenDKIMMilter(...) as milter`` or start()/stop()."""
        if test_dns is not None and nameserver is not None:
            raise ValueError("give test_dns or nameserver, not both")
        self.keys = list(keys)
        self.signing_table = (
            list(signing_table) if signing_table is not None else [(f"*@{k.domain}", k.name) for k in keys]
        )
        self.mode = mode
        self.socket_kind = socket
        self.canonicalization = canonicalization
        self.internal_hosts = list(internal_hosts)
        self.authserv_id = authserv_id
        self.test_dns = dict(test_dns) if test_dns is not None else None
        self.nameserver = nameserver
        self.extra = dict(extra or {})
        self.startup_timeout = startup_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="ms-odkim-", dir="/tmp"))
        # Postfix's smtpd (user postfix) must reach the unix socket in here.
        self.workdir.chmod(0o755)
        self.port = free_tcp_port() if socket == "inet" else 0
        self._processes: list[subprocess.Popen[bytes]] = []
        self._finalizer = weakref.finalize(self, _cleanup, self._processes, self.workdir)
        self._write_config()

    # ------------------------------------------------------------------ addresses

    @property
    def socket_path(self) -> Path:
        """The unix socket (``socket="unix"``)."""
        return self.workdir / "milter.sock"

    @property
    def postfix_spec(self) -> str:
        """The milter address as Postfix's ``smtpd_milters`` takes it."""
        if self.socket_kind == "inet":
            return f"inet:{LOOPBACK}:{self.port}"
        return f"unix:{self.socket_path}"

    @property
    def config_path(self) -> Path:
        """The opendkim.conf written for this milter."""
        return self.workdir / "opendkim.conf"

    @property
    def log_path(self) -> Path:
        """OpenDKIM's stdout and stderr."""
        return self.workdir / "opendkim.log"

    @property
    def pid(self) -> int | None:
        """The running opendkim process, if any."""
        live = [p for p in self._processes if p.poll() is None]
        return live[-1].pid if live else None

    # ------------------------------------------------------------------ configuration

    def _write_config(self) -> None:
        keytable, signingtable = [], []
        for key in self.keys:
            if not re.fullmatch(r"[A-Za-z0-9._-]+", key.name + key.domain + key.selector):
                raise ValueError(f"unsafe KeyTable entry {key}")
            path = self.workdir / f"{key.name}.key"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(key.private_key_pem)  # PKCS#8 PEM, RSA or Ed25519
            keytable.append(f"{key.name} {key.domain}:{key.selector}:{path}\n")
        for pattern, name in self.signing_table:
            signingtable.append(f"{pattern} {name}\n")
        (self.workdir / "keytable").write_text("".join(keytable))
        (self.workdir / "signingtable").write_text("".join(signingtable))
        (self.workdir / "internalhosts").write_text("".join(f"{h}\n" for h in self.internal_hosts))
        socket_value = (
            f"inet:{self.port}@{LOOPBACK}" if self.socket_kind == "inet" else f"local:{self.socket_path}"
        )
        settings = {
            "Syslog": "no",
            "Mode": self.mode,
            "Socket": socket_value,
            "UMask": "000",
            "KeyTable": f"file:{self.workdir / 'keytable'}",
            "SigningTable": f"refile:{self.workdir / 'signingtable'}",
            "InternalHosts": f"file:{self.workdir / 'internalhosts'}",
            "Canonicalization": self.canonicalization,
            "RequireSafeKeys": "no",
            "AuthservID": self.authserv_id,
            "MultipleSignatures": "yes",
        }
        if self.test_dns is not None:
            lines = "".join(f"{name.rstrip('.')} {text}\n" for name, text in self.test_dns.items())
            (self.workdir / "dns.txt").write_text(lines)
            settings["TestDNSData"] = f"file:{self.workdir / 'dns.txt'}"
        if self.nameserver is not None:
            host, port = self.nameserver
            (self.workdir / "unbound.conf").write_text(
                'server:\n  do-not-query-localhost: no\n  module-config: "iterator"\n'
                f'forward-zone:\n  name: "."\n  forward-addr: {host}@{port}\n'
            )
            settings["UnboundConfigFile"] = str(self.workdir / "unbound.conf")
        settings.update(self.extra)
        self.config_path.write_text("".join(f"{key} {value}\n" for key, value in settings.items()))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Start opendkim (again, on the same address) and wait until it listens."""
        if self.pid is not None:
            raise RuntimeError("opendkim already running")
        if not opendkim_available():
            raise MilterStartError(f"{OPENDKIM} is not installed (apt-get install opendkim)")
        if self.socket_kind == "unix":
            self.socket_path.unlink(missing_ok=True)  # left behind by a killed milter
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [OPENDKIM, "-f", "-x", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        self._processes.append(process)
        deadline = time.monotonic() + self.startup_timeout
        while not self._listening():
            if process.poll() is not None or time.monotonic() > deadline:
                _terminate(process)
                raise MilterStartError(f"opendkim did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.01)
        return self

    def _listening(self) -> bool:
        if self.socket_kind == "inet":
            return tcp_listening(self.port)
        return unix_socket_listening(self.socket_path)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the running opendkim abruptly (SIGKILL by default), as a crash would."""
        for process in self._processes:
            _terminate(process, sig)
        self._processes.clear()

    def stop(self) -> None:
        """Stop opendkim and remove its directory."""
        self._finalizer()
