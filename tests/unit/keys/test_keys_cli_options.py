"""``mailseal keys``: each subcommand shows only the options it uses; changes wait for a running tick."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailseal.cli.main import main
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import KeyState
from support.clock import FIXED_NOW

UPDATE_OPTIONS = ("--primary", "--zone", "--tsig-name", "--tsig-secret-file", "--tsig-algorithm", "--manual")
LOOKUP_OPTIONS = ("--authoritative", "--resolver", "--timeout")
SUBCOMMANDS = ("generate", "list", "show", "record", "publish", "check", "rotate", "retire", "tick")


def help_of(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main(["keys", *command, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", ["generate", "list", "show", "record", "check"])
def test_subcommands_that_send_no_update_do_not_offer_its_options(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    text = help_of(capsys, command)
    assert "--config FILE" in text and "--store STORE" in text
    for option in UPDATE_OPTIONS:
        assert option not in text
    for option in LOOKUP_OPTIONS:
        assert (option in text) == (command == "check")  # only check looks anything up
    assert main(["keys", command, "example.com", "--primary", "192.0.2.53"]) == 2
    assert "unknown option --primary" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["publish", "rotate", "retire", "tick"])
def test_subcommands_that_publish_offer_update_and_lookup_options(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    text = help_of(capsys, command)
    for option in (*UPDATE_OPTIONS, *LOOKUP_OPTIONS):
        assert option in text
    assert "--timeout SECONDS" in text and "--tsig-secret-file FILE" in text


@pytest.mark.parametrize("command", [(), *((c,) for c in SUBCOMMANDS)])
def test_help_has_no_restructuredtext_markup(
    capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    assert "`" not in help_of(capsys, *command)


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    config = tmp_path / "keys.toml"
    config.write_text(f'[keys]\nstore = "{tmp_path}/data/keys.db"\n')

    def run(*args: str) -> tuple[int, str, str]:
        status = main(["keys", *args, "--config", str(config), "--now", str(FIXED_NOW)])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_publish_and_rotate_wait_for_a_running_tick(keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert keys("generate", "example.com", "--selector", "sel", "--algorithm", "ed25519")[0] == 0
    tick = SqliteKeyStore(tmp_path / "data" / "keys.db")
    with tick.exclusive():  # a tick is running
        status, out, err = keys("publish", "example.com", "sel", "--manual")
        assert status == 75 and "another mailseal process is working on" in err and "TXT" not in out
        status, _, err = keys("rotate", "example.com", "--algorithm", "ed25519", "--manual")
        assert status == 75 and "try again later" in err
    assert [(e.selector, e.state) for e in tick.entries()] == [("sel", KeyState.GENERATED)]  # nothing changed
    status, out, _ = keys("publish", "example.com", "sel", "--manual")  # the tick is over
    assert status == 0 and "TXT" in out
    tick.close()
