"""The Postfix end-to-end harness, proved with OpenDKIM as the milter.

A private Postfix (tests/support/postfix.py) relays to our SMTP sink; OpenDKIM
(tests/support/opendkim_milter.py) signs or verifies in between. What comes out
is real Postfix-delivered, OpenDKIM-signed mail, which mailseal and dkimpy must
verify -- in every canonicalization, which offline interop could not give us
for rsa-sha256 with simple header canonicalization. The failure tests show what
the milter tests will rely on: with ``milter_default_action = tempfail`` a
dead milter never lets a message through unprocessed, and none is lost.

A missing Postfix or OpenDKIM skips these tests, or fails them when
MAILSEAL_REQUIRE_PEERS is set (tests/support/required.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import mailseal
from mailseal import DKIMResult, PrivateKey
from mailseal.dns.memory import InMemoryResolver
from support import peers
from support.opendkim_milter import OpenDKIMMilter, SigningKey, opendkim_available
from support.postfix import EXTERNAL, INTERNAL, Client, PostfixInstance, postfix_available, roaming_user
from support.recording_milter import RecordingMilter
from support.required import needs
from support.smtp_sink import SinkMessage

pytestmark = [
    pytest.mark.integration,
    needs(
        postfix_available() and opendkim_available(), "postfix and opendkim", "scripts/test.sh installs them"
    ),
]

DOMAIN = "example.com"
CANONS = ["simple/simple", "simple/relaxed", "relaxed/simple", "relaxed/relaxed"]


def key_records(**selectors: PrivateKey) -> dict[str, str]:
    return {
        f"{sel}._domainkey.{DOMAIN}": f"v=DKIM1; k={key.key_type}; p={key.public_key_b64()}"
        for sel, key in selectors.items()
    }


def message(marker: str) -> bytes:
    """A message whose header whitespace, folding and 8-bit body tell the canonicalizations apart."""
    return (
        f"From: Alice Example <alice@{DOMAIN}>\r\n"
        "To: Bob <bob@example.net>\r\n"
        "Subject:  Canonicalization   check\r\n\t folded  continuation\r\n"
        "Date: Thu, 1 Jan 2026 10:00:00 +0000\r\n"
        f"Message-ID: <{marker}@{DOMAIN}>\r\n"
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
    needle = f"<{marker}@{DOMAIN}>".encode()
    return lambda m: needle in m.data


def dkim_tags(delivered: bytes) -> list[dict[str, str]]:
    """Tags of each DKIM-Signature in delivered bytes, top first."""
    head = delivered.split(b"\r\n\r\n", 1)[0].decode()
    fields = re.findall(
        r"^DKIM-Signature:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)", head, re.MULTILINE | re.IGNORECASE
    )
    tags = []
    for field in fields:
        value = re.sub(r"\s+", "", field)
        tags.append(dict(item.split("=", 1) for item in value.split(";") if "=" in item))
    return tags


def header_values(delivered: bytes, name: str) -> list[str]:
    head = delivered.split(b"\r\n\r\n", 1)[0].decode()
    pattern = rf"^{re.escape(name)}:([^\r\n]*(?:\r\n[ \t][^\r\n]*)*)"
    return [" ".join(v.split()) for v in re.findall(pattern, head, re.MULTILINE | re.IGNORECASE)]


def mailseal_results(delivered: bytes, records: dict[str, str]) -> list[DKIMResult]:
    report = mailseal.verify_sync(delivered, resolver=InMemoryResolver(records))
    return [s.result for s in report.signatures]


# --------------------------------------------------------------------------- clients and macros


def test_xclient_presents_outside_and_authenticated_clients_to_the_milter() -> None:
    macros = "j {daemon_name} {daemon_addr} v _ {client_addr} {client_name}"
    with (
        RecordingMilter() as milter,
        PostfixInstance(milters=milter.postfix_spec, main_cf={"milter_connect_macros": macros}) as pf,
    ):
        for marker, client in (
            ("internal", INTERNAL),
            ("external", EXTERNAL),
            ("roaming", roaming_user("alice")),
        ):
            assert pf.submit(message(marker), client=client).accepted
        pf.delivered(3)
        seen = [c for c in milter.connections() if c.completed_messages]

    assert [c.address for c in seen] == ["127.0.0.1", "203.0.113.25", "198.51.100.7"]
    internal, external, roaming = seen
    # The real loopback client: no XCLIENT, no name lookup (smtpd_peername_lookup = no).
    assert (internal.hostname, internal.macro("_"), internal.macro("{client_addr}")) == (
        "[127.0.0.1]",
        "unknown [127.0.0.1]",
        "127.0.0.1",
    )
    assert internal.macro("{auth_authen}") is None
    # XCLIENT: the milter gets a fresh connect event carrying the claimed client.
    assert (external.hostname, external.family, external.helo) == (
        "mx.outside.example",
        "4",
        "mx.outside.example",
    )
    assert external.macro("_") == "mx.outside.example [203.0.113.25]"
    assert external.macro("{client_addr}") == "203.0.113.25"
    assert external.macro("{client_name}") == "mx.outside.example"
    assert external.macro("{auth_authen}") is None
    # XCLIENT LOGIN= makes the session SASL-authenticated.
    assert roaming.macro("{auth_authen}") == "alice"
    assert roaming.macro("{auth_type}") == "XCLIENT"
    assert roaming.macro("_") == "laptop.roaming.example [198.51.100.7]"
    for connection in seen:
        assert connection.macro("{daemon_name}") == "mx.mailseal.test"
        assert connection.macro("i")  # the queue id, from DATA on
        assert connection.header_names[:1] == ["From"]


# --------------------------------------------------------------------------- OpenDKIM signs, we verify


@pytest.fixture(scope="module")
def signing_setup(rsa_key: PrivateKey) -> Iterator[tuple[PostfixInstance, dict[str, OpenDKIMMilter]]]:
    """One OpenDKIM per canonicalization, each behind its own smtpd listener of one Postfix."""
    key = SigningKey("main", DOMAIN, "sel", rsa_key.to_pem())
    milters = {canon: OpenDKIMMilter(keys=[key], canonicalization=canon) for canon in CANONS}
    try:
        for milter in milters.values():
            milter.start()
        listeners = {
            canon.replace("/", "-"): {"smtpd_milters": milter.postfix_spec}
            for canon, milter in milters.items()
        }
        with PostfixInstance(listeners=listeners) as pf:
            yield pf, milters
    finally:
        for milter in milters.values():
            milter.stop()


@pytest.mark.parametrize("canon", CANONS)
def test_opendkim_signature_through_postfix_verifies_with_mailseal_and_dkimpy(
    canon: str, rsa_key: PrivateKey, signing_setup: tuple[PostfixInstance, dict[str, OpenDKIMMilter]]
) -> None:
    pf, _ = signing_setup
    marker = f"canon-{canon.replace('/', '-')}"
    result = pf.submit(message(marker), listener=canon.replace("/", "-"))
    assert result.accepted, result
    assert pf.sink is not None
    delivered = pf.sink.wait_for_message(by_marker(marker)).data

    tags = dkim_tags(delivered)
    assert len(tags) == 1
    assert (tags[0]["a"], tags[0]["c"], tags[0]["d"], tags[0]["s"]) == ("rsa-sha256", canon, DOMAIN, "sel")
    assert "from" in tags[0]["h"].lower().split(":")
    # Postfix passed the 8-bit body through untouched (8BITMIME, no MIME conversion).
    assert "Grüße,  with  double  spaces \t \r\n".encode() in delivered
    records = key_records(sel=rsa_key)
    assert mailseal_results(delivered, records) == [DKIMResult.PASS]
    if peers.have_dkimpy():
        assert peers.dkimpy_verify(delivered, records) == ["pass"]


def test_opendkim_dual_rsa_and_ed25519_signatures_verify(rsa_key: PrivateKey, ed_key: PrivateKey) -> None:
    # OpenDKIM's SignatureAlgorithm is global (an Ed25519 key under the default rsa-sha256
    # tempfails every message: "resource unavailable"), so dual signing takes two milters.
    rsa_milter = OpenDKIMMilter(keys=[SigningKey("rsa", DOMAIN, "rsa", rsa_key.to_pem())])
    ed_milter = OpenDKIMMilter(
        keys=[SigningKey("ed", DOMAIN, "ed", ed_key.to_pem())], extra={"SignatureAlgorithm": "ed25519-sha256"}
    )
    with (
        rsa_milter,
        ed_milter,
        PostfixInstance(milters=[rsa_milter.postfix_spec, ed_milter.postfix_spec]) as pf,
    ):
        assert pf.submit(message("dual")).accepted
        delivered = pf.delivered(1)[0].data
    algorithms = sorted(t["a"] for t in dkim_tags(delivered))
    assert algorithms == ["ed25519-sha256", "rsa-sha256"]
    records = key_records(rsa=rsa_key, ed=ed_key)
    assert mailseal_results(delivered, records) == [DKIMResult.PASS, DKIMResult.PASS]
    if peers.dkimpy_supports_ed25519():
        assert peers.dkimpy_verify(delivered, records) == ["pass", "pass"]


def test_sendmail_submission_goes_through_non_smtpd_milters(rsa_key: PrivateKey) -> None:
    with (
        OpenDKIMMilter(keys=[SigningKey("main", DOMAIN, "sel", rsa_key.to_pem())]) as milter,
        PostfixInstance(non_smtpd_milters=milter.postfix_spec) as pf,
    ):
        pf.sendmail(message("sendmail"))
        delivered = pf.delivered(1)[0].data
    assert mailseal_results(delivered, key_records(sel=rsa_key)) == [DKIMResult.PASS]


# --------------------------------------------------------------------------- outside mail is verified


def test_outside_mail_gets_authentication_results_from_opendkim(rsa_key: PrivateKey) -> None:
    records = key_records(sel=rsa_key)
    good = mailseal.sign(message("good"), key=rsa_key, domain=DOMAIN, selector="sel") + message("good")
    tampered = good.replace(b"starting with a dot", b"starting with a DOT")
    unsigned = message("unsigned")
    with (
        OpenDKIMMilter(
            keys=[SigningKey("main", DOMAIN, "sel", rsa_key.to_pem())], test_dns=records
        ) as milter,
        PostfixInstance(milters=milter.postfix_spec) as pf,
    ):
        for msg in (good, tampered, unsigned):
            assert pf.submit(msg, internal=False).accepted
        assert pf.sink is not None
        results = {
            marker: pf.sink.wait_for_message(by_marker(marker)).data for marker in ("good", "unsigned")
        }
        results["tampered"] = pf.sink.wait_for_message(lambda m: b"with a DOT" in m.data).data

    ar_good = header_values(results["good"], "Authentication-Results")
    assert len(ar_good) == 1
    assert ar_good[0].startswith("mx.mailseal.test;")
    assert "dkim=pass" in ar_good[0]
    assert "header.d=example.com" in ar_good[0]
    assert "dkim=fail" in header_values(results["tampered"], "Authentication-Results")[0]
    # Outside mail is never signed by us.
    assert dkim_tags(results["unsigned"]) == []
    assert len(dkim_tags(results["good"])) == 1


# --------------------------------------------------------------------------- reload


def test_reload_switches_the_milter_on(rsa_key: PrivateKey) -> None:
    with (
        OpenDKIMMilter(keys=[SigningKey("main", DOMAIN, "sel", rsa_key.to_pem())]) as milter,
        PostfixInstance() as pf,
    ):
        assert pf.submit(message("before")).accepted
        pf.postconf(smtpd_milters=milter.postfix_spec)
        assert pf.submit(message("after")).accepted
        assert pf.sink is not None
        before = pf.sink.wait_for_message(by_marker("before")).data
        after = pf.sink.wait_for_message(by_marker("after")).data
    assert dkim_tags(before) == []
    assert mailseal_results(after, key_records(sel=rsa_key)) == [DKIMResult.PASS]


# --------------------------------------------------------------------------- a dead milter loses nothing


def test_milter_killed_mid_session_tempfails_and_the_retry_is_delivered_once(rsa_key: PrivateKey) -> None:
    with (
        OpenDKIMMilter(keys=[SigningKey("main", DOMAIN, "sel", rsa_key.to_pem())]) as milter,
        PostfixInstance(milters=milter.postfix_spec, milter_default_action="tempfail") as pf,
    ):
        with pf.smtp() as session:
            assert session.mail(f"alice@{DOMAIN}")[0] == 250
            assert session.rcpt("bob@example.net")[0] == 250  # the milter has seen connect..rcpt
            milter.kill()
            code, text = session.data(message("killed"))
        assert (code, text[:5]) == (451, b"4.7.1")
        # Refused, so nothing of it stays with Postfix, and nothing went out unsigned.
        assert pf.queue() == []
        assert pf.delivered() == []

        # While the milter is down, every new session is refused before MAIL completes.
        down = pf.submit(message("killed"))
        assert (down.code, down.stage) == (451, "mail")

        milter.start()  # same address; the sender retries
        assert pf.submit(message("killed")).accepted
        delivered = pf.delivered(1)
        time.sleep(1.5)  # a duplicate would have arrived by now
        assert len(pf.delivered()) == 1
        assert pf.queue() == []
    assert mailseal_results(delivered[0].data, key_records(sel=rsa_key)) == [DKIMResult.PASS]


def test_dead_milter_defers_mail_in_the_sending_queue_until_it_is_back(rsa_key: PrivateKey) -> None:
    """Postfix → Postfix: the upstream queue keeps the message deferred, then delivers it once."""
    with (
        OpenDKIMMilter(keys=[SigningKey("main", DOMAIN, "sel", rsa_key.to_pem())]) as milter,
        PostfixInstance(milters=milter.postfix_spec) as mx,
        PostfixInstance(relay=mx.address, hostname="upstream.mailseal.test") as upstream,
    ):
        milter.kill()
        result = upstream.submit(message("deferred"))
        assert result.accepted
        queued = upstream.wait_deferred()
        assert [q.queue_id for q in queued] == [result.queue_id]
        assert "451 4.7.1" in queued[0].delay_reasons[0]
        assert mx.queue() == []
        assert mx.delivered() == []

        milter.start()
        upstream.flush()
        delivered = mx.delivered(1)
        upstream.wait_queue_empty()
        time.sleep(1.5)
        assert len(mx.delivered()) == 1
        assert mx.queue() == []
    assert by_marker("deferred")(delivered[0])
    assert mailseal_results(delivered[0].data, key_records(sel=rsa_key)) == [DKIMResult.PASS]


# --------------------------------------------------------------------------- the fixture itself


def test_instance_leaves_nothing_behind_even_when_the_test_fails() -> None:
    pf = PostfixInstance()
    with pytest.raises(RuntimeError, match="boom"), pf:
        base, master = pf.base, pf.master_pid
        assert master is not None
        assert len(pf.pids()) >= 2  # master and its children (qmgr, pickup, postlogd ...)
        assert pf.submit(message("cleanup"), client=Client(addr="192.0.2.1", name="x.example")).accepted
        raise RuntimeError("boom")
    assert not base.exists()
    stat = Path(f"/proc/{master}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # gone, or a zombie
    assert pf.pids() == []
