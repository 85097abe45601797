"""The command line as external tools drive it: keygen -> sign -> verify, exit codes, JSON."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mailseal.cli.main import main
from support.messages import SAMPLE


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """``mailseal ARGS`` in this process (a new interpreter costs 2-3 s under load and tests nothing here)."""
    out, err = io.BytesIO(), io.BytesIO()
    streams = (
        io.TextIOWrapper(io.BytesIO(stdin)),
        io.TextIOWrapper(out, write_through=True),
        io.TextIOWrapper(err, write_through=True),
    )
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = streams
    try:
        status = main(list(args))
    finally:
        for stream in streams[1:]:
            stream.flush()
        sys.stdin, sys.stdout, sys.stderr = saved
    return subprocess.CompletedProcess(["mailseal", *args], status, out.getvalue(), err.getvalue())


def test_python_m_mailseal_runs_the_command_line() -> None:
    """The one test that needs a new interpreter: the entry point itself."""
    done = subprocess.run([sys.executable, "-m", "mailseal", "--version"], capture_output=True, check=False)
    assert done.returncode == 0 and done.stdout.startswith(b"mailseal ")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An RSA and an Ed25519 key plus a zone file publishing both."""
    folder = tmp_path_factory.mktemp("keys")
    zone = folder / "example.com.zone"
    lines = ["$ORIGIN example.com.", "$TTL 300", "@ IN SOA ns hostmaster 1 3600 600 86400 300"]
    for selector, algorithm in (("rsa", "rsa"), ("ed", "ed25519")):
        done = run(
            "keygen",
            "--domain",
            "example.com",
            "--selector",
            selector,
            "--algorithm",
            algorithm,
            "--out",
            str(folder),
        )
        assert done.returncode == 0, done.stderr
        lines.append(done.stdout.decode())
    zone.write_text("\n".join(lines) + "\n")
    return folder, zone


def test_keygen_writes_0600_and_prints_record(keys: tuple[Path, Path]) -> None:
    folder, zone = keys
    key = folder / "rsa.example.com.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = zone.read_text()
    assert "rsa._domainkey.example.com. IN TXT (" in text
    assert all(len(part) <= 255 for part in text.split('"')[1::2])
    assert b"PRIVATE KEY" not in zone.read_bytes()


