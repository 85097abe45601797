"""A report mailed to the alias goes through the real Postfix, down ``|mailseal reports ingest``, into the store.

Postfix runs alias commands as ``default_privs`` (here ``nobody``), never as
root, so the command needs a Python with mailseal's dependencies that
``nobody`` can run. ``MAILSEAL_PIPE_PYTHON`` names one, else the Python
running the tests is used when ``nobody`` can run it; else (a Python under
/root, as on the CI machines) the test builds, once, a virtualenv of Debian's
python3 under /var/tmp with mailseal's dependencies from PyPI and runs the
command with it. When none of that works the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailseal.reports.sqlite_store import ReportStoreError, SqliteReportStore
from support.dmarc_reports import Spec, gz, report_email, report_xml
from support.postfix import PostfixInstance, postfix_available
from support.required import needs

SRC = Path(__file__).resolve().parents[2] / "src"
PIPE_USER = "nobody"


VENV = Path("/var/tmp/mailseal-test-pipe-venv")  # built once, reused by later runs
DEPENDENCIES = ("lxml", "cryptography", "dnspython", "publicsuffixlist", "prometheus-client")


def _build_venv() -> str | None:
    """A virtualenv of the system's python3 that ``nobody`` can read, with mailseal's dependencies."""
    python = VENV / "bin" / "python"
    if python.exists():
        return str(python)
    if not os.access("/usr/bin/python3", os.X_OK):
        return None
    building = VENV.with_name(VENV.name + f".{os.getpid()}")
    try:
        subprocess.run(
            ["/usr/bin/python3", "-m", "venv", str(building)], check=True, capture_output=True, timeout=120
        )
        subprocess.run(
            [str(building / "bin" / "pip"), "install", "-q", *DEPENDENCIES],
            check=True,
            capture_output=True,
            timeout=600,
        )
        subprocess.run(["chmod", "-R", "a+rX", str(building)], check=True)
        building.rename(VENV)
    except (OSError, subprocess.SubprocessError):
        shutil.rmtree(building, ignore_errors=True)
        return None
    return str(python)


def _pipe_python() -> str | None:
    """A Python that ``nobody`` can run with mailseal importable, or None."""
    for candidate in (os.environ.get("MAILSEAL_PIPE_PYTHON"), sys.executable, "venv"):
        if candidate == "venv":
            candidate = _build_venv()
        if not candidate or os.geteuid() != 0:
            continue
        try:
            done = subprocess.run(
                [candidate, "-c", "import mailseal.reports.xmlparse"],
                user=PIPE_USER,
                env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
                capture_output=True,
                timeout=30,
                check=False,
                cwd="/",
            )
        except OSError:
            continue
        if done.returncode == 0:
            return candidate
    return None


pytestmark = [
    pytest.mark.integration,
    needs(postfix_available(), "postfix", "apt-get install postfix"),
]


@pytest.fixture(scope="module")
def pipe_python() -> str:
    """Found (or built) when the test runs, not when the suite is collected."""
    found = _pipe_python()
    if found is None:
        pytest.skip(
            f"no Python with mailseal that '{PIPE_USER}' (Postfix's default_privs) can run, and none could be "
            "built; set MAILSEAL_PIPE_PYTHON to one (see this module's docstring)"
        )
    return found


@pytest.fixture
def spool() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="ms-dmarc-pipe-"))
    folder.chmod(0o755)
    (folder / "data").mkdir()
    shutil.chown(folder / "data", PIPE_USER)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_a_report_mailed_to_the_alias_lands_in_the_store(spool: Path, pipe_python: str) -> None:
    store = spool / "data" / "reports.db"
    aliases = spool / "aliases"
    command = f"{pipe_python} -m mailseal reports ingest --mta --store {store}"
    aliases.write_text(f'dmarc "|env PYTHONPATH={SRC} {command}"\n')  # texthash: "key value"
    main_cf = {
        "mydestination": "reports.mailseal.test",
        "local_transport": "local",
        "alias_maps": f"texthash:{aliases}",
        "alias_database": "",
        "local_recipient_maps": "$alias_maps",
        "allow_mail_to_commands": "alias",
        "default_privs": PIPE_USER,
        "command_time_limit": "60s",
    }
    with PostfixInstance(main_cf=main_cf, services=["local unix - n n - - local"]) as postfix:
        good = report_email(gz(report_xml(Spec(report_id="via-postfix"))), to="dmarc@reports.mailseal.test")
        postfix.sendmail(
            good, sender="noreply-dmarc-support@google.com", recipients=["dmarc@reports.mailseal.test"]
        )
        junk = report_email(os.urandom(500), content_type="application/zip", filename="junk.zip")
        postfix.sendmail(junk, sender="noreply@bad.example", recipients=["dmarc@reports.mailseal.test"])
        deadline = time.monotonic() + 60
        reports = quarantined = 0
        while time.monotonic() < deadline:
            try:
                opened = SqliteReportStore(store, readonly=True)
            except ReportStoreError:  # not there yet, or being created this moment
                time.sleep(0.2)
                continue
            reports = opened.totals().reports
            quarantined = len(opened.quarantined())
            opened.close()
            if reports and quarantined:
                break
            time.sleep(0.2)
        # Postfix logs the delivery once the command has exited, a moment after the store saw it.
        while time.monotonic() < deadline and postfix.log_text().count("delivered to command:") < 2:
            time.sleep(0.1)
        log = postfix.log_text()
    assert reports == 1, log
    assert quarantined == 1, log
    assert "status=sent (delivered to command:" in log
    # With --mta a quarantined report is a delivered message too: no bounce to the reporter.
    assert "status=bounced" not in log
    assert list((store.parent / "reports-quarantine").glob("*.bin"))
