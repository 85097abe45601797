"""The mailseal milter behind a real Postfix: issue 4's acceptance tests, end to end.

One private Postfix (tests/support/postfix.py) relays everything to our SMTP
sink; ``python -m mailseal milter`` runs beside it as Postfix would see it in
production (a separate process, two workers, ``milter_default_action =
tempfail``). What comes out of Postfix is checked, not what the milter said:
signatures are verified by mailseal, dkimpy and OpenDKIM (offline), and
Authentication-Results are read from the delivered bytes.

To stay fast, one Postfix serves every test: its main listener uses the shared
milter, and extra smtpd listeners use milters that only some tests need (DNS
down, a milter that is killed, one that is reloaded), each on a port fixed
before Postfix starts so that a restarted milter is found again.

A missing Postfix, OpenDKIM or dkimpy skips these tests, or fails them when
MAILSEAL_REQUIRE_PEERS is set (tests/support/required.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

import mailseal
from mailseal import DKIMResult, PrivateKey, generate_private_key
from mailseal.core.algorithms import KeyType
from mailseal.core.results import SignatureResult
from mailseal.dns.memory import InMemoryResolver
from mailseal.keys.files import write_private_key
from support import peers
from support.dnsserver import ScriptedDnsServer, txt_records
from support.milter_harness import toml_string
from support.milter_process import MilterProcess
from support.postfix import (
    EXTERNAL,
    INTERNAL,
    LOOPBACK,
    Client,
    PostfixInstance,
    free_tcp_port,
    postfix_available,
    roaming_user,
)
from support.required import needs
from support.smtp_sink import SinkMessage

pytestmark = [
    pytest.mark.integration,
    needs(
        postfix_available() and peers.have_opendkim() and peers.dkimpy_supports_ed25519(),
        "postfix, opendkim or dkimpy with PyNaCl",
        "scripts/test.sh installs them",
    ),
]

AUTHSERV_ID = "verify.mailseal.test"  # deliberately not Postfix's myhostname (mx.mailseal.test)
DOMAIN = "example.com"
LISTENERS = ("dnsdown", "dnsstrict", "crash", "reload")
DNS_TIMEOUT = 1.0


# --------------------------------------------------------------------------- keys, DNS, config


@dataclass(frozen=True)
class Key:
    key: PrivateKey
    domain: str
    selector: str


@pytest.fixture(scope="module")
def keys(rsa_key: PrivateKey, ed_key: PrivateKey) -> dict[str, Key]:
    """Every signing key by name; each rule-specific key is its own Ed25519 key (cheap to make)."""

    def fresh() -> PrivateKey:
        return generate_private_key(KeyType.ED25519)

    return {
        "rsa": Key(rsa_key, DOMAIN, "rsa2026"),
        "ed": Key(ed_key, DOMAIN, "ed2026"),
        "ceo": Key(fresh(), DOMAIN, "ceo"),
        "sales": Key(fresh(), DOMAIN, "sales"),
        "org": Key(fresh(), "example.org", "org"),
        "eu": Key(fresh(), "eu.example.org", "eu"),
    }


SIGNING_TABLE: Mapping[str, Sequence[str]] = {
    "ceo@example.com": ["ceo"],  # one address
    "sales-*@example.com": ["sales"],  # a group: wildcard local part
    "example.com": ["rsa"],  # the domain
    "dual@example.com": ["rsa", "ed"],  # one rule, two keys: RSA and Ed25519 signatures
    ".example.org": ["org"],  # the domain and every subdomain
    ".eu.example.org": ["eu"],  # a longer suffix wins
}


@pytest.fixture(scope="module")
def records(keys: dict[str, Key]) -> dict[str, str]:
    """The published key records (TXT owner name -> text)."""
    return {
        f"{k.selector}._domainkey.{k.domain}": f"v=DKIM1; k={k.key.key_type}; p={k.key.public_key_b64()}"
        for k in keys.values()
    }


@pytest.fixture(scope="module")
def dns_server(records: dict[str, str]) -> Iterator[ScriptedDnsServer]:
    """A loopback DNS server publishing the key records (NXDOMAIN for anything else)."""

    with ScriptedDnsServer(txt_records(records)) as server:
        yield server


@pytest.fixture(scope="module")
def silent_dns() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1 that takes DNS queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def queries_received(sock: socket.socket) -> int:
    """Datagrams that reached the silent server since the last call (read, never answered)."""
    count = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            sock.recv(65535)
            count += 1
    return count


def write_config(
    folder: Path,
    keys: Mapping[str, Key],
    *,
    port: int,
    nameserver: str,
    table: Mapping[str, Sequence[str]] = SIGNING_TABLE,
    workers: int = 2,
    extra: str = "",
    name: str = "milter.toml",
) -> Path:
    """A milter.toml in the documented format (docs/milter.md), keys written next to it (0600)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "[milter]",
        f'socket = "inet:{port}@{LOOPBACK}"',
        f"workers = {workers}",
        f"authserv_id = {toml_string(AUTHSERV_ID)}",
        "shutdown_grace = 2",
        "",
        "[routing]",
        'internal_networks = ["127.0.0.0/8"]',
        "",
        "[verify]",
        f"nameservers = [{toml_string(nameserver)}]",
        f"dns_timeout = {DNS_TIMEOUT}",
        "",
    ]
    for key_name, entry in keys.items():
        path = folder / f"{key_name}.key"
        if not path.exists():
            write_private_key(path, entry.key)
        lines += [
            f"[key_table.{key_name}]",
            f"domain = {toml_string(entry.domain)}",
            f"selector = {toml_string(entry.selector)}",
            f"file = {toml_string(str(path))}",
            "",
        ]
    lines.append("[signing_table]")
    lines += [
        f"{toml_string(p)} = [{', '.join(toml_string(n) for n in names)}]" for p, names in table.items()
    ]
    path = folder / name
    path.write_text("\n".join([*lines, "", extra]) + "\n")
    return path


