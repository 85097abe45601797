"""A Knot server with a TSIG key plus the keys.toml that points mailseal at it, for key-lifecycle tests."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import dns.query
import dns.rcode
import dns.rdatatype
import dns.rdtypes.txtbase
import dns.update

from mailseal.cli.main import main
from support.dnsserver import KnotServer, TsigKey, soa_header
from support.keyflow import DOMAIN


@dataclass
class KeysSetup:
    """One private knotd for ``example.test`` and a mailseal configuration that publishes to it."""

    knot: KnotServer
    tsig: TsigKey
    config: Path
    store: Path

    def cli(self, *args: str, now: int) -> tuple[int, str, str]:
        """Run ``mailseal keys ARGS --config ... --now NOW`` in this process; (status, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["keys", *args, "--config", str(self.config), "--now", str(now)])
        return status, out.getvalue(), err.getvalue()

    def served(self, name: str, server: KnotServer | None = None) -> set[str]:
        """The TXT texts ``server`` (default: the primary) serves at ``name``, strings joined."""
        reply = (server or self.knot).query(name, "TXT")
        if reply.rcode() != dns.rcode.NOERROR:
            return set()
        return {
            b"".join(rd.strings).decode()
            for rrset in reply.answer
            if rrset.rdtype == dns.rdatatype.TXT
            for rd in rrset
            if isinstance(rd, dns.rdtypes.txtbase.TXTBase)
        }

    def add_raw(self, name: str, *texts: str, server: KnotServer | None = None, ttl: int = 300) -> None:
        """Add TXT records behind mailseal's back (as an operator or another tool would)."""
        target = server or self.knot
        update = dns.update.UpdateMessage(
            f"{DOMAIN}.", keyring=self.tsig.keyring(), keyalgorithm="hmac-sha256"
        )
        for text in texts:
            update.add(
                f"{name}.", ttl, "TXT", " ".join(f'"{text[i : i + 255]}"' for i in range(0, len(text), 255))
            )
        reply = dns.query.tcp(update, target.address, port=target.port, timeout=3)
        assert reply.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(reply.rcode())

    def delete_raw(self, name: str, server: KnotServer | None = None) -> None:
        target = server or self.knot
        update = dns.update.UpdateMessage(
            f"{DOMAIN}.", keyring=self.tsig.keyring(), keyalgorithm="hmac-sha256"
        )
        update.delete(f"{name}.", "TXT")
        reply = dns.query.tcp(update, target.address, port=target.port, timeout=3)
        assert reply.rcode() == dns.rcode.NOERROR


class Primary(Protocol):
    """The primary server a keys.toml sends UPDATEs to: Knot or BIND."""

    @property
    def nameserver(self) -> str:
        """``IP:PORT``."""


def write_config(
    path: Path,
    knot: Primary,
    tsig: TsigKey,
    *,
    store: Path,
    authoritative: list[str] | None = None,
    extra: str = "",
    secret: str | None = None,
) -> Path:
    """keys.toml: the policy of :mod:`support.keyflow`, UPDATEs to ``knot`` (or named) with ``tsig``."""
    secret_file = path.parent / "tsig.secret"
    secret_file.write_text((secret or tsig.secret) + "\n")
    secret_file.chmod(0o600)
    servers = ", ".join(f'"{s}"' for s in (authoritative or [knot.nameserver]))
    path.write_text(
        f"""[keys]
store = "{store}"
algorithm = "ed25519"
rotate_every = "90d"
grace = "7d"
propagation_delay = "1h"
revoked_for = "2d"
ttl = 300
timeout = 3
authoritative = [{servers}]
resolvers = ["{knot.nameserver}"]
{extra}
[keys.publish]
primary = "{knot.nameserver}"
zone = "{DOMAIN}"
tsig_name = "{tsig.name}"
tsig_secret_file = "{secret_file}"
timeout = 3
"""
    )
    return path


@contextlib.contextmanager
def keys_setup(
    tmp_path: Path, zone_extra: str = "", *, dnssec: bool = False, update_limits: Sequence[str] = ()
) -> Iterator[KeysSetup]:
    """Start knotd for ``example.test`` (fresh storage) and write a config publishing to it."""
    tsig = TsigKey.generate()
    zone = soa_header(DOMAIN) + zone_extra
    with KnotServer(tmp_path, DOMAIN, zone, tsig, dnssec=dnssec, update_limits=update_limits) as knot:
        store = tmp_path / "data" / "keys.db"
        config = write_config(tmp_path / "keys.toml", knot, tsig, store=store)
        yield KeysSetup(knot, tsig, config, store)
