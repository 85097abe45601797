"""DNS servers for tests: a private knotd on loopback, and a scripted in-process responder."""

from __future__ import annotations

import base64
import os
import secrets
import selectors
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.txtbase
import dns.rrset
import dns.tsig
import dns.tsigkeyring

from support import ports
from support.managed import ManagedServer, stop_process_group

KNOTD = "/usr/sbin/knotd"
KNOTC = "/usr/sbin/knotc"
LOOPBACK = "127.0.0.1"


def knot_available() -> bool:
    """Whether knotd and knotc are installed (Debian: ``apt-get install knot``)."""
    return os.access(KNOTD, os.X_OK) and os.access(KNOTC, os.X_OK)


def soa_header(zone_name: str, *, ttl: int = 300, negative_ttl: int = 60, serial: int = 1) -> str:
    """The first lines of a zone file: $ORIGIN, $TTL, SOA and NS at the apex."""
    origin = zone_name.rstrip(".") + "."
    return (
        f"$ORIGIN {origin}\n"
        f"$TTL {ttl}\n"
        f"@ IN SOA ns hostmaster {serial} 3600 600 86400 {negative_ttl}\n"
        "@ IN NS ns\n"
        f"ns IN A {LOOPBACK}\n"
    )


def txt_strings(record: bytes | str) -> str:
    """Format a TXT record as quoted strings of at most 255 bytes (RFC 1035 §3.3.14) for a zone file."""
    data = record.encode() if isinstance(record, str) else record
    chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    quoted = []
    for chunk in chunks:
        escaped = chunk.replace(b"\\", b"\\\\").replace(b'"', b'\\"').decode("ascii")
        quoted.append(f'"{escaped}"')
    return "( " + "\n    ".join(quoted) + " )"


def free_port() -> int:
    """A loopback port free for both TCP and UDP right now (knotd needs both); see support.ports."""
    return ports.free_port(udp=True)


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key (RFC 8945) the server accepts for UPDATE (RFC 2136) on its zone."""

    name: str
    secret: str  # base64, as in knot.conf and dnspython keyrings
    algorithm: str = "hmac-sha256"

    @classmethod
    def generate(cls, name: str = "mailseal-test.") -> TsigKey:
        """A fresh random 256-bit key."""
        return cls(name, base64.b64encode(secrets.token_bytes(32)).decode("ascii"))

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        """The key as a dnspython keyring, for ``dns.update.UpdateMessage(keyring=...)``."""
        return dns.tsigkeyring.from_text({self.name: (self.algorithm, self.secret)})


class ServerStartError(RuntimeError):
    """knotd did not come up; the message carries its log."""


class _PortTaken(ServerStartError):
    """knotd could not have the port to itself; another port may work."""


def _stop_process(process: subprocess.Popen[bytes], cleanup: Sequence[Path]) -> None:
    """Stop knotd's process group and remove its directories (also run by a finalizer at exit)."""
    stop_process_group(process)
    for path in cleanup:
        shutil.rmtree(path, ignore_errors=True)


