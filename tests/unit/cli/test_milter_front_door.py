"""``mailseal milter`` as the README runs it, on a host whose name has no domain."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mailseal.cli.main import main
from mailseal.cli.milter import authserv_warning, config_reference, first_run
from mailseal.milter.config import load_config, starter_config
from support.milter_client import MilterClient
from support.milter_harness import MESSAGE
from support.milter_process import MilterProcess

README = Path(__file__).resolve().parents[3] / "README.md"


@pytest.fixture
def host_without_domain(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `hostname` = vm gives: getfqdn() says localhost."""
    monkeypatch.setattr(socket, "getfqdn", lambda: "localhost")
    monkeypatch.setattr(socket, "gethostname", lambda: "vm")


@pytest.mark.usefixtures("host_without_domain")
def test_without_a_domain_it_runs_verify_only_and_says_what_to_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "data"
    path = first_run(folder, None)
    out = capsys.readouterr().out
    config = load_config(path)
    assert config.keys == () and not config.routing.sign and config.routing.verify
    assert "This host's name (vm) has no domain" in out
    assert "To sign, run: mailseal milter --domain example.com" in out
    assert "smtpd_milters = inet:127.0.0.1:8891" in out
    assert not (folder / "keys").exists()  # no key made for a domain nobody named
    assert first_run(folder, None) == path and "verify-only" in capsys.readouterr().out  # second run: same
    signing = first_run(folder, "example.com")  # --domain replaces the verify-only starter
    (key,) = load_config(signing).keys
    assert key.domain == "example.com" and load_config(signing).routing.sign
    assert "._domainkey.example.com. IN TXT (" in capsys.readouterr().out


@pytest.mark.integration
@pytest.mark.usefixtures("host_without_domain")
def test_the_verify_only_milter_serves_mail(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    path = first_run(folder, None)
    path.write_text(path.read_text().replace("inet:8891@127.0.0.1", "inet:0@127.0.0.1"))
    with MilterProcess(["--data-dir", str(folder), "--workers", "1"]) as process:
        with MilterClient(process.address) as client:
            client.negotiate()
            client.connect(hostname="mx.sender.example", address="192.0.2.7")
            result = client.send_message(MESSAGE)
            assert not result.inserted("DKIM-Signature")
            assert result.inserted("Authentication-Results")
        assert process.stop() == 0
    assert b"runs verify-only" in process.stdout


@pytest.mark.parametrize("name", ["localhost", "localhost.localdomain", "vm", "LOCALHOST."])
def test_an_authserv_id_that_names_no_one_is_warned_about(name: str) -> None:
    assert authserv_warning(name, "m.toml") is not None
    assert authserv_warning("mx.example.com", "m.toml") is None


@pytest.mark.usefixtures("host_without_domain")
def test_check_config_warns_about_a_localhost_authserv_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.toml"
    path.write_text(
        '[milter]\nsocket = "inet:8891@127.0.0.1"\nauthserv_id = "localhost"\n[routing]\nsign = false\n'
    )
    assert main(["milter", "--check-config", str(path)]) == 0
    assert "warning: authserv-id 'localhost'" in capsys.readouterr().err


def test_the_generated_file_points_to_a_reference_that_exists(capsys: pytest.CaptureFixture[str]) -> None:
    text = starter_config(domain="example.com", selector="s", key_file="/k")
    assert "docs/" not in text and "mailseal milter --reference" in text
    assert main(["milter", "--reference"]) == 0
    printed = capsys.readouterr().out
    readme = README.read_text(encoding="utf-8")
    block = readme[readme.index("```toml\n", readme.index("### Configuration reference")) + 8 :]
    assert printed == config_reference() == block[: block.index("```")]
