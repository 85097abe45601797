"""A private Dovecot IMAP server on loopback (implicit TLS, a self-signed certificate made here).

Everything lives in a fresh directory under /tmp: configuration, certificate,
password file, run and state directories, the log and the mail (Maildir).
The master runs in the foreground in its own process group and is stopped,
with its children, on exit. It listens only on 127.0.0.1 at a free port and
serves one user (``reports`` / a random password); mail processes run as
``nobody``, so the test never needs a real account. Messages are put into the
mailbox over IMAP APPEND by the test, as a delivery would.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from support.managed import ManagedServer
from support.postfix import free_tcp_port

DOVECOT = "/usr/sbin/dovecot"
LOOPBACK = "127.0.0.1"


def dovecot_available() -> bool:
    """Debian's dovecot-imapd installed, and we are root (Dovecot's master must start as root)."""
    return os.access(DOVECOT, os.X_OK) and Path("/usr/lib/dovecot/imap").exists() and os.geteuid() == 0


def make_certificate(folder: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed P-256 certificate for ``name`` and 127.0.0.1; (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class DovecotServer(ManagedServer):
    """``with DovecotServer() as imap:`` -> imap.port, imap.user, imap.password, imap.cafile."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ms-dovecot-"))
        self.root.chmod(0o755)  # the mail processes (nobody) must reach the Maildir below
        self.user = "reports"
        self.password = secrets.token_hex(12)
        self.port = 0
        self.cafile = self.root / "cert.pem"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """Dovecot's log (every service logs here)."""
        return self.root / "dovecot.log"

    def _config(self) -> Path:
        cert, key = make_certificate(self.root)
        home = self.root / "home"
        home.mkdir()
        shutil.chown(home, "nobody", "nogroup")
        for sub in ("run", "state"):
            (self.root / sub).mkdir()
        (self.root / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        config = self.root / "dovecot.conf"
        config.write_text(
            f"""
base_dir = {self.root}/run
state_dir = {self.root}/state
log_path = {self.log_path}
instance_name = ms-dovecot-{self.port}
protocols = imap
listen = {LOOPBACK}
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_uid = nobody
mail_gid = nogroup
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.root}/passwd
}}
userdb {{
  driver = static
  args = home={home}/%u
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = {LOOPBACK}
    port = {self.port}
    ssl = yes
  }}
  process_limit = 8
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
"""
        )
        return config

    def start(self) -> Self:
        """Start ``dovecot -F`` and wait until the TLS port answers with an IMAP greeting."""
        self.port = free_tcp_port()
        config = self._config()
        with (self.root / "stderr.log").open("wb") as stderr:
            self._process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        context = ssl.create_default_context(cafile=str(self.cafile))
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"dovecot exited {self._process.returncode}: {self.stderr_text()}{self.log_text()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection((LOOPBACK, self.port), timeout=1) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                if tls.recv(100).startswith(b"* OK"):
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dovecot did not answer on {self.port}: {self.log_text()}")

    def stderr_text(self) -> str:
        """What the master printed on stderr."""
        try:
            return (self.root / "stderr.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the master and its process group; remove the directory."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
            self._process = None
        shutil.rmtree(self.root, ignore_errors=True)
