"""The [keys] TOML configuration: durations, per-domain overrides, TSIG secrets kept private, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailseal.configfile import ConfigProblems
from mailseal.core.algorithms import KeyType
from mailseal.errors import ConfigError, UsageError
from mailseal.keys.config import load_config, parse_duration
from mailseal.keys.rotation import DAY

SECRET = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I="


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_durations() -> None:
    assert [parse_duration(v) for v in ("45s", "30m", "12h", "7d", "2w", "90", 3600, " 5 D ")] == [
        45, 1800, 43200, 7 * DAY, 14 * DAY, 90, 3600, 5 * DAY,
    ]  # fmt: skip
    for bad in ("7 days", "-1d", True, 1.5, "d", -5):
        with pytest.raises(UsageError, match="duration"):
            parse_duration(bad)


def test_full_config(tmp_path: Path) -> None:
    secret_file = write(tmp_path / "tsig.key", f"{SECRET}\n")
    config = load_config(
        write(
            tmp_path / "mailseal.toml",
            f"""
[milter]              # another component's table is ignored
socket = "inet:8891"

[keys]
store = "{tmp_path}/keys.db"
rotate_every = "90d"
grace = "3d"
propagation_delay = "10m"
revoked_for = "1d"
algorithm = "ed25519"
selector_scheme = "mail{{year}}{{month}}"
ttl = 600
authoritative = ["192.0.2.1", "[2001:db8::1]:5300"]
resolvers = ["127.0.0.1:53"]

[keys.publish]
primary = "192.0.2.53:5353"
zone = "example.com"
tsig_name = "mailseal."
tsig_secret_file = "tsig.key"

[keys.domains."Example.ORG"]
rotate_every = "never"
[keys.domains."Example.ORG".publish]
mode = "manual"
""",
        )
    )
    policy = config.policies.default
    assert (policy.rotate_every, policy.grace, policy.propagation_delay, policy.revoked_for, policy.ttl) == (
        90 * DAY, 3 * DAY, 600, DAY, 600,
    )  # fmt: skip
    assert policy.key_type is KeyType.ED25519 and policy.selector_scheme == "mail{year}{month}"
    assert config.store == tmp_path / "keys.db"
    assert config.authoritative == ("192.0.2.1", "[2001:db8::1]:5300")
    publish = config.publish_for("example.com")
    assert (publish.mode, publish.primary, publish.zone) == ("update", "192.0.2.53:5353", "example.com")
    assert publish.tsig is not None and publish.tsig.name == "mailseal." and publish.tsig.secret == SECRET
    assert SECRET not in repr(config)
    org = config.policies.for_domain("example.org.")
    assert org.rotate_every is None and org.grace == 3 * DAY  # inherits the rest
    assert config.publish_for("EXAMPLE.org").mode == "manual"
    assert secret_file.exists()


def test_tsig_key_block_as_tsig_keygen_prints_it(tmp_path: Path) -> None:
    write(
        tmp_path / "k.conf",
        f'key "ddns-key.example.com" {{\n\talgorithm hmac-sha512;\n\tsecret "{SECRET}";\n}};\n',
    )
    config = load_config(
        write(tmp_path / "keys.toml", '[keys.publish]\nprimary = "192.0.2.1"\ntsig_secret_file = "k.conf"\n')
    )
    tsig = config.publish.tsig
    assert tsig is not None and (tsig.name, tsig.algorithm, tsig.secret) == (
        "ddns-key.example.com",
        "hmac-sha512",
        SECRET,
    )


def test_secrets_in_readable_files_are_refused(tmp_path: Path) -> None:
    inline = write(
        tmp_path / "keys.toml",
        f'[keys.publish]\nprimary = "192.0.2.1"\ntsig_name = "k."\ntsig_secret = "{SECRET}"\n',
        mode=0o644,
    )
    with pytest.raises(ConfigError, match=f"chmod 600 {inline}"):
        load_config(inline)
    inline.chmod(0o600)
    assert load_config(inline).publish.tsig is not None
    write(tmp_path / "tsig.key", SECRET, mode=0o640)
    named = write(
        tmp_path / "b.toml",
        '[keys.publish]\nprimary = "192.0.2.1"\ntsig_name = "k."\ntsig_secret_file = "tsig.key"\n',
    )
    with pytest.raises(ConfigError, match="chmod 600"):
        load_config(named)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[keys]\nrotate_evry = '7d'\n", "unknown setting 'rotate_evry'"),
        ("[keys]\ngrace = 'a week'\n", "keys.grace: expected a duration"),
        ("[keys]\nalgorithm = 'dsa'\n", "use rsa or ed25519"),
        ("[keys]\nselector_scheme = 'x{week}'\n", "unknown placeholder"),
        ("[keys.publish]\nmode = 'update'\n", "mode update needs primary"),
        ("[keys.publish]\nprimary = 'ns1.example.com'\n", "is not an IP address"),
        ("[keys.publish]\nprimary = '192.0.2.1'\ntsig_name = 'k.'\n", "tsig_name needs tsig_secret_file"),
        ("[keys]\nauthoritative = '192.0.2.1'\n", "must be a list"),
        ("[keys\n", "TOML syntax"),
    ],
)
def test_errors_name_the_file_and_setting(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "keys.toml", text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert str(caught.value).startswith(str(path))


def test_syntax_error_carries_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "keys.toml", "[keys]\nstore = '/x'\ngrace = = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.line == 3


def test_no_file_means_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    config = load_config(None)
    assert config.publish.mode == "manual"
    assert config.policies.default.rotate_every == 180 * DAY
    assert isinstance(config.store, Path) and config.store.name == "keys.db"


def test_every_problem_is_reported_at_once_with_its_line_and_a_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path / "keys.toml",
        """\
[keys]
rotate_evry = "90d"
grace = "a week"
algorithm = "dsa"

[keys.publish]
primary = "ns1.example.com"
tsig_nmae = "k."

[keys.domains."example.org"]
revoked_for = "soon"
selector_scheme = "x{week}"
""",
    )
    with pytest.raises(ConfigProblems) as caught:
        load_config(path)
    found = [(line, message) for line, message in caught.value.problems]
    assert [line for line, _ in found] == [2, 3, 4, 7, 8, 11, 12]
    text = str(caught.value)
    assert f"{path}:2: unknown setting 'rotate_evry' in [keys] (did you mean 'rotate_every'?)" in text
    assert f"{path}:3: keys.grace: expected a duration" in text
    assert f"{path}:8: unknown setting 'tsig_nmae' in [keys.publish] (did you mean 'tsig_name'?)" in text
    assert f'{path}:11: keys.domains."example.org".revoked_for: expected a duration' in text
    assert "unknown placeholder" in text and "is not an IP address" in text and "use rsa or ed25519" in text


def test_a_tsig_secret_problem_points_at_the_setting_that_names_it(tmp_path: Path) -> None:
    write(tmp_path / "tsig.key", SECRET, mode=0o644)
    path = write(
        tmp_path / "keys.toml",
        '[keys]\nttl = 60\n\n[keys.publish]\nprimary = "192.0.2.1"\ntsig_name = "k."\ntsig_secret_file = "tsig.key"\n',
    )
    with pytest.raises(ConfigProblems) as caught:
        load_config(path)
    ((line, message),) = caught.value.problems
    assert line == 7 and f"chmod 600 {tmp_path / 'tsig.key'}" in message