def test_sign_then_verify_with_zone_file(keys: tuple[Path, Path], tmp_path: Path) -> None:
    folder, zone = keys
    message = tmp_path / "m.eml"
    message.write_bytes(SAMPLE)
    signed = run(
        "sign", "--key", str(folder / "rsa.example.com.key"), "--key", str(folder / "ed.example.com.key"),
        "--domain", "example.com", "--selector", "rsa", "--selector", "ed", str(message),
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.endswith(SAMPLE) and signed.stdout.count(b"DKIM-Signature:") == 2
    out = tmp_path / "signed.eml"
    out.write_bytes(signed.stdout)
    checked = run("verify", "--dns-zone", str(zone), "--json", "--authserv-id", "mx.test", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert [s["result"] for s in report["signatures"]] == ["pass", "pass"]
    for field in ("result", "reason", "domain", "selector", "algorithm", "auid", "signed_headers", "unsigned_headers",
                  "body_length_limited", "from_oversigned", "key_bits", "aligned", "dnssec"):  # fmt: skip
        assert field in report["signatures"][0]
    assert report["signatures"][0]["key_bits"] == 2048 and report["signatures"][0]["aligned"] is True
    assert report["authentication_results"].startswith("mx.test; dkim=pass")
    human = run("verify", "--dns-zone", str(zone), str(out))
    assert human.returncode == 0 and b"does not prove who wrote it" in human.stdout


def test_verify_many_files_and_exit_status(keys: tuple[Path, Path], tmp_path: Path) -> None:
    folder, zone = keys
    signed = run(
        "sign",
        "--key",
        str(folder / "ed.example.com.key"),
        "--domain",
        "example.com",
        "--selector",
        "ed",
        stdin=SAMPLE,
    )
    good, bad = tmp_path / "good.eml", tmp_path / "bad.eml"
    good.write_bytes(signed.stdout)
    bad.write_bytes(signed.stdout.replace(b"noon", b"one"))
    both = run("verify", "--dns-zone", str(zone), "--json", str(good), str(bad))
    assert both.returncode == 1
    lines = [json.loads(line) for line in both.stdout.splitlines()]
    assert [line["result"] for line in lines] == ["pass", "fail"]
    assert lines[1]["signatures"][0]["reason"] == "body-hash-mismatch"
    assert run("verify", "--dns-zone", str(zone), str(good)).returncode == 0
    unsigned = run("verify", "--dns-zone", str(zone), stdin=SAMPLE)
    assert unsigned.returncode == 1 and b"no DKIM-Signature" in unsigned.stdout


def test_lf_only_file_stays_lf(keys: tuple[Path, Path]) -> None:
    folder, zone = keys
    lf = SAMPLE.replace(b"\r\n", b"\n")
    signed = run(
        "sign",
        "--key",
        str(folder / "rsa.example.com.key"),
        "--domain",
        "example.com",
        "--selector",
        "rsa",
        stdin=lf,
    )
    assert signed.returncode == 0 and b"\r" not in signed.stdout
    assert run("verify", "--dns-zone", str(zone), stdin=signed.stdout).returncode == 0


def test_temperror_exit_75(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    import socket

    folder, _ = keys
    signed = run(
        "sign",
        "--key",
        str(folder / "ed.example.com.key"),
        "--domain",
        "example.com",
        "--selector",
        "ed",
        stdin=SAMPLE,
    )
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a DNS server that never answers
    silent.bind(("127.0.0.1", 0))
    try:
        port = silent.getsockname()[1]
        done = run(
            "verify", "--nameserver", f"127.0.0.1:{port}", "--timeout", "0.3", "--json", stdin=signed.stdout
        )
    finally:
        silent.close()
    assert done.returncode == 75, done.stdout + done.stderr
    assert json.loads(done.stdout)["signatures"][0]["reason"] == "dns-timeout"


def test_insecure_key_file_is_refused(keys: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = keys
    loose = tmp_path / "loose.key"
    loose.write_bytes((folder / "ed.example.com.key").read_bytes())
    os.chmod(loose, 0o644)
    done = run("sign", "--key", str(loose), "--domain", "example.com", "--selector", "ed", stdin=SAMPLE)
    assert done.returncode == 2
    assert b"chmod 600" in done.stderr and b"Traceback" not in done.stderr
    assert (
        run(
            "sign",
            "--key",
            str(loose),
            "--allow-insecure-key",
            "--domain",
            "example.com",
            "--selector",
            "ed",
            stdin=SAMPLE,
        ).returncode
        == 0
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["sign", "--domain", "example.com", "--selector", "s"],
        ["keygen", "--domain", "example.com"],
        ["keygen", "--domain", "x", "--selector", "s"],
        ["verify", "--max-signatures", "0"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(("mailseal:", f"mailseal {argv[0]}:"))
    assert "mailseal: mailseal" not in err


def test_keygen_refuses_to_overwrite(keys: tuple[Path, Path]) -> None:
    folder, _ = keys
    done = run("keygen", "--domain", "example.com", "--selector", "rsa", "--out", str(folder))
    assert done.returncode == 2 and b"refusing to overwrite" in done.stderr


def test_missing_file_is_one_line() -> None:
    done = run("verify", "/nonexistent/message.eml")
    assert done.returncode == 2 and done.stderr.count(b"\n") == 1 and b"Traceback" not in done.stderr


def test_key_file_owned_by_someone_else_is_refused(keys: tuple[Path, Path], tmp_path: Path) -> None:
    from mailseal.errors import InsecureKeyFileError
    from mailseal.keys.files import read_private_key

    folder, _ = keys
    other = tmp_path / "other.key"
    other.write_bytes((folder / "ed.example.com.key").read_bytes())
    os.chmod(other, 0o600)
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner needs root")
    os.chown(other, 65534, 65534)
    with pytest.raises(InsecureKeyFileError, match="chown"):
        read_private_key(other)
    assert read_private_key(other, allow_insecure=True).key_type.value == "ed25519"


def test_key_file_symlink_is_not_followed(keys: tuple[Path, Path], tmp_path: Path) -> None:
    from mailseal.errors import KeyFileError
    from mailseal.keys.files import read_private_key

    folder, _ = keys
    link = tmp_path / "link.key"
    link.symlink_to(folder / "ed.example.com.key")
    with pytest.raises(KeyFileError):
        read_private_key(link)


def test_keygen_never_replaces_a_file_that_appears(tmp_path: Path) -> None:
    from mailseal.core.algorithms import KeyType
    from mailseal.core.keymaterial import generate_private_key
    from mailseal.errors import KeyFileError
    from mailseal.keys.files import write_private_key

    target = tmp_path / "k.key"
    target.write_bytes(b"someone else's file")
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        write_private_key(target, generate_private_key(KeyType.ED25519))
    assert target.read_bytes() == b"someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.key"]  # no temporary file left behind