class KnotServer(ManagedServer):
    """A private authoritative knotd on 127.0.0.1 serving one zone, started and stopped by a test.

    Everything lives in fresh directories (Knot brings old records back from a
    reused journal). Config, zone files and the log go under ``tmpdir`` (or a
    temporary directory when ``None``); the control socket and PID file go
    under a short ``/tmp/ms-knot-*`` directory because unix socket paths are
    limited to about 100 bytes and knotd exits quietly when it cannot bind.
    knotd runs in the foreground in its own process group; a random
    ``identity``, read back with a CH TXT ``id.server.`` query over UDP and TCP,
    proves the answers come from this server and not from another process on
    the same port.

    Options: ``tsig_key`` allows UPDATE on the zone with that key;
    ``dnssec`` signs the zone automatically with one ECDSA P-256 key;
    ``servfail_zones`` are configured with no zone file, and Knot answers
    SERVFAIL for names in them; ``update_limits`` are extra lines for the
    update ACL (e.g. ``update-type: TXT``) to test least-privilege keys.
    """

    def __init__(
        self,
        tmpdir: str | os.PathLike[str] | None,
        zone_name: str,
        zone_text: str,
        tsig_key: TsigKey | None = None,
        *,
        dnssec: bool = False,
        servfail_zones: Sequence[str] = (),
        update_limits: Sequence[str] = (),
        startup_timeout: float = 10.0,
    ) -> None:
        """Prepare (but do not start) the server; use it as a context manager or call start()/stop()."""
        self.zone_name = zone_name.rstrip(".")
        self.zone_text = zone_text
        self.tsig_key = tsig_key
        self.dnssec = dnssec
        self.servfail_zones = tuple(z.rstrip(".") for z in servfail_zones)
        self.update_limits = tuple(update_limits)
        self.startup_timeout = startup_timeout
        self.identity = f"mailseal-test-{secrets.token_hex(8)}"
        self.address = LOOPBACK
        self.port = 0
        self._tmpdir = None if tmpdir is None else Path(tmpdir)
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[..., KnotServer] | None = None
        self._rundir = Path()
        self._workdir = Path()

    @property
    def nameserver(self) -> str:
        """``IP:PORT``, as DnsResolver takes it."""
        return f"{self.address}:{self.port}"

    @property
    def control_socket(self) -> Path:
        """knotc's socket (``knotc -s``)."""
        return self._rundir / "knot.sock"

    @property
    def zone_file(self) -> Path:
        """The zone file knotd serves (and rewrites after UPDATE or signing; ``knotc zone-flush``)."""
        return self._workdir / "zones" / f"{self.zone_name}.zone"

    @property
    def log_path(self) -> Path:
        """knotd's stdout and stderr."""
        return self._workdir / "knotd.log"

    def start(self) -> Self:
        """Start knotd on a free port and wait until it serves the zone (signed, with ``dnssec``)."""
        if self._process is not None:
            raise RuntimeError("server already started")
        if not knot_available():
            raise ServerStartError(f"{KNOTD} is not installed (apt-get install knot knot-dnsutils)")
        self._rundir = Path(tempfile.mkdtemp(prefix="ms-knot-", dir="/tmp"))
        cleanup = [self._rundir]
        if self._tmpdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="ms-knot-data-"))
            cleanup.append(self._workdir)
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="knot-", dir=self._tmpdir))
        try:
            if len(os.fsencode(self.control_socket)) >= 100:
                raise ServerStartError(f"control socket path too long for knotd: {self.control_socket}")
            (self._workdir / "zones").mkdir()
            (self._workdir / "db").mkdir()
            self.zone_file.write_text(self.zone_text)
            self._launch(cleanup)
        except BaseException:
            for path in cleanup:
                shutil.rmtree(path, ignore_errors=True)
            raise
        return self

    def _launch(self, cleanup: Sequence[Path]) -> None:
        problem = ""
        for _ in range(5):  # another process may take the port between free_port() and knotd's bind
            self.port = free_port()
            conf = self._workdir / "knot.conf"
            conf.write_text(self._config())
            with self.log_path.open("ab") as log:
                process = subprocess.Popen(
                    [KNOTD, "-c", str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    process_group=0,
                )
            self._process = process
            try:
                self._wait_ready(process)
            except BaseException as exc:
                _stop_process(process, ())
                self._process = None
                if not isinstance(exc, _PortTaken):
                    raise
                problem = str(exc)
                continue
            self._finalizer = weakref.finalize(self, _stop_process, process, tuple(cleanup))
            return
        raise ServerStartError(problem)

    def stop(self) -> None:
        """Stop knotd (SIGTERM to its process group) and remove the short-lived directories."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._process = None

    def knotc(self, *args: str) -> str:
        """Run ``knotc`` against this server and return its output (raises on failure)."""
        done = subprocess.run(
            [KNOTC, "-s", str(self.control_socket), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"knotc {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def stats(self) -> dict[str, int]:
        """mod-stats counters, e.g. ``stats()["mod-stats.request-protocol[tcp4]"]`` (0 when absent)."""
        counters: dict[str, int] = {}
        for line in self.knotc("stats").splitlines():
            key, sep, value = line.partition(" = ")
            if sep and value.strip().isdigit():
                counters[key.strip()] = int(value)
        return counters

    def query(
        self,
        name: str,
        rdtype: str = "TXT",
        *,
        rdclass: str = "IN",
        tcp: bool = False,
        want_dnssec: bool = False,
        timeout: float = 2.0,
    ) -> dns.message.Message:
        """Send one raw query to this server (for checks DnsResolver does not expose)."""
        query = dns.message.make_query(name, rdtype, rdclass, want_dnssec=want_dnssec)
        if tcp:
            return dns.query.tcp(query, self.address, timeout=timeout, port=self.port)
        return dns.query.udp(query, self.address, timeout=timeout, port=self.port)

    def _config(self) -> str:
        zone_lines = [f"  - domain: {self.zone_name}.", f'    file: "{self.zone_name}.zone"']
        sections = [
            "server:",
            f'    rundir: "{self._rundir}"',
            f'    identity: "{self.identity}"',
            f"    listen: {self.address}@{self.port}",
            "    udp-workers: 1",
            "    tcp-workers: 1",
            "    background-workers: 1",
            "log:",
            "  - target: stderr",
            "    any: info",
            "database:",
            f'    storage: "{self._workdir / "db"}"',
            "control:",
            f'    listen: "{self.control_socket}"',
        ]
        if self.tsig_key is not None:
            sections += [
                "key:",
                f"  - id: {self.tsig_key.name}",
                f"    algorithm: {self.tsig_key.algorithm}",
                f"    secret: {self.tsig_key.secret}",
                "acl:",
                "  - id: mailseal-update",
                f"    key: {self.tsig_key.name}",
                "    action: update",
                *(f"    {line}" for line in self.update_limits),
            ]
            zone_lines.append("    acl: mailseal-update")
        if self.dnssec:
            sections += [
                "policy:",
                "  - id: mailseal-ecdsa",
                "    algorithm: ecdsap256sha256",
                "    single-type-signing: on",
            ]
            zone_lines += ["    dnssec-signing: on", "    dnssec-policy: mailseal-ecdsa"]
        sections += [
            "template:",
            "  - id: default",
            f'    storage: "{self._workdir / "zones"}"',
            "    global-module: mod-stats",
            "zone:",
            *zone_lines,
        ]
        for zone in self.servfail_zones:  # no file is ever written for these
            sections += [f"  - domain: {zone}.", f'    file: "{zone}.zone"']
        return "\n".join(sections) + "\n"

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:  # e.g. the TCP port was taken: try another port
                raise _PortTaken(f"knotd exited with status {process.returncode}:\n{self.log_text()}")
            identity = self._identity()
            if identity not in (None, self.identity):
                raise _PortTaken(f"another server ({identity!r}) answers on port {self.port}")
            if identity is not None and self._zone_loaded():
                return
            time.sleep(0.01)
        raise ServerStartError(f"knotd not ready after {self.startup_timeout} s:\n{self.log_text()}")

    def _identity(self) -> str | None:
        """The identity the server on our port reports over UDP and TCP; None until both answer alike."""
        seen = set()
        for tcp in (False, True):
            try:
                reply = self.query("id.server.", "TXT", rdclass="CH", tcp=tcp, timeout=0.2)
            except (dns.exception.DNSException, OSError):
                return None
            seen.add(
                b"".join(
                    rd.strings[0]
                    for rrset in reply.answer
                    for rd in rrset
                    if isinstance(rd, dns.rdtypes.txtbase.TXTBase)
                ).decode(errors="replace")
            )
        return seen.pop() if len(seen) == 1 else f"mixed: {sorted(seen)}"

    def _zone_loaded(self) -> bool:
        try:
            reply = self.query(self.zone_name, "SOA", want_dnssec=self.dnssec, timeout=0.2)
        except (dns.exception.DNSException, OSError):
            return False
        if reply.rcode() != dns.rcode.NOERROR or not reply.flags & dns.flags.AA:
            return False
        if self.dnssec:
            return any(rrset.rdtype == dns.rdatatype.RRSIG for rrset in reply.answer)
        return True


Handler = Callable[[dns.message.Message, str], "dns.message.Message | bytes | None"]
"""Given a query and its transport ("udp" or "tcp"), return a reply, raw bytes, or None to stay silent."""


def txt_records(records: Mapping[str, str]) -> Handler:
    """A :class:`ScriptedDnsServer` handler publishing ``records`` (owner name -> TXT text), NXDOMAIN else.

    Owner names are matched lower-case, without the final dot; the mapping is
    read at each query, so a test may change it while the server runs.
    """

    def answer(query: dns.message.Message, _transport: str) -> dns.message.Message:
        reply = dns.message.make_response(query)
        qname = query.question[0].name
        text = records.get(qname.to_text(omit_final_dot=True).lower())
        if text is None:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        else:
            reply.answer.append(dns.rrset.from_text(qname, 300, "IN", "TXT", txt_strings(text)))
        return reply

    return answer


class ScriptedDnsServer:
    """A loopback UDP+TCP responder whose replies a test scripts (dnspython's nanonameserver idea).

    Lets unit tests provoke what real servers rarely do on demand: AD flags,
    SERVFAIL, malformed bytes, truncation, silence. Runs in a thread; records
    each query with its transport in :attr:`requests`.
    """

    def __init__(self, handler: Handler) -> None:
        """Prepare a server that answers with ``handler``; start it with ``with``."""
        self.handler = handler
        self.address = LOOPBACK
        self.port = 0
        self.requests: list[tuple[str, dns.message.Message]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sockets: list[socket.socket] = []

    @property
    def nameserver(self) -> str:
        """``IP:PORT``, as DnsResolver takes it."""
        return f"{self.address}:{self.port}"

    def __enter__(self) -> Self:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sockets = [udp, tcp]
        for _ in range(50):
            udp.bind((self.address, 0))
            self.port = udp.getsockname()[1]
            try:
                tcp.bind((self.address, self.port))
                break
            except OSError:
                udp.close()
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self._sockets[0] = udp
        tcp.listen(8)
        self._thread = threading.Thread(target=self._serve, name="scripted-dns", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for sock in self._sockets:
            sock.close()

    def _serve(self) -> None:
        udp, tcp = self._sockets
        with selectors.DefaultSelector() as selector:
            selector.register(udp, selectors.EVENT_READ)
            selector.register(tcp, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.05):
                    if key.fileobj is udp:
                        wire, peer = udp.recvfrom(65535)
                        reply = self._reply(wire, "udp")
                        if reply is not None:
                            udp.sendto(reply, peer)
                    else:
                        connection, _ = tcp.accept()
                        with connection:
                            self._serve_tcp(connection)

    def _serve_tcp(self, connection: socket.socket) -> None:
        connection.settimeout(2)
        try:
            length = struct.unpack("!H", _read_exactly(connection, 2))[0]
            reply = self._reply(_read_exactly(connection, length), "tcp")
            if reply is not None:
                connection.sendall(struct.pack("!H", len(reply)) + reply)
        except (OSError, EOFError):
            return

    def _reply(self, wire: bytes, transport: str) -> bytes | None:
        query = dns.message.from_wire(wire)
        self.requests.append((transport, query))
        reply = self.handler(query, transport)
        if isinstance(reply, dns.message.Message):
            return reply.to_wire(max_size=65535)
        return reply


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data
