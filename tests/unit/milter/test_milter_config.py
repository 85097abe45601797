"""Configuration: every error names its line; defaults; socket specs; the starter file."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailseal.core.canonicalization import Canon
from mailseal.milter.actions import Failure, Verdict
from mailseal.milter.config import (
    ConfigProblems,
    LineIndex,
    ListenAddress,
    load_config,
    parse_config,
    parse_http_address,
    parse_listen,
    starter_config,
)
from mailseal.milter.runtime import SenderSource

GOOD = """\
# a comment
[milter]
socket = "unix:/run/mailseal.sock"
workers = 2
authserv_id = "mx.example.com"
metrics = "127.0.0.1:9120"

[routing]
internal_networks = [
    "10.0.0.0/8",   # office
    "192.0.2.0/24",
]
verify_internal = true
sender = "envelope"

[signing]
canonicalization = "simple/relaxed"
expire_after = 604800

[key_table.rsa]
domain = "example.com"
selector = "r2026"
file = "keys/r.key"

[key_table."ed key"]
domain = "%"
selector = "e2026"
file = "/etc/mailseal/e.key"
algorithm = "ed25519-sha256"

[signing_table]
"*@example.com" = ["rsa", "ed key"]
".example.org" = "rsa"

[[verify.require]]
domain = "bank.example"
action = "reject"

[[verify.require]]
domain = "pay.example"
action = "quarantine"

[on_failure]
verify_dns_error = "tempfail"

