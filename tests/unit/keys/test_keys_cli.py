"""``mailseal keys`` commands that need no DNS server: generate, list, show, record, manual publish, retire."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailseal.cli.main import main
from mailseal.core.keymaterial import load_private_key
from mailseal.core.keyrecord import KeyRecord
from support.clock import FIXED_NOW


@pytest.fixture
def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    config = tmp_path / "keys.toml"
    config.write_text(f'[keys]\nstore = "{tmp_path}/keys.db"\nttl = "1h"\n')

    def run(*args: str, now: int = FIXED_NOW) -> tuple[int, str, str]:
        status = main(["keys", *args, "--config", str(config), "--now", str(now)])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_generate_names_by_scheme_and_prints_the_record(keys) -> None:  # type: ignore[no-untyped-def]
    status, out, _ = keys("generate", "Example.COM", "--algorithm", "ed25519")
    assert status == 0
    assert "generated ms2026q1._domainkey.example.com (ed25519, 256 bits)" in out
    assert 'ms2026q1._domainkey.example.com. 3600 IN TXT "v=DKIM1; k=ed25519; p=' in out
    assert "PRIVATE" not in out
    status, out, _ = keys("generate", "example.com", "--algorithm", "ed25519", "--json")
    item = json.loads(out)
    assert (item["selector"], item["state"], item["next_action"]) == (
        "ms2026q1b",
        "generated",
        "publish on the next tick",
    )


def test_generate_rsa_with_chosen_selector_and_testing_flag(keys) -> None:  # type: ignore[no-untyped-def]
    status, out, _ = keys("generate", "example.com", "--selector", "mail", "--bits", "1024", "--testing")
    assert status == 0 and "(rsa, 1024 bits)" in out and "t=y" in out
    status, _, err = keys("generate", "example.com", "--selector", "mail")
    assert status == 1 and "never reused" in err
    status, _, err = keys("generate", "example.com", "--selector", "bad selector")
    assert status == 2 and "not a valid selector" in err
    status, _, err = keys("generate", "localhost")
    assert status == 2 and "not a valid domain" in err


def test_list_show_and_record(keys) -> None:  # type: ignore[no-untyped-def]
    keys("generate", "example.com", "--algorithm", "ed25519")
    status, out, _ = keys("list", now=FIXED_NOW + 7200)
    assert status == 0
    header, row = out.splitlines()
    assert header.split() == ["STATE", "DOMAIN", "SELECTOR", "TYPE", "AGE", "NEXT", "ACTION"]
    assert row.split()[:5] == ["generated", "example.com", "ms2026q1", "ed25519", "2h"]
    status, out, _ = keys("show", "example.com", "ms2026q1")
    assert "state:         generated" in out and "(new) -> generated" in out and "PRIVATE" not in out
    status, out, err = keys("show", "example.com", "ms2026q1", "--private")
    assert "keep it secret" in err
    pem = out[out.index("-----BEGIN") :]
    key = load_private_key(pem.encode())
    status, out, _ = keys("record", "example.com", "ms2026q1", "--json")
    record = json.loads(out)
    assert (
        record["name"] == "ms2026q1._domainkey.example.com"
        and record["type"] == "TXT"
        and record["ttl"] == 3600
    )
    assert KeyRecord.from_txt(record["value"].encode()).public_key_b64 == key.public_key_b64()
    assert "".join(record["strings"]) == record["value"]
    status, out, _ = keys("record", "example.com", "ms2026q1", "--revoked")
    assert out.strip() == 'ms2026q1._domainkey.example.com. 3600 IN TXT "v=DKIM1; k=ed25519; p="'
    status, _, err = keys("show", "example.com", "nope")
    assert status == 2 and "no key nope" in err


def test_list_is_empty_and_json(keys) -> None:  # type: ignore[no-untyped-def]
    assert "no keys" in keys("list")[1]
    keys("generate", "example.com", "--algorithm", "ed25519")
    (item,) = json.loads(keys("list", "--json")[1])
    assert item["name"] == "ms2026q1._domainkey.example.com" and "private" not in json.dumps(item).lower()


def test_manual_publish_prints_what_to_add(keys) -> None:  # type: ignore[no-untyped-def]
    keys("generate", "example.com", "--algorithm", "ed25519")
    status, out, _ = keys("publish", "example.com", "ms2026q1", "--manual")
    assert status == 0
    assert (
        "publish this TXT record" in out and 'ms2026q1._domainkey.example.com. 3600 IN TXT "v=DKIM1;' in out
    )
    assert "state:         published" in keys("show", "example.com", "ms2026q1")[1]


def test_retire_refuses_to_leave_a_domain_without_a_key(keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from mailseal.keys.sqlite_store import SqliteKeyStore
    from mailseal.keys.store import Change, KeyState

    keys("generate", "example.com", "--algorithm", "ed25519", "--selector", "only")
    store = SqliteKeyStore(tmp_path / "keys.db")
    entry = store.entry("example.com", "only")
    assert entry is not None
    store.apply([Change.to(entry, state=KeyState.ACTIVE, visible_at=FIXED_NOW, activated_at=FIXED_NOW)])
    store.close()
    status, _, err = keys("retire", "example.com", "only")
    assert status == 2 and "only active ed25519 key" in err and "--force" in err
    status, out, _ = keys("retire", "example.com", "only", "--force")
    assert status == 0 and "retire only._domainkey.example.com (active -> retiring)" in out
    status, _, err = keys("retire", "example.com", "only")
    assert status == 2 and "is retiring: cannot retire" in err


def test_tsig_flags_must_come_together(keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    status, _, err = keys("tick", "--tsig-name", "k.")
    assert status == 2 and "--tsig-secret-file" in err
    secret = tmp_path / "secret"
    secret.write_text("c2VjcmV0")
    secret.chmod(0o644)
    status, _, err = keys("tick", "--tsig-name", "k.", "--tsig-secret-file", str(secret))
    assert status == 2 and "chmod 600" in err


def test_rotate_refuses_a_second_rotation_under_way(keys) -> None:  # type: ignore[no-untyped-def]
    keys("generate", "example.com", "--algorithm", "ed25519", "--selector", "pending")
    status, _, err = keys("rotate", "example.com", "--algorithm", "ed25519", "--manual")
    assert status == 2 and "pending is generated" in err


def test_a_store_path_under_a_file_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "hostname"
    plain.write_text("mx\n")
    status = main(["keys", "list", "--store", str(plain / "keys.db")])
    err = capsys.readouterr().err
    assert status == 1
    assert err == f"mailseal: cannot create key store {plain / 'keys.db'}: Not a directory\n"


def test_a_tsig_secret_file_that_is_a_folder_is_one_line_not_a_traceback(keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    status, _, err = keys("tick", "--tsig-name", "k.", "--tsig-secret-file", str(folder))
    assert status == 2
    assert err == f"mailseal: {folder}: cannot read: Is a directory\n"


def test_any_other_os_error_is_one_line_with_the_path(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mailseal.cli.milter

    def unreadable(path: str) -> int:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(mailseal.cli.milter, "check_config", unreadable)
    assert main(["milter", "--check-config", "/etc/mailseal/milter.toml"]) == 2
    assert capsys.readouterr().err == "mailseal: /etc/mailseal/milter.toml: Permission denied\n"
