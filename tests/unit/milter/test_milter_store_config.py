"""Key table entries that name the key store; one TOML file for the milter and ``mailseal keys``; --check-config."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailseal.cli.main import main
from mailseal.core.algorithms import KeyType
from mailseal.keys.config import load_config as load_keys_config
from mailseal.keys.lifecycle import Lifecycle
from mailseal.keys.publish import DnsUpdatePublisher
from mailseal.keys.rotation import Generation
from mailseal.keys.source import CombinedKeySource, FileKeySource, StoreKeyEntry, StoreKeySource
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.milter.config import ConfigProblems, parse_config
from mailseal.milter.loading import config_key_source
from support.clock import FIXED_NOW
from support.keyflow import DOMAIN, POLICIES, POLICY
from support.memdns import FakeClock, MemoryZone
from support.milter_store import write_store_config

SHARED = """\
# One file for both: `mailseal milter --config F` and `mailseal keys tick --config F`.
[milter]
socket = "inet:8891@127.0.0.1"

[keys]                                  # the key lifecycle (mailseal keys)
store = "data/keys.db"                  # relative to this file, for both readers
rotate_every = "90d"
grace = "7d"

[keys.publish]
mode = "manual"

[keys.domains."example.org"]
rotate_every = "30d"

[key_table.example]                     # the milter's key table
domain = "example.com"
store = true

[key_table.org]
domain = "example.org"
store = true

[key_table.legacy]
domain = "example.net"
selector = "old"
file = "keys/old.key"

[signing_table]
".example.com" = "example"
"example.org" = ["org"]
"*" = "legacy"
"""


def test_store_entries_and_the_lifecycle_settings_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "mailseal.toml"
    path.write_text(SHARED)
    config = parse_config(SHARED, path=str(path), base=tmp_path)
    assert config.key_store == tmp_path / "data" / "keys.db"
    assert config.store_keys == (StoreKeyEntry("example", "example.com"), StoreKeyEntry("org", "example.org"))
    assert [k.name for k in config.keys] == ["legacy"]
    assert config.key_names == ("legacy", "example", "org")
    store_lines = [n for n, text in enumerate(SHARED.splitlines(), 1) if text == "store = true"]
    assert [config.key_lines["example"], config.key_lines["org"]] == store_lines
    keys_config = load_keys_config(path)  # the lifecycle reads the same file, and the same store
    assert keys_config.store == config.key_store
    assert keys_config.policies.for_domain("example.org").rotate_every == 30 * 86400
    source = config_key_source(config)
    assert isinstance(source, CombinedKeySource)
    files, store = source.sources
    assert isinstance(files, FileKeySource) and isinstance(store, StoreKeySource)
    assert store.path == config.key_store and store.entries == config.store_keys


def test_without_store_entries_the_source_is_just_the_files(tmp_path: Path) -> None:
    config = parse_config('[keys]\nstore = "/var/lib/mailseal/keys.db"\n', base=tmp_path)
    assert isinstance(config_key_source(config), FileKeySource)


def problems_of(text: str) -> list[tuple[int | None, str]]:
    with pytest.raises(ConfigProblems) as caught:
        parse_config(text, path="bad.toml")
    return list(caught.value.problems)


STORE = '[keys]\nstore = "/var/lib/mailseal/keys.db"\n'


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            '[key_table.k]\ndomain = "example.com"\nstore = true\n',
            3,
            'does not say where it is: add [keys] store = "/var/lib/mailseal/keys.db"',
        ),
        (
            STORE + '[key_table.k]\ndomain = "example.com"\nstore = true\nselector = "s"\n',
            6,
            "remove selector",
        ),
        (STORE + '[key_table.k]\ndomain = "example.com"\nfile = "k.key"\nstore = true\n', 5, "remove file"),
        (
            STORE + '[key_table.k]\ndomain = "example.com"\nstore = true\nalgorithm = "rsa-sha256"\n',
            6,
            "remove",
        ),
        (STORE + '[key_table.k]\ndomain = "%"\nstore = true\n', 4, '"%" cannot name the store\'s keys'),
        (STORE + '[key_table.k]\ndomain = "localhost"\nstore = true\n', 4, "is not a domain name"),
        (STORE + "[key_table.k]\nstore = true\n", 3, "needs domain"),
        (STORE + '[key_table.k]\ndomain = "example.com"\nstore = "yes"\n', 5, "must be true or false"),
        (STORE + '[key_table.k]\ndomain = "example.com"\nstroe = true\n', 5, "did you mean 'store'"),
        ("[keys]\nstore = 7\n", 2, "keys.store must be text"),
        ('[keys]\n\nrotate_evry = "90d"\n', 3, "did you mean 'rotate_every'"),
        ("keys = 3\n", 1, "keys must be a table"),
        ("key_table = 3\n", 1, "key_table must be a table"),
        (
            '[milter]\n\n[keys.rsa]\ndomain = "example.com"\nselector = "s"\nfile = "k"\n',
            3,
            "[keys.rsa] looks like a key table entry: those are [key_table.rsa]",
        ),
    ],
)
def test_store_entry_errors_point_at_their_line(text: str, line: int, words: str) -> None:
    found = problems_of(text)
    assert any(number == line and words in message for number, message in found), found


def test_the_signing_table_may_name_store_entries() -> None:
    config = parse_config(
        STORE + '[key_table.k]\ndomain = "example.com"\nstore = true\n[signing_table]\n"*" = "k"\n'
    )
    assert [r.keys for r in config.rules] == [("k",)]


# -- mailseal milter --check-config ---------------------------------------------------------------


def test_check_config_reports_an_unreadable_store_at_the_entry_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "missing" / "keys.db"
    path = write_store_config(tmp_path / "milter.toml", store, DOMAIN)
    assert main(["milter", "--check-config", str(path)]) == 1
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text == "store = true")
    assert capsys.readouterr().err == (
        f"{path}:{line}: key 'example' cannot be used: cannot open key store {store}: No such file or directory\n"
    )


def test_check_config_warns_when_the_store_has_no_active_key_yet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store_path = tmp_path / "keys.db"
    clock = FakeClock(FIXED_NOW)
    zone = MemoryZone()
    store = SqliteKeyStore(store_path)
    try:
        publisher = DnsUpdatePublisher(zone)
        lifecycle = Lifecycle(
            store, publisher_for=lambda _d: publisher, observer=zone, policies=POLICIES, clock=clock
        )
        lifecycle.generate(Generation(DOMAIN, KeyType.ED25519, 256, "ed1"))
        path = write_store_config(tmp_path / "milter.toml", store_path, DOMAIN)
        assert main(["milter", "--check-config", str(path)]) == 0
        captured = capsys.readouterr()
        assert "key 'example' has no key to sign with now: the key store" in captured.err
        assert captured.err.startswith("warning: ")
        assert "0 key(s) loaded, key store" in captured.out
        assert lifecycle.tick().ok
        clock.advance(POLICY.propagation_delay)
        assert lifecycle.tick().ok
        assert main(["milter", "--check-config", str(path)]) == 0
        captured = capsys.readouterr()
        assert captured.err == ""
        assert f"1 key(s) loaded, key store {store_path}, 1 signing rule(s)" in captured.out
    finally:
        store.close()