# --------------------------------------------------------------------------- processes


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] != "Z":
                    parents[int(entry.name)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        todo += children
    return found


def kill_milter(process: MilterProcess) -> None:
    """Crash the whole milter at once: supervisor and workers, SIGKILL (frozen first, so none respawns)."""
    pids = [process.proc.pid, *descendants(process.proc.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.proc.wait(10)
    process.stop()  # reaps and closes the pipes
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            raise AssertionError(f"milter processes {pids} still alive")
        time.sleep(0.02)


def start_milter(config: Path, *, workers: int = 2) -> MilterProcess:
    """``python -m mailseal milter --config FILE``; returns once it listens."""
    process = MilterProcess(["--config", str(config)])
    assert process.wait_for(rf"with {workers} worker", 60) is not None, process.log
    return process


@dataclass
class Setup:
    """The shared Postfix, the shared milter, and what the other listeners' milters need."""

    postfix: PostfixInstance
    milter: MilterProcess
    folder: Path
    ports: dict[str, int]
    """Milter port of each extra listener."""


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Key], dns_server: ScriptedDnsServer
) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("milter-postfix")
    ports = {name: free_tcp_port() for name in LISTENERS}
    config = write_config(folder / "main", keys, port=0, nameserver=dns_server.nameserver)
    with start_milter(config) as milter:
        host, port = milter.address
        listeners = {name: {"smtpd_milters": f"inet:{LOOPBACK}:{ports[name]}"} for name in LISTENERS}
        with PostfixInstance(milters=f"inet:{host}:{port}", listeners=listeners) as pf:
            yield Setup(pf, milter, folder, ports)


@pytest.fixture
def postfix(setup: Setup) -> PostfixInstance:
    return setup.postfix


# --------------------------------------------------------------------------- messages and results


def message(marker: str, sender: str = f"alice@{DOMAIN}", *, extra_headers: str = "") -> bytes:
    """Header whitespace, folding and an 8-bit body that tell the canonicalizations apart."""
    return (
        f"{extra_headers}"
        f"From: Sender <{sender}>\r\n"
        "To: Bob <bob@example.net>\r\n"
        "Subject:  End-to-end   check\r\n\t folded  continuation\r\n"
        "Date: Thu, 1 Jan 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{marker}@mailseal.test>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Grüße,  with  double  spaces \t \r\n"
        " and a line starting with a space\r\n"
        ".a line starting with a dot\r\n"
        "\r\n"
        "\r\n"
    ).encode()


def by_marker(marker: str) -> Callable[[SinkMessage], bool]:
    needle = f"<{marker}@mailseal.test>".encode()
    return lambda m: needle in m.data


def deliver(
    pf: PostfixInstance, msg: bytes, marker: str, *, client: Client = INTERNAL, listener: str = "smtp"
) -> bytes:
    """Submit through Postfix and return the message as delivered to the sink."""
    result = pf.submit(msg, client=client, listener=listener)
    assert result.accepted, result
    assert pf.sink is not None
    return pf.sink.wait_for_message(by_marker(marker)).data


def header_values(delivered: bytes, name: str) -> list[str]:
    """Each field's unfolded value, whitespace runs collapsed, top first."""
    head = delivered.split(b"\r\n\r\n", 1)[0].decode()
    pattern = rf"^{re.escape(name)}:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)"
    return [" ".join(v.split()) for v in re.findall(pattern, head, re.MULTILINE | re.IGNORECASE)]


def dkim_tags(delivered: bytes) -> list[dict[str, str]]:
    """The tags of each DKIM-Signature field, top first."""
    return [
        dict(item.split("=", 1) for item in "".join(value.split()).split(";") if "=" in item)
        for value in header_values(delivered, "DKIM-Signature")
    ]


def our_authres(delivered: bytes) -> list[str]:
    """Authentication-Results fields with our authserv-id."""
    return [
        v
        for v in header_values(delivered, "Authentication-Results")
        if v.split(";")[0].lower() == AUTHSERV_ID
    ]


def mailseal_verify(delivered: bytes, records: Mapping[str, str]) -> list[SignatureResult]:
    return list(mailseal.verify_sync(delivered, resolver=InMemoryResolver(dict(records))).signatures)


def assert_all_peers_pass(delivered: bytes, records: Mapping[str, str], count: int) -> None:
    """mailseal, dkimpy and OpenDKIM (offline) each pass every one of ``count`` signatures."""
    assert [s.result for s in mailseal_verify(delivered, records)] == [DKIMResult.PASS] * count
    assert peers.dkimpy_verify(delivered, records) == ["pass"] * count
    assert peers.opendkim_verify(delivered, records) == ["pass"] * count


# --------------------------------------------------------------------------- outgoing mail is signed


@pytest.mark.parametrize(
    "client", [INTERNAL, roaming_user("alice")], ids=["internal-network", "authenticated-roaming"]
)
def test_outgoing_mail_is_signed_and_every_verifier_passes_it(
    client: Client, postfix: PostfixInstance, records: dict[str, str]
) -> None:
    marker = f"out-{client.login or 'internal'}"
    delivered = deliver(postfix, message(marker), marker, client=client)

    tags = dkim_tags(delivered)
    assert len(tags) == 1
    assert (tags[0]["d"], tags[0]["s"], tags[0]["a"], tags[0]["c"]) == (
        DOMAIN,
        "rsa2026",
        "rsa-sha256",
        "relaxed/relaxed",
    )
    assert tags[0]["h"].lower().split(":").count("from") == 2  # oversigned
    # The 8-bit body went through Postfix untouched, so what was signed is what arrived.
    assert "Grüße,  with  double  spaces \t \r\n".encode() in delivered
    assert_all_peers_pass(delivered, records, 1)
    assert our_authres(delivered) == []  # outgoing mail is signed, not verified


def test_dual_rsa_and_ed25519_signatures_from_one_rule_verify_everywhere(
    postfix: PostfixInstance, records: dict[str, str]
) -> None:
    delivered = deliver(postfix, message("dual", f"dual@{DOMAIN}"), "dual")
    tags = dkim_tags(delivered)
    assert sorted((t["a"], t["s"]) for t in tags) == [("ed25519-sha256", "ed2026"), ("rsa-sha256", "rsa2026")]
    assert_all_peers_pass(delivered, records, 2)


@pytest.mark.parametrize(
    ("sender", "expected"),
    [
        ("ceo@example.com", ("example.com", "ceo")),  # per-user rule beats the domain rule
        ("Sales-EU@Example.COM", ("example.com", "sales")),  # group: wildcard local part, any case
        ("salesperson@example.com", ("example.com", "rsa2026")),  # not sales-*: the domain rule
        ("alice@example.com", ("example.com", "rsa2026")),  # per-domain
        ("bob@example.org", ("example.org", "org")),  # .example.org covers the domain itself
        ("bob@mail.example.org", ("example.org", "org")),  # ... and its subdomains
        ("carol@eu.example.org", ("eu.example.org", "eu")),  # the longest suffix wins
        ("dave@paris.eu.example.org", ("eu.example.org", "eu")),
        ("eve@example.net", None),  # no rule covers it: passes unsigned
    ],
)
def test_signing_table_picks_the_key_for_each_sender(
    sender: str, expected: tuple[str, str] | None, setup: Setup, records: dict[str, str]
) -> None:
    marker = "rule-" + re.sub(r"[^a-z0-9]", "-", sender.lower())
    mark = setup.milter.mark()
    delivered = deliver(setup.postfix, message(marker, sender), marker)
    tags = dkim_tags(delivered)
    if expected is None:
        assert tags == []
        line = setup.milter.wait_for(r"sender_domain=example\.net .*unsigned=unlisted", start=mark)
        assert line is not None
        assert "eve" not in line  # local parts are never logged
        return
    assert [(t["d"], t["s"]) for t in tags] == [expected]
    # Every rule's key is a different key: only the expected one's record makes it pass.
    results = mailseal_verify(delivered, records)
    assert [(r.result, r.domain, r.selector) for r in results] == [(DKIMResult.PASS, *expected)]
    assert peers.dkimpy_verify(delivered, records) == ["pass"]


# --------------------------------------------------------------------------- incoming mail is verified


def outsider_signed(msg: bytes, key: PrivateKey) -> bytes:
    """``msg`` signed by example.com's real key, as it would arrive from outside."""
    return mailseal.sign(msg, key=key, domain=DOMAIN, selector="rsa2026") + msg


@pytest.mark.parametrize("case", ["pass", "fail", "none"])
def test_incoming_mail_gets_one_authentication_results_with_the_verdict(
    case: str, postfix: PostfixInstance, rsa_key: PrivateKey, records: dict[str, str]
) -> None:
    marker = f"in-{case}"
    msg = message(marker)
    if case != "none":
        msg = outsider_signed(msg, rsa_key)
    if case == "fail":
        msg = msg.replace(b"starting with a dot", b"starting with a DOT")  # changed after signing
    delivered = deliver(postfix, msg, marker, client=EXTERNAL)

    authres = header_values(delivered, "Authentication-Results")
    assert len(authres) == 1
    assert our_authres(delivered) == authres
    assert authres[0].startswith(f"{AUTHSERV_ID}; dkim={case}")
    tags = dkim_tags(delivered)
    if case == "none":
        assert tags == []  # mail from outside is never signed by us
        return
    assert len(tags) == 1  # only the sender's signature
    assert "header.d=example.com header.s=rsa2026" in authres[0]
    assert "header.a=rsa-sha256" in authres[0]
    # The verdict is right: the other verifiers agree on the delivered bytes.
    assert peers.dkimpy_verify(delivered, records) == [case]
    assert [s.result for s in mailseal_verify(delivered, records)] == [DKIMResult(case)]


def test_forged_authentication_results_with_our_authserv_id_are_removed(setup: Setup) -> None:
    forged = (
        f"Authentication-Results: {AUTHSERV_ID}; dkim=pass header.d=example.com\r\n"
        f"Authentication-Results: {AUTHSERV_ID.upper()};\r\n\tdkim=pass header.d=bank.example\r\n"
        "Authentication-Results: mx.other.example; dkim=pass header.d=other.example\r\n"
        f"Authentication-Results: {AUTHSERV_ID}.evil.example; dkim=pass header.d=evil.example\r\n"
    )
    mark = setup.milter.mark()
    delivered = deliver(setup.postfix, message("forged", extra_headers=forged), "forged", client=EXTERNAL)

    authres = header_values(delivered, "Authentication-Results")
    assert authres == [
        f"{AUTHSERV_ID}; dkim=none",  # ours, on top: the message carries no signature at all
        "mx.other.example; dkim=pass header.d=other.example",  # other servers' fields are kept
        f"{AUTHSERV_ID}.evil.example; dkim=pass header.d=evil.example",  # not our id, only a prefix of it
    ]
    assert b"bank.example" not in delivered
    assert setup.milter.wait_for(r"origin=external .*dkim=none removed_authres=2", start=mark) is not None


# --------------------------------------------------------------------------- DNS trouble while verifying


@pytest.fixture(scope="module")
def dns_down(setup: Setup, keys: dict[str, Key], silent_dns: socket.socket) -> Iterator[None]:
    """Milters for the dnsdown (default policy) and dnsstrict (verify_dns_error = tempfail) listeners,
    both asking a nameserver that never answers."""
    nameserver = "{}:{}".format(*silent_dns.getsockname())
    configs = {
        "dnsdown": write_config(
            setup.folder / "dnsdown", keys, port=setup.ports["dnsdown"], nameserver=nameserver, workers=1
        ),
        "dnsstrict": write_config(
            setup.folder / "dnsstrict",
            keys,
            port=setup.ports["dnsstrict"],
            nameserver=nameserver,
            workers=1,
            extra='[on_failure]\nverify_dns_error = "tempfail"',
        ),
    }
    with contextlib.ExitStack() as stack:
        for config in configs.values():
            stack.enter_context(start_milter(config, workers=1))
        yield


@pytest.mark.usefixtures("dns_down")
def test_dns_timeout_by_default_accepts_with_temperror(
    postfix: PostfixInstance, rsa_key: PrivateKey, silent_dns: socket.socket
) -> None:
    queries_received(silent_dns)
    started = time.monotonic()
    delivered = deliver(
        postfix,
        outsider_signed(message("dns-accept"), rsa_key),
        "dns-accept",
        client=EXTERNAL,
        listener="dnsdown",
    )
    assert time.monotonic() - started >= DNS_TIMEOUT * 0.9  # it did wait for the lookup
    assert queries_received(silent_dns) >= 1  # ... which went to the silent server
    (authres,) = header_values(delivered, "Authentication-Results")
    assert authres.startswith(f"{AUTHSERV_ID}; dkim=temperror")
    assert "header.d=example.com header.s=rsa2026" in authres


@pytest.mark.usefixtures("dns_down")
def test_dns_timeout_with_tempfail_policy_answers_451_at_end_of_data(
    postfix: PostfixInstance, rsa_key: PrivateKey, silent_dns: socket.socket
) -> None:
    queries_received(silent_dns)
    result = postfix.submit(
        outsider_signed(message("dns-tempfail"), rsa_key), internal=False, listener="dnsstrict"
    )
    assert (result.code, result.stage) == (451, "data")
    assert result.text.startswith("4.4.3 mailseal: a DKIM key could not be looked up"), result.text
    assert queries_received(silent_dns) >= 1
    # Refused, not queued: the sending MTA keeps it and retries.
    assert postfix.queue() == []
    assert not any(by_marker("dns-tempfail")(m) for m in postfix.delivered())


# --------------------------------------------------------------------------- a dead milter loses nothing


def test_milter_killed_mid_session_tempfails_and_the_mail_is_delivered_later_exactly_once(
    setup: Setup, keys: dict[str, Key], dns_server: ScriptedDnsServer, records: dict[str, str]
) -> None:
    pf = setup.postfix
    config = write_config(
        setup.folder / "crash", keys, port=setup.ports["crash"], nameserver=dns_server.nameserver
    )
    milter = start_milter(config)
    try:
        # Killed between MAIL and DATA of a session it is part of: Postfix answers 451 at DATA.
        with pf.smtp(listener="crash") as session:
            assert session.mail(f"alice@{DOMAIN}")[0] == 250
            assert session.rcpt("bob@example.net")[0] == 250
            kill_milter(milter)
            code, text = session.data(message("crash-direct"))
        assert (code, text[:5]) == (451, b"4.7.1")
        assert pf.queue() == []  # refused, so nothing of it stays with Postfix

        # Postfix -> Postfix: the sending queue keeps the mail deferred while the milter is down.
        with PostfixInstance(
            relay=(LOOPBACK, pf.ports["crash"]), hostname="upstream.mailseal.test"
        ) as upstream:
            result = upstream.submit(message("crash-relayed"))
            assert result.accepted
            queued = upstream.wait_deferred()
            assert [q.queue_id for q in queued] == [result.queue_id]
            assert "451 4.7.1" in queued[0].delay_reasons[0]
            assert pf.queue() == []
            assert not any(by_marker(m)(d) for m in ("crash-direct", "crash-relayed") for d in pf.delivered())

            milter = start_milter(config)  # back on the same address
            upstream.flush()
            assert pf.sink is not None
            relayed = pf.sink.wait_for_message(by_marker("crash-relayed")).data
            upstream.wait_queue_empty()
        direct = deliver(pf, message("crash-direct"), "crash-direct", listener="crash")  # the client retries

        time.sleep(1.5)  # a duplicate would have arrived by now
        for marker in ("crash-direct", "crash-relayed"):
            assert sum(by_marker(marker)(d) for d in pf.delivered()) == 1
        assert pf.queue() == []
    finally:
        milter.stop()
    for delivered in (relayed, direct):
        assert [(t["s"], t["a"]) for t in dkim_tags(delivered)] == [("rsa2026", "rsa-sha256")]
        assert_all_peers_pass(delivered, records, 1)


# --------------------------------------------------------------------------- reload


def test_sighup_with_a_broken_config_keeps_signing_and_says_why(
    setup: Setup, keys: dict[str, Key], dns_server: ScriptedDnsServer, records: dict[str, str]
) -> None:
    pf = setup.postfix
    config = write_config(
        setup.folder / "reload", keys, port=setup.ports["reload"], nameserver=dns_server.nameserver
    )
    good = config.read_text()
    rule = '"example.com" = ["rsa"]'
    rule_line = good.splitlines().index(rule) + 1

    def selectors(marker: str) -> list[str]:
        delivered = deliver(pf, message(marker), marker, listener="reload")
        assert all(s.result is DKIMResult.PASS for s in mailseal_verify(delivered, records))
        return [t["s"] for t in dkim_tags(delivered)]

    with start_milter(config) as milter:
        assert selectors("reload-before") == ["rsa2026"]

        config.write_text(good.replace(rule, '"example.com" = ["rsa2027"]'))
        mark = milter.mark()
        milter.signal(signal.SIGHUP)
        assert milter.wait_for("reload refused, keeping the running configuration", start=mark) is not None
        why = milter.wait_for(r"milter\.toml:\d+: signing_table 'example\.com' names unknown key", start=mark)
        assert why is not None
        assert f"milter.toml:{rule_line}: " in why
        assert "did you mean 'rsa'?" in why
        assert selectors("reload-broken") == ["rsa2026"]  # still signing, with the old configuration

        # A good file is taken on the next SIGHUP, by every worker.
        config.write_text(good.replace(rule, '"example.com" = ["ed"]'))
        mark = milter.mark()
        milter.signal(signal.SIGHUP)
        assert milter.wait_for("telling 2 worker", start=mark) is not None
        deadline = time.monotonic() + 60
        while milter.log.count("loaded (generation 2)") < 2:
            assert time.monotonic() < deadline, milter.log
            time.sleep(0.05)
        assert selectors("reload-fixed") == ["ed2026"]
