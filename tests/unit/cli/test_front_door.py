"""The command line a user can trust: every file reported, plain errors, parallel lookups, flat memory."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import mailseal
from mailseal.cli import exits
from mailseal.cli.main import build_parser, main
from mailseal.core.algorithms import KeyType
from mailseal.core.keyrecord import KeyRecord, zone_file_record
from mailseal.keys.files import write_private_key
from support.clock import FIXED_NOW
from support.messages import SAMPLE

SRC = Path(mailseal.__file__).resolve().parents[1]


# Linux keeps a process's peak RSS across fork and exec (the kernel folds the old
# memory's high-water mark into the new program's at exec), so a child started by a
# big pytest process would report pytest's peak. A small launcher process starts the
# command and reports that grandchild's own ru_maxrss from os.wait4.
_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:], stdin=0, stdout=1, stderr=2)
_, status, usage = os.wait4(child.pid, 0)
os.write(int(sys.argv[1]), str(usage.ru_maxrss).encode())
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _child(*args: str, stdin: int | None = None, stdout: int | None = None) -> tuple[int, bytes, int]:
    """Run ``python -m mailseal ARGS``; return its exit status, stderr and peak RSS in KiB."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    report_read, report_write = os.pipe()
    try:
        with subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(report_write), sys.executable, "-m", "mailseal", *args],
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            pass_fds=(report_write,),
        ) as child:
            os.close(report_write)
            report_write = -1
            _, err = child.communicate()
            peak = os.read(report_read, 64)
    finally:
        os.close(report_read)
        if report_write >= 0:
            os.close(report_write)
    return child.returncode, err, int(peak or b"0")


@pytest.fixture(scope="module")
def signed_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """An Ed25519 key (0600), a zone publishing it, a message signed with it."""
    folder = tmp_path_factory.mktemp("frontdoor")
    key = mailseal.generate_private_key(KeyType.ED25519)
    key_path = folder / "ed.example.com.key"
    write_private_key(key_path, key)
    record = KeyRecord.for_key(key.key_type, key.public_key_b64())
    zone = folder / "example.com.zone"
    zone.write_text(
        "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 300\n"
        + zone_file_record("ed._domainkey", record.to_txt_strings())
        + "\n"
    )
    signed = folder / "signed.eml"
    signed.write_bytes(mailseal.sign(SAMPLE, key=key, domain="example.com", selector="ed") + SAMPLE)
    return key_path, zone, signed


def test_verify_reports_every_file_after_an_unreadable_one_and_exits_by_the_worst(
    signed_setup: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, zone, signed = signed_setup
    missing = tmp_path / "missing.eml"
    folder = tmp_path / "a-folder"
    folder.mkdir()
    status = main(["verify", "--dns-zone", str(zone), str(signed), str(missing), str(folder), str(signed)])
    out, err = capsys.readouterr()
    assert status == exits.INPUT
    assert out.count(f"{signed}: pass") == 2  # the file after the unreadable ones is reported too
    assert err.splitlines() == [
        f"mailseal: {missing}: no such file",
        f"mailseal: {folder}: is a folder, not a message file",
    ]
    assert "Errno" not in err and "Traceback" not in err


def test_verify_json_reports_the_unreadable_file_as_an_object(
    signed_setup: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, zone, signed = signed_setup
    missing = tmp_path / "missing.eml"
    assert main(["verify", "--json", "--dns-zone", str(zone), str(missing), str(signed)]) == exits.INPUT
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["file"], line["result"]) for line in lines] == [
        (str(missing), "error"),
        (str(signed), "pass"),
    ]


def test_a_failing_message_with_a_passing_one_exits_1(
    signed_setup: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, zone, signed = signed_setup
    altered = tmp_path / "altered.eml"
    altered.write_bytes(signed.read_bytes().replace(b"noon", b"one"))
    assert main(["verify", "--dns-zone", str(zone), str(signed), str(altered)]) == exits.NO
    assert "body-hash-mismatch" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["verify", "sign"])
def test_closed_stdin_is_one_plain_line(command: str, signed_setup: tuple[Path, Path, Path]) -> None:
    key, _, _ = signed_setup
    args = ["--key", str(key), "--domain", "example.com", "--selector", "ed"] if command == "sign" else []
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-m", "mailseal", command, *args],
        capture_output=True,
        env=env,
        check=False,
        preexec_fn=lambda: os.close(0),
    )
    assert done.returncode == exits.INPUT
    assert done.stderr.count(b"\n") == 1 and b"Traceback" not in done.stderr
    assert b"standard input is closed" in done.stderr


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--bogus"], "mailseal: unknown option --bogus"),
        (["verify", "--bogus"], "mailseal verify: unknown option --bogus"),
        (["keys", "--bogus"], "mailseal keys: unknown option --bogus"),
        (["sign", "--bogus", "x"], "mailseal sign: unknown option --bogus"),
        ([], "mailseal: a command is required"),
        (["frobnicate"], "mailseal: unknown command 'frobnicate'"),
    ],
)
def test_usage_errors_name_the_problem_once(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == exits.INPUT
    err = capsys.readouterr().err
    assert err.startswith(said) and err.count("\n") == 1 and "mailseal: mailseal" not in err


def test_a_folder_as_zone_file_is_plain_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "--dns-zone", str(tmp_path)]) == exits.INPUT
    err = capsys.readouterr().err
    assert "Errno" not in err and "is a directory" in err.lower()


