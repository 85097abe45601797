"""The milter over real sockets, driven by the scripted MTA: signing, verifying, policies, lifecycle."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from mailseal import PrivateKey, generate_private_key, sign, verify_sync
from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import PrivateKey as KeyHolder
from mailseal.core.results import DKIMResult, Reason
from mailseal.core.txtanswer import TxtAnswer, TxtStatus
from mailseal.dns.memory import InMemoryResolver
from mailseal.keys.files import write_private_key
from mailseal.keys.source import KeySet, SigningKey
from mailseal.milter.config import load_config
from mailseal.milter.loading import Loaded, load
from support.clock import FIXED_NOW
from support.milter_client import MilterClient, Result, apply_actions, split_message
from support.milter_harness import MESSAGE, ServerThread, dns_records, write_config
from support.milter_store import wait_until
from support.peers import dkimpy_supports_ed25519, dkimpy_verify

EXTERNAL = "192.0.2.44"
Keys = Mapping[str, tuple[PrivateKey | None, str, str]]


@pytest.fixture
def keys(rsa_key: PrivateKey, ed_key: PrivateKey) -> Keys:
    return {"rsa": (rsa_key, "example.com", "rsa2026"), "ed": (ed_key, "example.com", "ed2026")}


@pytest.fixture
def resolver(keys: Keys) -> InMemoryResolver:
    return InMemoryResolver(dns_records(keys))


def start(
    tmp_path: Path,
    keys: Keys,
    resolver: InMemoryResolver | None,
    *,
    table: dict[str, list[str]] | None = None,
    extra: str = "",
    unix_path: str | None = None,
    config_resolver: bool = False,
) -> ServerThread:
    path = write_config(tmp_path, keys, table if table is not None else {"*@example.com": list(keys)}, extra)
    return ServerThread(
        load(str(path)),
        resolver=resolver,
        clock=lambda: FIXED_NOW,
        config_path=str(path),
        unix_path=unix_path,
        config_resolver=config_resolver,
    )


@pytest.fixture
def server(tmp_path: Path, keys: Keys, resolver: InMemoryResolver) -> Iterator[ServerThread]:
    with start(tmp_path, keys, resolver) as running:
        yield running


def session(address: tuple[str, int] | str, client_ip: str = "127.0.0.1", **negotiate: int) -> MilterClient:
    client = MilterClient(address)
    client.negotiate(**negotiate)
    client.macros(b"C", {"j": "mx.test", "daemon_name": "smtpd"})
    client.connect(address=client_ip)
    return client


def logged(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    """The log messages containing ``text``, waiting a little: the reply goes out before the log line."""
    wait_until(lambda: any(text in r.getMessage() for r in caplog.records))
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def delivered(client: MilterClient, message: bytes, result: Result) -> bytes:
    assert client.negotiated is not None
    return apply_actions(message, result, leading_space=client.negotiated.leading_space)


# -- signing ----------------------------------------------------------------------------------


def test_outgoing_mail_gets_rsa_and_ed25519_signatures_that_verify(
    server: ServerThread, resolver: InMemoryResolver, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mailseal")
    with session(server.address) as client:
        result = client.send_message(MESSAGE, chunks=3, queue_id="4Q1D")
        signed = delivered(client, MESSAGE, result)
    assert result.verdict == "continue"
    assert [a.index for a in result.inserted("DKIM-Signature")] == [0, 0]
    assert not result.inserted("Authentication-Results")  # outgoing mail is not verified by default
    report = verify_sync(signed, resolver=resolver, now=FIXED_NOW)
    assert [(s.result, s.algorithm) for s in report.signatures] == [
        (DKIMResult.PASS, "rsa-sha256"),  # in key table order, top first
        (DKIMResult.PASS, "ed25519-sha256"),
    ]
    peer = dkimpy_verify(signed, dns_records(keys))
    assert peer[0] == "pass"
    if dkimpy_supports_ed25519():
        assert peer[1] == "pass"
    (line,) = [m for m in logged(caplog, "qid=") if m.startswith("qid=")]
    assert "qid=4Q1D" in line and "action=accept" in line and "mode=sign" in line
    assert "signed=example.com/rsa2026/rsa-sha256,example.com/ed2026/ed25519-sha256" in line
    assert "alice" not in line and "Hello" not in line  # no local parts, no content


def test_body_chunking_does_not_change_the_signatures(server: ServerThread) -> None:
    body_start = MESSAGE.index(b"\r\n\r\n") + 4
    body_length = len(MESSAGE) - body_start
    chunkings: list[int | list[int]] = [1, 5, [1] * body_length, [9, 1, 1, 30], [body_length - 1]]
    signatures = []
    with session(server.address) as client:
        for chunks in chunkings:  # several messages on one connection, as Postfix does
            result = client.send_message(MESSAGE, chunks=chunks)
            signatures.append([a.value for a in result.inserted("DKIM-Signature")])
    assert all(s == signatures[0] for s in signatures)
    assert len(signatures[0]) == 2


def test_authenticated_clients_are_signed_anonymous_external_ones_are_not(
    server: ServerThread, resolver: InMemoryResolver
) -> None:
    with session(server.address, EXTERNAL) as client:
        authenticated = client.send_message(MESSAGE, auth="alice")
        anonymous = client.send_message(MESSAGE)
    assert len(authenticated.inserted("DKIM-Signature")) == 2
    assert not anonymous.inserted("DKIM-Signature")
    (authres,) = anonymous.inserted("Authentication-Results")
    assert authres.value == b" mx.test; dkim=none"


@pytest.mark.parametrize("leading_space", [True, False])
def test_simple_canonicalization_survives_awkward_header_fields(
    tmp_path: Path, keys: Keys, resolver: InMemoryResolver, leading_space: bool
) -> None:
    message = (
        b"From: alice@example.com\r\nTo: bob@example.net\r\nSubject:no space\r\nX-Tab:\tvalue\r\n"
        b"X-Two:  two\r\nX-Trail: trailing \r\nX-Fold: one\r\n\ttwo\r\n  three\r\n\r\nbody\r\n"
    )
    headers = '["from", "to", "subject", "x-tab", "x-two", "x-trail", "x-fold"]'
    extra = f'[signing]\ncanonicalization = "simple/simple"\nheaders = {headers}\n'
    protocol = 0x1FFFFF if leading_space else 0x0FFFFF  # without SMFIP_HDR_LEADSPC the MTA eats a space
    with (
        start(tmp_path, {"rsa": keys["rsa"]}, resolver, extra=extra) as running,
        session(running.address, protocol=protocol) as client,
    ):
        assert client.negotiated is not None
        assert client.negotiated.leading_space is leading_space
        signed = delivered(client, message, client.send_message(message))
    report = verify_sync(signed, resolver=resolver, now=FIXED_NOW)
    if leading_space:
        assert report.signatures[0].result is DKIMResult.PASS
    else:  # "Subject:no space" is indistinguishable from "Subject: no space": documented limit
        assert report.signatures[0].reason is Reason.SIGNATURE_MISMATCH


def test_an_mta_without_no_reply_flags_gets_a_reply_to_every_event(server: ServerThread) -> None:
    client = MilterClient(server.address)
    negotiated = client.negotiate(version=2, protocol=0x7F)  # Sendmail 8.13: no NR_*, no LEADSPC
    assert negotiated.version == 2
    assert negotiated.protocol & ~0x7F == 0  # we ask only for what was offered
    assert client.connect() == b"c"
    assert client.mail("alice@example.com") == b"c"
    assert client.header("From", b" alice@example.com") == b"c"
    assert client.end_of_headers() == b"c"
    assert client.body(b"hi\r\n") == b"c"
    result = client.end_of_message()
    client.close()
    assert result.verdict == "continue"
    assert len(result.inserted("DKIM-Signature")) == 2


def test_unlisted_senders_pass_unsigned_and_are_logged(
    server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mailseal")
    message = MESSAGE.replace(b"alice@example.com", b"carol@elsewhere.example")
    with session(server.address) as client:
        result = client.send_message(message)
    assert result.verdict == "continue"
    assert result.actions == []
    assert any("sender_domain=elsewhere.example" in m for m in logged(caplog, "unsigned=unlisted"))


def test_envelope_sender_can_pick_the_key(tmp_path: Path, keys: Keys, resolver: InMemoryResolver) -> None:
    extra = '[routing]\nsender = "envelope"\n'
    with (
        start(tmp_path, keys, resolver, table={"bounces@example.com": ["ed"]}, extra=extra) as running,
        session(running.address) as client,
    ):
        by_envelope = client.send_message(MESSAGE, sender="bounces@example.com")
        other = client.send_message(MESSAGE, sender="alice@example.com")
    assert len(by_envelope.inserted("DKIM-Signature")) == 1
    assert b"a=ed25519-sha256" in by_envelope.inserted("DKIM-Signature")[0].value
    assert other.actions == []


# -- verifying --------------------------------------------------------------------------------


def test_incoming_mail_gets_one_authentication_results_and_forgeries_are_removed(
    server: ServerThread, rsa_key: PrivateKey
) -> None:
    body = MESSAGE.replace(
        b"Subject:", b"Authentication-Results: mx.test; dkim=pass header.d=paypal.com\r\nSubject:"
    )
    body = body.replace(
        b"Date:",
        b"Authentication-Results: other.example; dkim=fail\r\nAuthentication-Results: (sneaky) MX.TEST;\r\n dkim=pass\r\nDate:",
    )
    signed = sign(body, key=rsa_key, domain="example.com", selector="rsa2026", now=FIXED_NOW) + body
    with session(server.address, EXTERNAL) as client:
        result = client.send_message(signed)
        final = delivered(client, signed, result)
    assert [(a.kind, a.index, a.value) for a in result.actions if a.kind == "change"] == [
        ("change", 3, b""),  # bottom first, so index 1 still means the first one
        ("change", 1, b""),
    ]
    fields, _ = split_message(final)
    authres = [value for name, value in fields if name.lower() == "authentication-results"]
    assert authres[0].startswith(b" mx.test;\n\tdkim=pass (2048-bit key) header.d=example.com")
    assert authres[1:] == [b" other.example; dkim=fail"]  # other servers' results stay
    assert fields[0][0] == "Authentication-Results"  # ours is on top


def test_at_most_max_signatures_are_verified(
    tmp_path: Path, keys: Keys, resolver: InMemoryResolver, rsa_key: PrivateKey
) -> None:
    message = MESSAGE
    for selector in ("rsa2026", "s1", "s2", "s3"):
        message = sign(message, key=rsa_key, domain="example.com", selector=selector, now=FIXED_NOW) + message
    with (
        start(tmp_path, keys, resolver, extra="[limits]\nmax_signatures = 2\n") as running,
        session(running.address, EXTERNAL) as client,
    ):
        result = client.send_message(message)
    (authres,) = result.inserted("Authentication-Results")
    assert authres.value.count(b"dkim=") == 4
    assert authres.value.count(b"not-evaluated") == 2
    # Bottom first: the two signed first are looked up; fields added above cannot push them out.
    assert sorted(q.split(".")[0] for q in resolver.queries) == ["rsa2026", "s1"]


def test_required_signature_missing_rejects(tmp_path: Path, keys: Keys, resolver: InMemoryResolver) -> None:
    extra = '[[verify.require]]\ndomain = "example.com"\naction = "reject"\n'
    with (
        start(tmp_path, keys, resolver, extra=extra) as running,
        session(running.address, EXTERNAL) as client,
    ):
        result = client.send_message(MESSAGE)
    assert result.reply == b"y"
    assert result.text.startswith(
        "550 5.7.20 mailseal: the DKIM signature required for example.com is missing"
    )
    assert result.actions == []


def test_required_signature_failing_quarantines(
    tmp_path: Path, keys: Keys, resolver: InMemoryResolver, rsa_key: PrivateKey
) -> None:
    tampered = sign(
        MESSAGE, key=rsa_key, domain="example.com", selector="rsa2026", now=FIXED_NOW
    ) + MESSAGE.replace(b"Hello", b"Jello")
    extra = '[[verify.require]]\ndomain = "example.com"\naction = "quarantine"\n'
    with (
        start(tmp_path, keys, resolver, extra=extra) as running,
        session(running.address, EXTERNAL) as client,
    ):
        result = client.send_message(tampered)
    assert result.verdict == "continue"
    (quarantine,) = [a for a in result.actions if a.kind == "quarantine"]
    assert b"failed" in quarantine.value
    assert b"dkim=fail" in result.inserted("Authentication-Results")[0].value


# -- failure policies ------------------------------------------------------------------------


def test_missing_key_file_tempfails_signing(tmp_path: Path, keys: Keys, resolver: InMemoryResolver) -> None:
    broken = {"rsa": (None, "example.com", "rsa2026")}
    with start(tmp_path, broken, resolver) as running:
        assert "rsa" in running.server.runtime.keyset.problems
        with session(running.address) as client:
            result = client.send_message(MESSAGE)
    assert result.reply == b"y"
    assert result.text.startswith("451 4.3.0 mailseal: the signing key for example.com is unavailable")
    assert result.actions == []


def test_missing_key_file_can_be_configured_to_pass_unsigned(
    tmp_path: Path, keys: Keys, resolver: InMemoryResolver
) -> None:
    broken = {"rsa": (None, "example.com", "rsa2026"), "ed": keys["ed"]}
    extra = '[on_failure]\nsign_key_unavailable = "accept"\n'
    with start(tmp_path, broken, resolver, extra=extra) as running, session(running.address) as client:
        result = client.send_message(MESSAGE)
    assert result.verdict == "continue"
    (signature,) = result.inserted("DKIM-Signature")  # the key that loaded still signs
    assert b"ed25519" in signature.value


@pytest.mark.parametrize(
    ("action", "verdict"), [("", "continue"), ('verify_dns_error = "tempfail"', "tempfail")]
)
def test_dns_timeout_follows_the_configured_action(
    tmp_path: Path, keys: Keys, rsa_key: PrivateKey, action: str, verdict: str
) -> None:
    timing_out = InMemoryResolver(
        {"rsa2026._domainkey.example.com": TxtAnswer.failure(TxtStatus.TIMEOUT, "slow")}
    )
    signed = sign(MESSAGE, key=rsa_key, domain="example.com", selector="rsa2026", now=FIXED_NOW) + MESSAGE
    with (
        start(tmp_path, keys, timing_out, extra=f"[on_failure]\n{action}\n") as running,
        session(running.address, EXTERNAL) as client,
    ):
        result = client.send_message(signed)
    assert result.verdict == verdict
    if verdict == "tempfail":
        assert result.text.startswith("451 4.4.3 ")
    else:
        assert b"dkim=temperror (dns-timeout)" in result.inserted("Authentication-Results")[0].value


def test_dns_server_that_never_answers_times_out(tmp_path: Path, keys: Keys, rsa_key: PrivateKey) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    signed = sign(MESSAGE, key=rsa_key, domain="example.com", selector="rsa2026", now=FIXED_NOW) + MESSAGE
    extra = f'[verify]\nnameservers = ["127.0.0.1:{port}"]\ndns_timeout = 0.3\n[on_failure]\nverify_dns_error = "tempfail"\n'
    try:
        with (
            start(tmp_path, keys, None, extra=extra, config_resolver=True) as running,
            session(running.address, EXTERNAL) as client,
        ):
            began = time.monotonic()
            result = client.send_message(signed)
            elapsed = time.monotonic() - began
    finally:
        silent.close()
    assert result.verdict == "tempfail"
    assert result.text.startswith("451 4.4.3")
    assert elapsed < 8.0  # dns_timeout 0.3 s applied, not the client's 10 s read timeout


class _Exploding:
    """A stand-in key object whose use raises: an internal error at signing time."""

    def sign(self, *args: object) -> bytes:
        raise RuntimeError("simulated bug")


class _BrokenKeySource:
    def __init__(self, domain: str) -> None:
        self._domain = domain

    def load(self) -> KeySet:
        holder = KeyHolder(_Exploding(), KeyType.ED25519, 256)  # type: ignore[arg-type]
        return KeySet({"rsa": (SigningKey("rsa", self._domain, "bug", holder),)})

    def version(self) -> object:
        return 1


@pytest.mark.parametrize(
    ("action", "verdict"), [("", "tempfail"), ('sign_internal_error = "accept"', "continue")]
)
def test_internal_error_follows_the_configured_action(
    tmp_path: Path, keys: Keys, action: str, verdict: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(
        tmp_path, {"rsa": keys["rsa"]}, {"*@example.com": ["rsa"]}, f"[on_failure]\n{action}\n"
    )
    config = load_config(path)
    source = _BrokenKeySource("example.com")
    with (
        ServerThread(Loaded.read(config, source), clock=lambda: FIXED_NOW) as running,
        session(running.address) as client,
    ):
        result = client.send_message(MESSAGE)
        again = client.send_message(MESSAGE)  # the connection survives
    assert result.verdict == again.verdict == verdict
    assert not result.inserted("DKIM-Signature")
    assert any("internal error" in r.getMessage() for r in caplog.records)


def test_the_log_line_of_a_message_broken_by_an_internal_error(
    tmp_path: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mailseal")
    extra = '[on_failure]\nsign_internal_error = "accept"\n'
    path = write_config(tmp_path, {"rsa": keys["rsa"]}, {"*@example.com": ["rsa"]}, extra)
    loaded = Loaded.read(load_config(path), _BrokenKeySource("example.com"))
    with ServerThread(loaded, clock=lambda: FIXED_NOW) as running, session(running.address) as client:
        result = client.send_message(MESSAGE)
    assert result.verdict == "continue"
    (line,) = [m for m in logged(caplog, "qid=") if m.startswith("qid=")]
    assert "action=accept cause=sign_internal_error" in line
    assert "signed=" not in line  # nothing was signed


def test_oversized_header_passes_untouched(tmp_path: Path, keys: Keys, resolver: InMemoryResolver) -> None:
    huge = MESSAGE.replace(b"Subject:", b"X-Padding: " + b"x" * 3000 + b"\r\nSubject:")
    with (
        start(tmp_path, keys, resolver, extra="[limits]\nmax_header_bytes = 1024\n") as running,
        session(running.address) as client,
    ):
        result = client.send_message(huge)
        normal = client.send_message(MESSAGE)
    assert result.verdict == "continue" and result.actions == []
    assert len(normal.inserted("DKIM-Signature")) == 2


# -- protocol and connection handling ----------------------------------------------------------


def test_abort_forgets_the_message_and_the_next_one_is_signed(server: ServerThread) -> None:
    with session(server.address) as client:
        client.macros(b"M", {"i": "ABORTED"})
        client.mail("alice@example.com")
        client.header("From", b" mallory@example.com")
        client.abort()
        result = client.send_message(MESSAGE)
        client.quit()
        assert client.at_eof()
    assert len(result.inserted("DKIM-Signature")) == 2


def test_garbage_closes_the_connection_and_the_server_carries_on(server: ServerThread) -> None:
    with session(server.address) as client:
        client.send_raw(b"\x00\x00\x00\x05Zjunk")
        assert client.at_eof()
    with MilterClient(server.address) as client:
        client.negotiate()
        client.send(b"E")  # end of message before any MAIL: out of order
        assert client.at_eof()
    with session(server.address) as client:
        assert client.send_message(MESSAGE).verdict == "continue"


def test_unix_socket(tmp_path: Path, keys: Keys, resolver: InMemoryResolver) -> None:
    with start(tmp_path, keys, resolver, unix_path=str(tmp_path / "milter.sock")) as running:
        assert isinstance(running.address, str)
        client = MilterClient(running.address)
        client.negotiate()
        client.connect_unix()
        result = client.send_message(MESSAGE)
        client.close()
    assert len(result.inserted("DKIM-Signature")) == 2  # local socket clients are internal


def test_idle_connections_are_closed(tmp_path: Path, keys: Keys, resolver: InMemoryResolver) -> None:
    with (
        start(tmp_path, keys, resolver, extra="[limits]\nidle_timeout = 1\n") as running,
        session(running.address) as client,
    ):
        assert client.at_eof(timeout=30)  # idle_timeout 1 s, checked every SWEEP_INTERVAL


def refuses_connections(address: tuple[str, int] | str, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            MilterClient(address, timeout=1).close()
        except OSError:
            return True
        time.sleep(0.02)
    return False


def test_graceful_shutdown_finishes_the_message_in_flight(server: ServerThread) -> None:
    busy = session(server.address)
    idle = session(server.address)
    fields, body = split_message(MESSAGE)
    busy.macros(b"M", {"i": "INFLIGHT"})
    busy.mail("alice@example.com")
    for name, value in fields:
        busy.header(name, value)
    busy.end_of_headers()
    busy.body(body[:10])
    stopped = server.stop_async(grace=10)
    assert idle.at_eof()  # between messages: closed at once
    assert refuses_connections(server.address)  # no longer accepting
    assert not stopped.done()
    busy.body(body[10:])
    result = busy.end_of_message()
    assert len(result.inserted("DKIM-Signature")) == 2
    assert busy.at_eof()  # closed once its message is done
    stopped.result(30)
    busy.close()
    idle.close()


def test_reload_with_a_broken_file_keeps_the_running_configuration(
    tmp_path: Path, keys: Keys, resolver: InMemoryResolver, caplog: pytest.LogCaptureFixture
) -> None:
    with start(tmp_path, keys, resolver) as running:
        path = tmp_path / "milter.toml"
        good = path.read_text()
        path.write_text(good + "\n[milter]\nworkers = 'many'\n")
        assert running.call(running.server.reload) is False
        assert any("reload refused" in r.getMessage() for r in caplog.records)
        with session(running.address) as client:
            assert len(client.send_message(MESSAGE).inserted("DKIM-Signature")) == 2
        path.write_text(good.replace('"*@example.com" = ["rsa", "ed"]', '"*@example.com" = ["ed"]'))
        assert running.call(running.server.reload) is True
        assert running.server.runtime.generation == 2
        with session(running.address) as client:
            assert len(client.send_message(MESSAGE).inserted("DKIM-Signature")) == 1


def test_reload_keeps_the_old_key_of_a_name_that_cannot_be_loaded_and_updates_the_others(
    tmp_path: Path, keys: Keys, resolver: InMemoryResolver, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = generate_private_key(KeyType.ED25519)
    with start(tmp_path, keys, resolver) as running:
        old_rsa = running.server.runtime.keyset.keys["rsa"]
        (tmp_path / "rsa.key").chmod(0o644)
        write_private_key(tmp_path / "ed.key", fresh, overwrite=True)
        assert running.call(running.server.reload) is True  # per-key problems are logged, not fatal
        keyset = running.server.runtime.keyset
        assert keyset.keys["rsa"] == old_rsa  # the old, loaded key stays in use
        (ed,) = keyset.keys["ed"]
        assert ed.key.public_key_b64() == fresh.public_key_b64()
        assert any("keep their previous key" in r.getMessage() for r in caplog.records)


def test_a_changed_key_file_is_picked_up(tmp_path: Path, keys: Keys, resolver: InMemoryResolver) -> None:
    fresh = generate_private_key(KeyType.RSA)
    extra = "key_check_interval = 0.1\n"
    path = write_config(tmp_path, {"rsa": keys["rsa"]}, {"*@example.com": ["rsa"]})
    path.write_text(path.read_text().replace('authserv_id = "mx.test"', f'authserv_id = "mx.test"\n{extra}'))
    with ServerThread(
        load(str(path)), resolver=resolver, clock=lambda: FIXED_NOW, config_path=str(path)
    ) as running:
        write_private_key(tmp_path / "rsa.key", fresh, overwrite=True)
        deadline = time.monotonic() + 30
        while running.server.runtime.generation == 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running.server.runtime.generation == 2
        with session(running.address) as client:
            signed = delivered(client, MESSAGE, client.send_message(MESSAGE))
    resolver.set(
        "rsa2026._domainkey.example.com",
        dns_records({"k": (fresh, "example.com", "rsa2026")})["rsa2026._domainkey.example.com"],
    )
    assert verify_sync(signed, resolver=resolver, now=FIXED_NOW).passed


def test_many_connections_at_once(server: ServerThread) -> None:
    results: list[str] = []

    def one() -> None:
        with session(server.address) as client:
            verdicts = [client.send_message(MESSAGE, chunks=2).verdict for _ in range(5)]
        results.extend(verdicts)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == ["continue"] * 40


@pytest.mark.parametrize(
    "from_fields",
    [
        b"From: Mallory <mallory@evil.example>\r\nFrom: Bank <alerts@bank.example>\r\n",
        b"From: Mallory <mallory@evil.example>, Bank <alerts@bank.example>\r\n",
        b"From: " + b"x" * 5000 + b" <alerts@bank.example>\r\n",
    ],
    ids=["two-fields", "two-addresses", "over-long"],
)
def test_required_domain_in_an_ambiguous_from_is_not_skipped(
    tmp_path: Path, keys: Keys, resolver: InMemoryResolver, rsa_key: PrivateKey, from_fields: bytes
) -> None:
    body = b"".join(
        line + b"\r\n" for line in MESSAGE.split(b"\r\n")[:-1] if not line.lower().startswith(b"from:")
    )
    body = from_fields + body
    signed = sign(body, key=rsa_key, domain="example.com", selector="rsa2026", now=FIXED_NOW) + body
    extra = '[[verify.require]]\ndomain = "bank.example"\naction = "reject"\n'
    with (
        start(tmp_path, keys, resolver, extra=extra) as running,
        session(running.address, EXTERNAL) as client,
    ):
        result = client.send_message(signed)
    assert result.reply == b"y"
    assert result.text.startswith("550 5.7.20 mailseal: the DKIM signature required for bank.example")


# -- forged Authentication-Results go on every path ------------------------------------------

FORGED = MESSAGE.replace(
    b"Subject:",
    b"Authentication-Results: other.example; dkim=fail\r\n"
    b"Authentication-Results: MX.test; dkim=pass header.d=bank.example\r\nSubject:",
)


def deletions(result: Result) -> list[tuple[int, bytes]]:
    return [(a.index, a.value) for a in result.actions if a.kind == "change"]


def test_an_internal_sender_cannot_plant_our_authentication_results(server: ServerThread) -> None:
    with session(server.address) as client:  # internal: sign only, no verification
        result = client.send_message(FORGED)
    assert len(result.inserted("DKIM-Signature")) == 2
    assert deletions(result) == [(2, b"")]
    assert not result.inserted("Authentication-Results")


def test_a_forged_authentication_results_goes_even_when_the_header_is_oversized(
    tmp_path: Path, keys: Keys, resolver: InMemoryResolver
) -> None:
    huge = FORGED.replace(b"Subject:", b"X-Padding: " + b"x" * 3000 + b"\r\nSubject:")
    huge = huge.replace(b"Date:", b"Authentication-Results: mx.test; " + b"y" * 5000 + b"\r\nDate:")
    with (
        start(tmp_path, keys, resolver, extra="[limits]\nmax_header_bytes = 1024\n") as running,
        session(running.address, EXTERNAL) as client,
    ):
        result = client.send_message(huge)
    assert result.verdict == "continue"
    assert deletions(result) == [(3, b""), (2, b"")]
    assert not result.inserted("Authentication-Results") and not result.inserted("DKIM-Signature")


def test_a_forged_authentication_results_goes_after_an_internal_error(tmp_path: Path, keys: Keys) -> None:
    path = write_config(
        tmp_path,
        {"rsa": keys["rsa"]},
        {"*@example.com": ["rsa"]},
        '[on_failure]\nsign_internal_error = "accept"\n',
    )
    loaded = Loaded.read(load_config(path), _BrokenKeySource("example.com"))
    with ServerThread(loaded, clock=lambda: FIXED_NOW) as running, session(running.address) as client:
        result = client.send_message(FORGED)
    assert result.verdict == "continue"
    assert deletions(result) == [(2, b"")]


def test_forgeries_go_when_the_mta_allows_changing_but_not_adding_header_fields(
    server: ServerThread,
) -> None:
    with session(server.address, EXTERNAL, actions=0x1FF & ~0x01) as client:  # no SMFIF_ADDHDRS
        result = client.send_message(FORGED)
    assert deletions(result) == [(2, b"")]
    assert not result.inserted("Authentication-Results")


class _SlowResolver:
    """Answers after a short wait: the end of message arrives before the key lookup is done."""

    def __init__(self, inner: InMemoryResolver) -> None:
        self._inner = inner

    async def lookup_txt(self, name: str) -> TxtAnswer:
        await asyncio.sleep(0.05)
        return await self._inner.lookup_txt(name)


class _FailingMetrics:
    def observe(self, outcome: object, watched_domains: frozenset[str]) -> None:
        raise RuntimeError("simulated metrics bug")

    def error(self, kind: str) -> None:
        pass


@pytest.mark.parametrize("client_ip", ["127.0.0.1", EXTERNAL], ids=["sign", "verify-after-lookups"])
def test_a_failing_log_or_metrics_hook_does_not_lose_the_reply(
    tmp_path: Path,
    keys: Keys,
    resolver: InMemoryResolver,
    rsa_key: PrivateKey,
    client_ip: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = write_config(tmp_path, keys, {"*@example.com": list(keys)})
    signed = sign(MESSAGE, key=rsa_key, domain="example.com", selector="rsa2026", now=FIXED_NOW) + MESSAGE
    metrics = _FailingMetrics()
    with (
        ServerThread(
            load(str(path)), resolver=_SlowResolver(resolver), clock=lambda: FIXED_NOW, metrics=metrics
        ) as running,
        session(running.address, client_ip) as client,
    ):
        first = client.send_message(signed)
        second = client.send_message(signed)  # the connection carries on
    assert first.verdict == second.verdict == "continue"
    assert logged(caplog, "cannot log or count")
