"""A private BIND 9 (named) on loopback serving one zone, for key-lifecycle tests against a second server.

The zone accepts TSIG-signed UPDATEs limited the way docs/keys.md
recommends for BIND (``update-policy { grant KEY subdomain _domainkey.ZONE.
TXT; }``): TXT records under ``_domainkey`` only. named runs in the
foreground (``-g``) with one worker thread in its own process group, with
fresh storage under a temporary folder, on a free port; a random
``server-id``, read back with a CH TXT ``id.server.`` query, proves the
answers come from this server.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Self

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdtypes.txtbase

from support.dnsserver import LOOPBACK, ServerStartError, TsigKey, free_port
from support.managed import ManagedServer, stop_process_group

NAMED = "/usr/sbin/named"


def bind_available() -> bool:
    """Whether named is installed (Debian: ``apt-get install bind9``)."""
    return os.access(NAMED, os.X_OK)


def _stop(process: subprocess.Popen[bytes], workdir: Path) -> None:
    stop_process_group(process)
    shutil.rmtree(workdir, ignore_errors=True)


class BindServer(ManagedServer):
    """named, primary for ``zone_name``, accepting UPDATEs of TXT records under ``_domainkey`` with ``tsig_key``."""

    def __init__(
        self, zone_name: str, zone_text: str, tsig_key: TsigKey, *, startup_timeout: float = 10.0
    ) -> None:
        """Prepare (but do not start) the server."""
        self.zone_name = zone_name.rstrip(".")
        self.zone_text = zone_text
        self.tsig_key = tsig_key
        self.startup_timeout = startup_timeout
        self.identity = f"mailseal-bind-{secrets.token_hex(8)}"
        self.address = LOOPBACK
        self.port = 0
        self._workdir = Path()
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[..., BindServer] | None = None

    @property
    def nameserver(self) -> str:
        """``IP:PORT``."""
        return f"{self.address}:{self.port}"

    @property
    def log_path(self) -> Path:
        """named's standard error (``-g`` logs there)."""
        return self._workdir / "named.log"

    def start(self) -> Self:
        """Start named on a free port and wait until it answers for the zone with authority."""
        if not bind_available():
            raise ServerStartError(f"{NAMED} is not installed (apt-get install bind9)")
        self._workdir = Path(tempfile.mkdtemp(prefix="ms-bind-"))
        (self._workdir / f"{self.zone_name}.zone").write_text(self.zone_text)
        problem = ""
        for _ in range(5):  # the port may be taken between free_port() and named's bind
            self.port = free_port()
            conf = self._workdir / "named.conf"
            conf.write_text(self._config())
            with self.log_path.open("ab") as log:
                process = subprocess.Popen(
                    [NAMED, "-g", "-4", "-n", "1", "-c", str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    process_group=0,
                )
            if self._ready(process):
                self._process = process
                self._finalizer = weakref.finalize(self, _stop, process, self._workdir)
                return self
            problem = self.log_text()
            _stop(process, Path("/nonexistent"))
        shutil.rmtree(self._workdir, ignore_errors=True)
        raise ServerStartError(f"named did not start:\n{problem}")

    def stop(self) -> None:
        """Stop named (SIGTERM to its process group) and remove its folder."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._process = None

    def query(
        self, name: str, rdtype: str = "TXT", *, rdclass: str = "IN", tcp: bool = False
    ) -> dns.message.Message:
        """One raw query to this server."""
        query = dns.message.make_query(name, rdtype, rdclass)
        if tcp:
            return dns.query.tcp(query, self.address, timeout=2, port=self.port)
        return dns.query.udp(query, self.address, timeout=2, port=self.port)

    def _config(self) -> str:
        work = self._workdir
        zone = self.zone_name
        key = self.tsig_key
        return f"""\
options {{
    directory "{work}";
    pid-file "{work}/named.pid";
    session-keyfile "{work}/session.key";
    managed-keys-directory "{work}";
    listen-on port {self.port} {{ {self.address}; }};
    listen-on-v6 {{ none; }};
    server-id "{self.identity}";
    recursion no;
    notify no;
    allow-transfer {{ none; }};
    dnssec-validation no;
}};
controls {{ }};
key "{key.name}" {{ algorithm {key.algorithm}; secret "{key.secret}"; }};
zone "{zone}" {{
    type primary;
    file "{work}/{zone}.zone";
    journal "{work}/{zone}.zone.jnl";
    update-policy {{ grant {key.name} subdomain _domainkey.{zone}. TXT; }};
}};
"""

    def _ready(self, process: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                ident = self.query("id.server.", "TXT", rdclass="CH", tcp=True)
                soa = self.query(self.zone_name, "SOA")
            except (dns.exception.DNSException, OSError):
                time.sleep(0.02)
                continue
            texts = {
                b"".join(rd.strings).decode(errors="replace")
                for rrset in ident.answer
                for rd in rrset
                if isinstance(rd, dns.rdtypes.txtbase.TXTBase)
            }
            if texts != {self.identity}:
                return False  # another server answers on this port
            if soa.rcode() == dns.rcode.NOERROR and soa.flags & dns.flags.AA:
                return True
            time.sleep(0.02)
        return False
