"""``mailseal milter --check-config``, the first run on embedded defaults, and ``import-opendkim``."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mailseal import PrivateKey
from mailseal.cli.main import main
from mailseal.cli.milter import data_directory, first_run
from mailseal.milter.config import load_config, parse_config
from mailseal.milter.opendkim_import import convert
from support.milter_client import MilterClient
from support.milter_harness import MESSAGE, write_config
from support.milter_process import MilterProcess


def test_check_config_ok(tmp_path: Path, rsa_key: PrivateKey, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, {"k": (rsa_key, "example.com", "s")}, {"example.com": ["k"]})
    assert main(["milter", "--check-config", str(path)]) == 0
    captured = capsys.readouterr()
    assert (
        "ok -- listens on inet:8891@127.0.0.1 (Postfix: inet:127.0.0.1:8891), 1 key(s) loaded" in captured.out
    )
    assert "warning" not in captured.err


def test_check_config_warns_about_a_non_loopback_socket(
    tmp_path: Path, rsa_key: PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = {"k": (rsa_key, "example.com", "s")}
    path = write_config(tmp_path, keys, {"example.com": ["k"]}, socket_spec="inet:8891@0.0.0.0")
    assert main(["milter", "--check-config", str(path)]) == 0  # a warning, not a refusal
    captured = capsys.readouterr()
    assert "ok -- listens on inet:8891@0.0.0.0" in captured.out
    assert captured.err.startswith("warning: the milter listens on inet:8891@0.0.0.0, not a loopback address")


def test_check_config_explains_errors_with_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[milter]\nsocket = "inet:8891@127.0.0.1"\n\n[routing]\nsign = "yes"\nsender = "sender"\n'
    )
    assert main(["milter", "--check-config", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"{path}:5: routing.sign must be true or false"
    assert err[1].startswith(f"{path}:6: routing.sender must be")


def test_check_config_reports_unusable_keys_at_their_line(
    tmp_path: Path, rsa_key: PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path, {"k": (rsa_key, "example.com", "s")}, {"example.com": ["k"]})
    (tmp_path / "k.key").chmod(0o640)
    assert main(["milter", "--check-config", str(path)]) == 1
    err = capsys.readouterr().err
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith("file ="))
    assert f"{path}:{line}: key 'k' cannot be used: key file {tmp_path / 'k.key'} is readable" in err
    assert f"chmod 600 {tmp_path / 'k.key'}" in err


def test_first_run_writes_a_key_and_a_config_and_prints_what_to_publish(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "data"
    path = first_run(folder, "Example.COM")
    out = capsys.readouterr().out
    config = load_config(path)
    (key,) = config.keys
    assert key.domain == "example.com"
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert f"{key.selector}._domainkey.example.com. IN TXT (" in out
    assert "smtpd_milters = inet:127.0.0.1:8891" in out
    assert "non_smtpd_milters = $smtpd_milters" in out
    assert "PRIVATE KEY" not in out
    again = first_run(folder, None)  # the second run reuses the same key and file
    assert again == path
    assert load_config(again).keys == config.keys


def test_first_run_needs_a_domain_it_can_believe(tmp_path: Path) -> None:
    from mailseal.errors import UsageError

    with pytest.raises(UsageError, match="--domain"):
        first_run(tmp_path / "d", "localhost")


def test_data_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert data_directory(None) == tmp_path / "mailseal"
    assert data_directory("/srv/x") == Path("/srv/x")
    monkeypatch.delenv("XDG_DATA_HOME")
    assert data_directory(None) == Path.home() / ".local" / "share" / "mailseal"


@pytest.mark.integration
def test_no_config_runs_on_the_data_folder(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    path = first_run(folder, "example.com")
    path.write_text(path.read_text().replace("inet:8891@127.0.0.1", "inet:0@127.0.0.1"))
    with MilterProcess(["--data-dir", str(folder), "--workers", "1"]) as process:
        with MilterClient(process.address) as client:
            client.negotiate()
            client.connect()
            assert len(client.send_message(MESSAGE).inserted("DKIM-Signature")) == 1
        assert process.stop() == 0
    assert b"._domainkey.example.com. IN TXT" in process.stdout
    assert b"PRIVATE KEY" not in process.stdout
    assert "PRIVATE KEY" not in process.log


KEY_TABLE = """\
# OpenDKIM KeyTable
sel1._domainkey.example.com   example.com:sel1:/etc/opendkim/keys/example.com/sel1.private
ed1._domainkey.example.com    example.com:ed1:/etc/opendkim/keys/example.com/ed1.private
any                           %:shared:/etc/opendkim/keys/shared.private
inline                        example.org:x:MIIEvQIBADANBgkqhkiG9w0BAQEFAASC
unused                        example.net:u:/k/u.private
"""

SIGNING_TABLE = """\
*@example.com        sel1._domainkey.example.com
*@example.com        ed1._domainkey.example.com
ceo@example.com      sel1._domainkey.example.com
*@*.example.com      sel1._domainkey.example.com
*@*.weird*.example   sel1._domainkey.example.com
*                    any
*@example.org        inline
"""


def test_import_refile_tables() -> None:
    result = convert(KEY_TABLE, SIGNING_TABLE, refile=True)
    config = parse_config(result.toml)
    assert [(r.pattern, r.keys) for r in config.rules] == [
        ("ceo@example.com", ("sel1._domainkey.example.com",)),
        ("*@example.com", ("sel1._domainkey.example.com", "ed1._domainkey.example.com")),  # merged
        (".example.com", ("sel1._domainkey.example.com",)),
        ("*", ("any",)),
    ]
    assert [(k.name, k.domain, k.selector, str(k.path)) for k in config.keys][2] == (
        "any",
        "%",
        "shared",
        "/etc/opendkim/keys/shared.private",
    )
    warnings = "\n".join(result.warnings)
    assert "KeyTable:5: key 'inline' holds the key data inline" in warnings
    assert (
        "SigningTable:4: '*@*.example.com' becomes .example.com, which also matches example.com itself"
        in warnings
    )
    assert (
        "SigningTable:5: '*@*.weird*.example': a wildcard inside the domain cannot be converted; line skipped"
        in warnings
    )
    assert "SigningTable:7: key 'inline' is not in the KeyTable" in warnings
    assert "KeyTable:6: key 'unused' is not used" in warnings
    assert "OpenDKIM used the first matching line" in warnings


def test_import_plain_tables() -> None:
    result = convert(
        "k example.com:s:/k.private\n",
        "example.com k\nbob@example.com k\nsales@ k\n*@x.example k\n",
        refile=False,
    )
    config = parse_config(result.toml)
    assert [r.pattern for r in config.rules] == ["bob@example.com", "example.com"]
    assert any(
        "'sales@' (a local part at any domain) has no mailseal equivalent" in w for w in result.warnings
    )
    assert any("wildcard but --refile was not given" in w for w in result.warnings)


def test_import_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "KeyTable").write_text(KEY_TABLE)
    (tmp_path / "SigningTable").write_text(SIGNING_TABLE)
    status = main(
        [
            "import-opendkim",
            "--key-table",
            str(tmp_path / "KeyTable"),
            "--signing-table",
            f"refile:{tmp_path / 'SigningTable'}",
        ]
    )
    captured = capsys.readouterr()
    assert status == 0
    assert parse_config(captured.out).rules  # refile: prefix implies --refile
    assert "warning: " in captured.err
