"""``mailseal reports fetch`` against a real Dovecot (TLS, loopback): fetched, moved, ingested once."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient

from mailseal.reports.sqlite_store import SqliteReportStore
from support.dmarc_reports import Row, Sig, Spec, gz, report_email, report_xml, zipped
from support.dovecot import DovecotServer, dovecot_available
from support.required import needs

pytestmark = [
    pytest.mark.integration,
    needs(dovecot_available(), "Dovecot", "apt-get install dovecot-imapd"),
]

REPORTS = 40
RECORDS = 1500  # per report: enough work per message that the kill lands midway


@pytest.fixture
def imap() -> Iterator[DovecotServer]:
    with DovecotServer() as server:
        yield server


def _client(imap: DovecotServer) -> IMAPClient:
    client = IMAPClient(
        "127.0.0.1",
        port=imap.port,
        ssl=True,
        ssl_context=ssl.create_default_context(cafile=str(imap.cafile)),
        timeout=20,
    )
    client.login(imap.user, imap.password)
    return client


def _deliver(imap: DovecotServer) -> None:
    client = _client(imap)
    for n in range(REPORTS):
        rows = [
            Row(source_ip=f"10.1.{i // 256}.{i % 256}", count=2, sigs=[Sig("example.com", "s2026")])
            for i in range(RECORDS)
        ]
        xml = report_xml(Spec(reporter=f"receiver{n % 4}.example", report_id=f"imap-{n}", rows=rows))
        attachment = gz(xml) if n % 2 else zipped(xml)
        kind = "application/gzip" if n % 2 else "application/zip"
        client.append(
            "INBOX",
            report_email(attachment, content_type=kind, filename=f"r{n}.{'xml.gz' if n % 2 else 'zip'}"),
        )
    client.append(
        "INBOX", report_email(os.urandom(2000), content_type="application/zip", filename="junk.zip")
    )
    client.logout()


def _fetch(imap: DovecotServer, store: Path, password_file: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mailseal",
            "reports",
            "fetch",
            "--store",
            str(store),
            "--host",
            "127.0.0.1",
            "--port",
            str(imap.port),
            "--user",
            imap.user,
            "--password-file",
            str(password_file),
            "--cafile",
            str(imap.cafile),
            "--timeout",
            "20",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stored(store: Path) -> int:
    if not store.exists():
        return 0
    try:
        opened = SqliteReportStore(store, readonly=True)
    except Exception:  # not created yet
        return 0
    try:
        return opened.totals().reports
    finally:
        opened.close()


def test_fetch_killed_midway_and_rerun_ingests_every_report_once(imap: DovecotServer, tmp_path: Path) -> None:
    _deliver(imap)
    store = tmp_path / "reports.db"
    secret = tmp_path / "imap-password"
    secret.write_text(imap.password)
    secret.chmod(0o600)

    first = _fetch(imap, store, secret)
    deadline = time.monotonic() + 60
    while _stored(store) < 5 and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    partial = _stored(store)
    assert 5 <= partial < REPORTS, "the kill should land midway"

    second = _fetch(imap, store, secret)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 1, err  # the junk message was quarantined
    lines = out.splitlines()
    assert sum(line.startswith("ingested ") for line in lines) == REPORTS - partial
    assert sum(line.startswith("quarantined ") for line in lines) == 1
    assert "junk.zip" in next(line for line in lines if line.startswith("quarantined "))

    opened = SqliteReportStore(store, readonly=True)
    totals = opened.totals()
    opened.close()
    assert (totals.reports, totals.records, totals.messages) == (
        REPORTS,
        REPORTS * RECORDS,
        REPORTS * RECORDS * 2,
    )

    client = _client(imap)
    assert client.select_folder("INBOX")[b"EXISTS"] == 0
    assert client.select_folder("dmarc-done")[b"EXISTS"] == REPORTS
    assert client.select_folder("dmarc-quarantine")[b"EXISTS"] == 1
    client.logout()

    third = _fetch(imap, store, secret)  # nothing left: a cron run that finds an empty inbox
    out, err = third.communicate(timeout=60)
    assert (third.returncode, out) == (0, ""), err


def test_fetch_refuses_an_untrusted_certificate_and_a_wrong_password(
    imap: DovecotServer, tmp_path: Path
) -> None:
    secret = tmp_path / "imap-password"
    secret.write_text("wrong")
    secret.chmod(0o600)
    base = [
        sys.executable,
        "-m",
        "mailseal",
        "reports",
        "fetch",
        "--store",
        str(tmp_path / "r.db"),
        "--host",
        "127.0.0.1",
    ]
    base += ["--port", str(imap.port), "--user", imap.user, "--password-file", str(secret), "--timeout", "10"]
    untrusted = subprocess.run(base, capture_output=True, text=True, timeout=60, check=False)
    assert untrusted.returncode == 75
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr or "certificate verify failed" in untrusted.stderr
    wrong = subprocess.run(
        [*base, "--cafile", str(imap.cafile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert wrong.returncode == 75
    assert "try again later" in wrong.stderr
    secret.chmod(0o644)
    readable = subprocess.run(
        [*base, "--cafile", str(imap.cafile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert readable.returncode != 0
    assert "chmod" in readable.stderr


def test_fetch_holds_about_one_input_cap_of_mail_at_a_time(imap: DovecotServer, tmp_path: Path) -> None:
    """A batch was fetched whole: 20 messages just under the input cap (64 MiB) are 1.3 GB
    in memory at once. Anyone can mail the report address, so the bound must be the cap."""
    import tracemalloc

    from mailseal.reports.fetch import ImapSettings, fetch_once
    from mailseal.reports.ingest import Ingestor
    from mailseal.reports.unpack import Limits

    cap = 600_000
    client = _client(imap)
    for n in range(20):  # a whole batch, each one under the cap: all are downloaded (and quarantined: junk)
        client.append(
            "INBOX", report_email(os.urandom(400_000), content_type="application/zip", filename=f"j{n}.zip")
        )
    client.logout()
    store = SqliteReportStore(tmp_path / "r.db")
    ingestor = Ingestor(
        store, tmp_path / "quarantine", limits=Limits(input_bytes=cap), clock=lambda: 1_767_225_600
    )
    settings = ImapSettings(
        "127.0.0.1", imap.user, imap.password, port=imap.port, cafile=imap.cafile, timeout=20
    )
    tracemalloc.start()
    try:
        result = fetch_once(settings, ingestor)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        store.close()
    assert result.messages == 20 and result.quarantined == 20
    # Reading one message costs several times its size (IMAP literal, MIME parts, the quarantine
    # copy): about 8 caps measured; a whole batch at once was 50 caps.
    assert peak < 12 * cap, f"peak {peak} bytes for a {cap}-byte cap"
