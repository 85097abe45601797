"""A fleet: two milter processes on one PostgreSQL store sign through Postfix while knotd serves the rotation.

Two ``mailseal milter`` processes, as two hosts would run them (each its own
configuration, KEK file copy and cache), sit behind two smtpd listeners of a
private Postfix. ``mailseal keys tick`` publishes to a private knotd and
records the rotation in a private PostgreSQL cluster. Then the database is
stopped mid-run: mail keeps being signed and delivered, none lost, no
tempfail, and a tick says why it cannot run. The database comes back; the
next rotation step reaches both milters without a restart or a signal.
Every delivered message is verified against knotd.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailseal import DKIMResult, verify_sync
from mailseal.dns.resolver import DnsResolver
from mailseal.keys.kek import add_kek
from support.clock import FIXED_NOW
from support.dnsserver import knot_available
from support.keyflow import DOMAIN
from support.knotkeys import KeysSetup, keys_setup
from support.milter_process import MilterProcess
from support.milter_store import store_tables
from support.postfix import PostfixInstance, postfix_available
from support.postgres import PostgresServer, require_postgres
from support.required import needs
from support.smtp_sink import SinkMessage

pytestmark = [
    pytest.mark.integration,
    needs(
        knot_available() and postfix_available(),
        "knotd and postfix",
        "apt-get install knot knot-dnsutils postfix",
    ),
]

HOUR = 3600
DAY = 86400
HOSTS = ("mx1", "mx2")
BATCH = 6  # messages per host per phase


@dataclass
class Fleet:
    setup: KeysSetup
    database: PostgresServer
    dsn: str
    postfix: PostfixInstance
    milters: dict[str, MilterProcess]

    def tick(self, now: int) -> tuple[int, str, str]:
        return self.setup.cli("tick", now=now)


def host_config(folder: Path, dsn: str, kek: Path) -> Path:
    """One host's milter configuration: its own KEK copy and key cache, the shared database."""
    folder.mkdir()
    own_kek = folder / "kek"
    shutil.copyfile(kek, own_kek)
    own_kek.chmod(0o600)
    path = folder / "milter.toml"
    tables = store_tables(
        DOMAIN, socket_spec="inet:0@127.0.0.1", key_check_interval=0.2, milter_settings="workers = 1"
    )
    path.write_text(
        f'[keys]\nstore = "{dsn}"\nkek_file = "{own_kek}"\ncache_file = "{folder / "keys-cache.json"}"\n'
        + tables
    )
    return path


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with PostgresServer(require_postgres()) as database, keys_setup(tmp_path) as setup:
        database.create_database("keys")
        dsn = database.dsn("keys")
        kek = tmp_path / "kek"
        add_kek(kek)
        text = re.sub(r'(?m)^store = ".*"$', f'store = "{dsn}"\nkek_file = "{kek}"', setup.config.read_text())
        setup.config.write_text(text)
        status, out, err = setup.cli("generate", DOMAIN, "--selector", "first", now=FIXED_NOW)
        assert status == 0, (out, err)
        assert setup.cli("tick", now=FIXED_NOW)[0] == 0  # published at knotd
        assert setup.cli("tick", now=FIXED_NOW + HOUR)[0] == 0  # active
        configs = {name: host_config(tmp_path / name, dsn, kek) for name in HOSTS}
        milters = {name: MilterProcess(["--config", str(configs[name])]) for name in HOSTS}
        try:
            addresses = {name: f"inet:{m.address[0]}:{m.address[1]}" for name, m in milters.items()}
            listeners = {name: {"smtpd_milters": addresses[name]} for name in HOSTS[1:]}
            with PostfixInstance(milters=addresses[HOSTS[0]], listeners=listeners) as postfix:
                yield Fleet(setup, database, dsn, postfix, milters)
        finally:
            for milter in milters.values():
                milter.stop()


def send_batch(fleet: Fleet, phase: str) -> list[str]:
    """BATCH messages through each host's listener; every one accepted. Their Message-IDs."""
    ids = []
    for host in HOSTS:
        listener = "smtp" if host == HOSTS[0] else host
        for n in range(BATCH):
            message_id = f"<{phase}-{host}-{n}@example.test>"
            message = (
                f"From: Alice <alice@example.test>\r\nTo: bob@example.net\r\nSubject: {phase} {n}\r\n"
                f"Message-ID: {message_id}\r\nDate: Thu, 1 Jan 2026 10:00:00 +0000\r\n\r\nHello from {host}.\r\n"
            ).encode()
            result = fleet.postfix.submit(message, listener=listener)
            assert result.accepted, (phase, host, n, result)  # never a tempfail
            ids.append(message_id)
    return ids


