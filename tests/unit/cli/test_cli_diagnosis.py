"""``mailseal verify`` shows each failure's diagnosis: the --json contract and one human line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support.messages import SAMPLE

FOOTER = b"-- \r\nlist footer\r\n"


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "mailseal", *args], capture_output=True, check=False)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    folder = tmp_path_factory.mktemp("diag")
    done = run("keygen", "--domain", "example.com", "--selector", "rsa", "--out", str(folder))
    assert done.returncode == 0, done.stderr
    zone = folder / "example.com.zone"
    zone.write_text(
        "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 300\n" + done.stdout.decode()
    )
    message = folder / "m.eml"
    message.write_bytes(SAMPLE)
    out = run(
        "sign", "--key", str(folder / "rsa.example.com.key"), "--domain", "example.com", "--selector", "rsa",
        str(message),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return zone, out.stdout


def test_json_diagnosis_is_null_for_a_pass_and_the_contract_object_for_a_failure(
    signed: tuple[Path, bytes], tmp_path: Path
) -> None:
    zone, message = signed
    good = tmp_path / "good.eml"
    good.write_bytes(message)
    listed = tmp_path / "listed.eml"
    listed.write_bytes(message.replace(b"Subject: Lunch", b"Subject: [lunch-club] Lunch") + FOOTER)
    done = run("verify", "--dns-zone", str(zone), "--json", str(good), str(listed))
    assert done.returncode == 1, done.stderr
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert first["signatures"][0]["diagnosis"] is None
    diagnosis = second["signatures"][0]["diagnosis"]
    assert list(diagnosis) == ["code", "summary", "evidence"]
    assert diagnosis["code"] == "body-appended"
    # Canonical bytes: the message's two trailing blank lines now count, the footer's trailing space not.
    assert diagnosis["evidence"] == '21 bytes added; first line: "--"'
    assert "[lunch-club]" in diagnosis["summary"]
    assert "body-appended" not in second["authentication_results"]


def test_human_output_has_one_line_under_the_reason(signed: tuple[Path, bytes], tmp_path: Path) -> None:
    zone, message = signed
    listed = tmp_path / "listed.eml"
    listed.write_bytes(message + FOOTER)
    done = run("verify", "--dns-zone", str(zone), str(listed))
    lines = done.stdout.decode().splitlines()
    reason = next(i for i, line in enumerate(lines) if "[body-hash-mismatch]" in line)
    assert lines[reason + 1].startswith("    why: content was added to the body after signing")
    assert lines[reason + 1].endswith('[body-appended: 21 bytes added; first line: "--"]')
    assert sum(line.startswith("    why:") for line in lines) == 1