[limits]
max_signatures = 3
"""


def test_a_full_configuration(tmp_path: Path) -> None:
    config = parse_config(GOOD, path="good.toml", base=tmp_path)
    assert config.milter.socket == ListenAddress("unix", path="/run/mailseal.sock")
    assert config.milter.workers == 2
    assert config.milter.metrics == ("127.0.0.1", 9120)
    assert config.authserv_id == "mx.example.com"
    assert [str(n) for n in config.routing.internal_networks] == ["10.0.0.0/8", "192.0.2.0/24"]
    assert config.routing.verify_internal
    assert config.sender_source is SenderSource.ENVELOPE
    assert (config.sign_options.header_canon, config.sign_options.body_canon) == (Canon.SIMPLE, Canon.RELAXED)
    assert config.sign_options.expire_after == 604800
    assert [(k.name, k.domain, k.path) for k in config.keys] == [
        ("rsa", "example.com", tmp_path / "keys/r.key"),  # relative to the file's folder
        ("ed key", "%", Path("/etc/mailseal/e.key")),
    ]
    assert [(r.pattern, r.keys) for r in config.rules] == [
        ("*@example.com", ("rsa", "ed key")),
        (".example.org", ("rsa",)),
    ]
    assert [(r.domain, r.action) for r in config.requirements] == [
        ("bank.example", Verdict.REJECT),
        ("pay.example", Verdict.QUARANTINE),
    ]
    assert config.failure.actions[Failure.VERIFY_DNS_ERROR] is Verdict.TEMPFAIL
    assert config.failure.actions[Failure.SIGN_KEY_UNAVAILABLE] is Verdict.TEMPFAIL  # default kept
    assert config.verify_options.max_signatures == 3
    assert config.key_lines == {"rsa": 23, "ed key": 28}


def test_an_empty_file_is_a_safe_default() -> None:
    config = parse_config("")
    assert str(config.milter.socket) == "inet:8891@127.0.0.1"
    assert [str(n) for n in config.routing.internal_networks] == ["127.0.0.0/8", "::1/128"]
    assert config.routing.sign and config.routing.verify and not config.routing.verify_internal
    assert config.rules == () and config.keys == ()
    assert config.failure.actions[Failure.SIGN_INTERNAL_ERROR] is Verdict.TEMPFAIL


def problems_of(text: str) -> list[tuple[int | None, str]]:
    with pytest.raises(ConfigProblems) as caught:
        parse_config(text, path="bad.toml")
    return list(caught.value.problems)


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[milter]\nsocket = "inet:8891@127.0.0.1"\nworkrs = 2\n', 3, "did you mean 'workers'"),
        ("[milter]\n\nworkers = 'two'\n", 3, "milter.workers must be a whole number"),
        ("[milter]\nworkers = -1\n", 2, "from 0 to 256"),
        ('[milter]\nsocket = "inet:8891"\n', 2, "inet:8891@127.0.0.1"),
        ('[milter]\nsocket_mode = "660x"\n', 2, "octal"),
        ('[routing]\ninternal_networks = [\n  "10.0.0.0/8",\n  "10.1.0.0/99",\n]\n', 2, "'10.1.0.0/99'"),
        ('[routing]\nsender = "header"\n', 2, '"from"'),
        ('[signing]\ncanonicalization = "loose"\n', 2, "simple or relaxed"),
        ('[key_table.k]\ndomain = "example.com"\nselector = "s"\n', 1, "needs file"),
        (
            '[key_table.k]\ndomain = "example.com"\nselector = "bad selector"\nfile = "k"\n',
            3,
            "not a valid selector",
        ),
        (
            '[key_table.k]\ndomain = "example.com"\nselector = "s"\nfile = "k"\nalgorithm = "rsa-sha1"\n',
            5,
            "rsa-sha256 or",
        ),
        ('[signing_table]\n"x@example.com" = ["nokey"]\n', 2, "unknown key 'nokey'"),
        ("[signing_table]\n\n\n'*.example.com' = []\n", 4, "names no keys"),
        (
            '[[verify.require]]\ndomain = "a.example"\n\n[[verify.require]]\ndomain = "b.example"\naction = "bounce"\n',
            6,
            "must be reject",
        ),
        ('[on_failure]\nsign_key_unavailable = "panic"\n', 2, "on_failure.sign_key_unavailable"),
        ("[limits]\nmax_signatures = 0\n", 2, "from 1 to 100"),
        ("[unknown]\nx = 1\n", 1, "unknown setting 'unknown'"),
    ],
)
def test_semantic_errors_point_at_their_line(text: str, line: int, words: str) -> None:
    found = problems_of(text)
    assert any(number == line and words in message for number, message in found), found


def test_syntax_errors_carry_tomllibs_line() -> None:
    ((line, message),) = problems_of('[milter]\nsocket = "inet:1@h"\nworkers = = 2\n')
    assert line == 3
    assert message.startswith("TOML syntax:")


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    found = problems_of('[milter]\nworkers = "x"\nlog_level = "loud"\n\n[routing]\nsign = "yes"\n')
    assert [line for line, _ in found] == [2, 3, 6]
    text = str(ConfigProblems("bad.toml", found))
    assert text.splitlines()[0].startswith("bad.toml:2: ")


def test_duplicate_rules_are_reported() -> None:
    text = (
        '[key_table.k]\ndomain = "example.com"\nselector = "s"\nfile = "k"\n'
        '[signing_table]\n"example.com" = ["k"]\n"*@example.com" = ["k"]\n'
    )
    assert any("means the same as" in message for _, message in problems_of(text))


def test_load_config_reports_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigProblems, match="cannot read the configuration"):
        load_config(tmp_path / "missing.toml")


def test_line_index_follows_tables_arrays_and_strings() -> None:
    index = LineIndex(
        'title = """\nnot = "a key"\n"""\n'  # 1-3: a multi-line string holding key-like text
        "[a]\n"  # 4
        "list = [\n  { x = 1 },\n]\n"  # 5-7
        "b.c = 2\n"  # 8: a dotted key
        '"quoted.key" = 3\n'  # 9
        "[[t]]\n"  # 10
        "v = 1\n"  # 11
        "[[t]]\n"  # 12
        "v = 2  # comment [ not a bracket\n"  # 13
        "w = 'x]'\n"  # 14
    )
    assert index.line_of(("title",)) == 1
    assert index.line_of(("not",)) is None
    assert index.line_of(("a", "list")) == 5
    assert index.line_of(("a", "list", 0, "x")) == 5  # inside: the holding key's line
    assert index.line_of(("a", "b", "c")) == 8
    assert index.line_of(("a", "quoted.key")) == 9
    assert index.line_of(("t", 0, "v")) == 11
    assert index.line_of(("t", 1, "v")) == 13
    assert index.line_of(("t", 1, "w")) == 14
    assert index.line_of(("t", 1, "missing")) == 12  # falls back to the table


@pytest.mark.parametrize(
    ("text", "expected", "postfix"),
    [
        ("inet:8891@127.0.0.1", ListenAddress("inet", "127.0.0.1", 8891), "inet:127.0.0.1:8891"),
        ("inet6:8891@[::1]", ListenAddress("inet6", "::1", 8891), "inet:[::1]:8891"),
        ("unix:/run/m.sock", ListenAddress("unix", path="/run/m.sock"), "unix:/run/m.sock"),
        ("local:/run/m.sock", ListenAddress("unix", path="/run/m.sock"), "unix:/run/m.sock"),
    ],
)
def test_listen_addresses(text: str, expected: ListenAddress, postfix: str) -> None:
    assert parse_listen(text) == expected
    assert expected.postfix() == postfix


@pytest.mark.parametrize("text", ["inet:8891", "inet:99999@127.0.0.1", "tcp:1@h", "unix:", "8891"])
def test_bad_listen_addresses(text: str) -> None:
    with pytest.raises(ValueError, match="inet"):
        parse_listen(text)


def test_http_addresses() -> None:
    assert parse_http_address("9120") == ("127.0.0.1", 9120)
    assert parse_http_address("192.0.2.1:9120") == ("192.0.2.1", 9120)
    assert parse_http_address("[::1]:9120") == ("::1", 9120)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_http_address("host:port")


def test_the_starter_configuration_parses(tmp_path: Path) -> None:
    text = starter_config(domain="example.com", selector="ms202601", key_file="/k/ms.key")
    config = parse_config(text, base=tmp_path)
    assert [(k.domain, k.selector, str(k.path)) for k in config.keys] == [
        ("example.com", "ms202601", "/k/ms.key")
    ]
    assert [r.pattern for r in config.rules] == [".example.com"]


def test_the_documented_reference_configuration_parses() -> None:
    docs = Path(__file__).resolve().parents[3] / "README.md"  # the reference moved there from docs/milter.md
    text = docs.read_text()
    block = text.split("### Configuration reference", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    config = parse_config(block, base=Path("/etc/mailseal"))
    assert [k.name for k in config.keys] == ["rsa2026", "ed2026"]
    assert [(k.name, k.domain) for k in config.store_keys] == [("net", "example.net")]
    assert config.key_store == Path("/var/lib/mailseal/keys.db")
    assert config.milter.key_check_interval == 5
    assert set(config.failure.actions) == set(Failure)  # every failure is documented
    for failure in Failure:
        assert f"`{failure.value}`" in text