def delivered(fleet: Fleet, ids: list[str], timeout: float = 30.0) -> list[SinkMessage]:
    """Wait until every message of ``ids`` reached the sink (none lost); those messages."""
    wanted = {i.encode() for i in ids}
    deadline = time.monotonic() + timeout
    while True:
        messages = [m for m in fleet.postfix.delivered() if _message_id(m) in wanted]
        if len(messages) == len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(messages) == len(ids), f"{len(messages)} of {len(ids)} delivered"
    return messages


def _message_id(message: SinkMessage) -> bytes:
    found = re.search(rb"(?im)^Message-ID:\s*(\S+)", message.data)
    return found.group(1) if found else b""


def signed_with(fleet: Fleet, messages: list[SinkMessage]) -> set[str]:
    """The selectors the messages were signed with; each signature verified against knotd."""
    selectors = set()
    for message in messages:
        report = verify_sync(message.data, resolver=DnsResolver([fleet.setup.knot.nameserver], timeout=3))
        (signature,) = report.signatures
        assert signature.result is DKIMResult.PASS, (signature.result, signature.reason)
        selectors.add(signature.selector or "")
    return selectors


def active_selector(fleet: Fleet, now: int) -> str:
    """The one active key's selector, as ``mailseal keys list`` shows it."""
    listing = fleet.setup.cli("list", now=now)[1]
    (active,) = [line.split()[2] for line in listing.splitlines() if line.startswith("active")]
    return active


def every_milter_signs_with(fleet: Fleet, selector: str, marks: dict[str, int]) -> None:
    for name, milter in fleet.milters.items():
        line = milter.wait_for(rf"loaded .*signing with {DOMAIN}/{selector}\b", 60, start=marks[name])
        assert line is not None, f"{name} did not pick up {selector}:\n{milter.log}"


def test_two_milters_keep_signing_through_a_database_outage_and_follow_the_rotation(fleet: Fleet) -> None:
    assert signed_with(fleet, delivered(fleet, send_batch(fleet, "start"))) == {"first"}

    marks = {name: m.mark() for name, m in fleet.milters.items()}
    assert fleet.tick(FIXED_NOW + HOUR + 90 * DAY)[0] == 0  # rotation due: the successor published at knotd
    assert fleet.tick(FIXED_NOW + 2 * HOUR + 90 * DAY)[0] == 0  # successor active, first retiring
    second = active_selector(fleet, FIXED_NOW + 2 * HOUR + 90 * DAY)
    assert second != "first"
    every_milter_signs_with(fleet, second, marks)
    assert signed_with(fleet, delivered(fleet, send_batch(fleet, "rotated"))) == {second}

    marks = {name: m.mark() for name, m in fleet.milters.items()}
    fleet.database.halt()  # the database goes away mid-run
    for name, milter in fleet.milters.items():
        assert milter.wait_for("signing goes on with the keys loaded before", 60, start=marks[name]), (
            milter.log
        )
    during = send_batch(fleet, "outage")
    assert signed_with(fleet, delivered(fleet, during)) == {second}  # signed, delivered, none lost
    status, _, err = fleet.tick(FIXED_NOW + 3 * HOUR + 90 * DAY)
    assert status == 75 and "cannot connect to the key store postgresql://" in err and "Traceback" not in err
    for milter in fleet.milters.values():
        assert len(re.findall("signing goes on with the keys loaded before", milter.log)) == 1  # logged once

    marks = {name: m.mark() for name, m in fleet.milters.items()}
    fleet.database.start()  # back: the next rotation step reaches every milter
    assert fleet.tick(FIXED_NOW + 2 * HOUR + 180 * DAY)[0] == 0  # the next rotation due: third key published
    assert fleet.tick(FIXED_NOW + 3 * HOUR + 180 * DAY)[0] == 0  # third key active
    third = active_selector(fleet, FIXED_NOW + 3 * HOUR + 180 * DAY)
    assert third not in ("first", second)
    every_milter_signs_with(fleet, third, marks)
    assert signed_with(fleet, delivered(fleet, send_batch(fleet, "after"))) == {third}
    for milter in fleet.milters.values():
        assert milter.wait_for("the keys can be checked again, after", 30, start=0) is not None
        assert milter.proc.poll() is None  # never restarted