def test_a_zone_without_origin_names_the_real_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zone = tmp_path / "relative.zone"
    zone.write_text('sel._domainkey 300 IN TXT "v=DKIM1; p="\n')
    assert main(["verify", "--dns-zone", str(zone)]) == exits.INPUT
    err = capsys.readouterr().err
    assert "--zone-origin DOMAIN" in err and "--origin " not in err


def test_every_help_shows_the_one_exit_status_table() -> None:
    parser = build_parser()
    helps = [parser.format_help()]
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            helps += [child.format_help() for child in action.choices.values()]
    assert len(helps) >= 8
    for text in helps:
        assert exits.TABLE.splitlines()[2] in text


def test_demo_says_its_temporary_folder_is_gone(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == exits.OK
    out = capsys.readouterr().out
    named = [word for word in out.split() if word.startswith("/") and "mailseal-demo-" in word]
    assert named and not any(Path(word.rstrip(".:,;)")).exists() for word in named)
    assert "removed" in out and "--dir" in out


def test_demo_with_dir_keeps_what_it_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--dir", str(tmp_path / "d")]) == exits.OK
    out = capsys.readouterr().out
    named = [Path(w.rstrip(".:,;)")) for w in out.split() if w.startswith(str(tmp_path))]
    assert named and all(path.exists() for path in named)


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n"])
def test_sign_from_a_file_and_from_a_pipe_write_the_same_bytes(
    line_end: bytes, signed_setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    key, zone, _ = signed_setup
    message = tmp_path / "m.eml"
    message.write_bytes(SAMPLE.replace(b"\r\n", line_end))
    args = [
        "sign",
        "--key",
        str(key),
        "--domain",
        "example.com",
        "--selector",
        "ed",
        "--timestamp",
        str(FIXED_NOW),
    ]
    outputs: list[bytes] = []
    for stdin, extra in ((None, [str(message)]), (message, [])):
        out = tmp_path / f"out{len(outputs)}.eml"
        with out.open("wb") as sink, (stdin or message).open("rb") as source:
            status, err, _ = _child(
                *args, *extra, stdin=source.fileno() if stdin else None, stdout=sink.fileno()
            )
        assert status == 0, err
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] and outputs[0].endswith(message.read_bytes())
    assert (b"\r" in outputs[0]) == (line_end == b"\r\n")  # the field takes the file's line ends
    assert main(["verify", "--dns-zone", str(zone), "--now", str(FIXED_NOW), str(tmp_path / "out0.eml")]) == 0


# ------------------------------------------------------------------ lookups in parallel


@pytest.fixture
def dead_nameserver() -> Iterator[str]:
    """A loopback UDP socket that receives queries and never answers."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    yield f"127.0.0.1:{sink.getsockname()[1]}"
    sink.close()


def test_lookups_of_a_message_and_of_many_files_run_concurrently(
    dead_nameserver: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = mailseal.generate_private_key(KeyType.ED25519)
    files = []
    for n in range(3):
        requests = [
            mailseal.signing_request(key=key, domain=f"d{n}.example", selector=f"s{i}") for i in range(8)
        ]
        path = tmp_path / f"m{n}.eml"
        path.write_bytes(mailseal.sign_many(SAMPLE, requests) + SAMPLE)
        files.append(str(path))
    timeout = 1.0
    started = time.monotonic()
    status = main(["verify", "--json", "--nameserver", dead_nameserver, "--timeout", str(timeout), *files])
    took = time.monotonic() - started
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == exits.TRY_LATER
    reasons = {s["reason"] for r in reports for s in r["signatures"]}
    assert reasons == {"dns-timeout"} and sum(len(r["signatures"]) for r in reports) == 24
    assert took < 3 * timeout, f"24 lookups took {took:.1f} s: not concurrent (one after another: 24 s)"


# ------------------------------------------------------------------ big files, flat memory

BIG = 60 << 20
RSS_LIMIT_KIB = 100 * 1024


def test_sign_and_verify_a_60_mb_message_in_under_100_mb(
    signed_setup: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    key, zone, _ = signed_setup
    big = tmp_path / "big.eml"
    line = b"0123456789 abcdefghijklmnopqrstuvwxyz  ABCDEFGHIJKLMNOPQRSTUVWXYZ \t\n"
    with big.open("wb") as out:
        out.write(SAMPLE.replace(b"\r\n", b"\n"))  # a Unix file: every LF becomes CRLF on the way
        block = line * (1 << 14)
        for _ in range(BIG // len(block) + 1):
            out.write(block)
    signed = tmp_path / "big-signed.eml"
    with signed.open("wb") as out:
        status, err, sign_rss = _child(
            "sign",
            "--key",
            str(key),
            "--domain",
            "example.com",
            "--selector",
            "ed",
            str(big),
            stdout=out.fileno(),
        )
    assert status == 0, err
    assert signed.stat().st_size > big.stat().st_size
    status, err, verify_rss = _child("verify", "--dns-zone", str(zone), str(signed))
    assert status == 0, err
    with signed.open("rb") as piped:
        status, err, stdin_rss = _child(
            "sign", "--key", str(key), "--domain", "example.com", "--selector", "ed", stdin=piped.fileno()
        )
    assert status == 0, err
    peaks = {"sign": sign_rss, "verify": verify_rss, "sign from stdin": stdin_rss}
    assert 0 < max(peaks.values()) < RSS_LIMIT_KIB, f"peak RSS in KiB: {peaks}"
