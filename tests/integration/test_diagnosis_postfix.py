"""Mail broken by real software on its way through a real Postfix, then diagnosed.

* A mailing list: Debian's mlmmj, fed by Postfix's ``pipe`` transport, adds its
  Subject prefix and footer and sends the post back through Postfix to the
  subscriber (our SMTP sink). Signed by mailseal and by OpenDKIM (simple/simple).
* A re-encoding: Postfix's SMTP client converts an 8-bit body to
  quoted-printable for a server that does not announce 8BITMIME (made so with
  ``smtp_discard_ehlo_keywords = 8bitmime, smtputf8``).

CI sets MAILSEAL_REQUIRE_PEERS: then a missing tool fails these tests instead of skipping them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import mailseal
from mailseal import PrivateKey
from mailseal.core.diagnosis import Cause
from mailseal.dns.memory import InMemoryResolver
from support import peers
from support.messages import list_post
from support.postfix import PostfixInstance, postfix_available
from support.required import needs

MLMMJ_RECEIVE = shutil.which("mlmmj-receive") or "/usr/bin/mlmmj-receive"
LIST_DOMAIN = "lists.example.org"
FOOTER = "-- \nteam mailing list: https://lists.example.org/team\n"


def _mlmmj_available() -> bool:
    return os.access(MLMMJ_RECEIVE, os.X_OK)


pytestmark = [
    pytest.mark.integration,
    needs(
        postfix_available() and _mlmmj_available(),
        "postfix and mlmmj",
        "apt-get install postfix mlmmj; scripts/test.sh does it",
    ),
]

MESSAGE = list_post("team")


def _records(key: PrivateKey, *selectors: str) -> dict[str, str]:
    return {f"{s}._domainkey.example.com": f"v=DKIM1; k=rsa; p={key.public_key_b64()}" for s in selectors}


def _make_list(spool: Path, postfix_port: int) -> None:
    """The directories mlmmj-make-ml creates, and the list's settings (TUNABLES)."""
    home = spool / "team"
    for sub in (
        "incoming", "queue", "queue/discarded", "archive", "text", "subconf", "unsubconf",
        "bounce", "control", "moderation", "subscribers.d", "digesters.d", "requeue", "nomailsubs.d",
    ):  # fmt: skip
        (home / sub).mkdir(parents=True)
    (home / "index").touch()
    control = home / "control"
    (control / "listaddress").write_text(f"team@{LIST_DOMAIN}\n")
    (control / "owner").write_text("owner@example.org\n")
    (control / "prefix").write_text("[team]\n")
    (control / "footer").write_text(FOOTER)
    (control / "relayhost").write_text("127.0.0.1\n")
    (control / "smtpport").write_text(f"{postfix_port}\n")
    (home / "subscribers.d" / "b").write_text("bob@example.net\n")
    nobody = pwd.getpwnam("nobody")
    for path in [spool, *spool.rglob("*")]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    spool.chmod(0o755)


@pytest.fixture(scope="module")
def mailing_list() -> Iterator[PostfixInstance]:
    spool = Path(tempfile.mkdtemp(prefix="ms-mlmmj-", dir="/tmp"))
    service = f"mlmmj unix - n n - - pipe flags=ORhu user=nobody argv={MLMMJ_RECEIVE} -F -L {spool}/$nexthop"
    instance = PostfixInstance(
        services=[service],
        main_cf={
            "transport_maps": f"inline:{{ {LIST_DOMAIN}=mlmmj:team }}",
            "mlmmj_destination_recipient_limit": "1",
        },
    )
    try:
        with instance:
            _make_list(spool, instance.port)
            yield instance
    finally:
        shutil.rmtree(spool, ignore_errors=True)


def test_mlmmj_footer_and_subject_tag_are_diagnosed(
    mailing_list: PostfixInstance, rsa_key: PrivateKey
) -> None:
    opendkim = peers.have_opendkim()
    signed = mailseal.sign(MESSAGE, key=rsa_key, domain="example.com", selector="ms") + MESSAGE
    if opendkim:
        signed = (
            peers.opendkim_sign(
                signed,
                selector="od",
                domain="example.com",
                private_key_pem=rsa_key.to_pem(),
                canonicalization="simple/simple",
            )
            + signed
        )
    resolver = InMemoryResolver(_records(rsa_key, "ms", "od"))
    assert all(s.passed for s in mailseal.verify_sync(signed, resolver=resolver).signatures)
    result = mailing_list.submit(signed, sender="alice@example.com", recipients=[f"team@{LIST_DOMAIN}"])
    assert result.accepted, result
    try:
        (post,) = mailing_list.delivered(1, timeout=30)
    except Exception:
        pytest.fail(f"the list did not deliver; Postfix log:\n{mailing_list.log_text()[-3000:]}")
    assert post.rcpt_to == ("bob@example.net",)
    assert b"Subject: [team] Meeting notes" in post.data
    assert b"team mailing list" in post.data
    report = mailseal.verify_sync(post.data, resolver=resolver)
    by_selector = {s.selector: s for s in report.signatures}
    ours = by_selector["ms"]
    assert ours.diagnosis is not None
    assert ours.diagnosis.code is Cause.BODY_APPENDED
    assert 'first line: "--"' in ours.diagnosis.evidence
    assert 'the Subject gained a tag (subject: "Meeting notes for Thursday" -> "[team] Meeting' in (
        ours.diagnosis.summary
    )
    if opendkim:
        theirs = by_selector["od"]
        assert theirs.diagnosis is not None and theirs.diagnosis.code is Cause.BODY_APPENDED
        assert "Subject gained a tag" in theirs.diagnosis.summary


def test_postfix_downgrade_to_quoted_printable_is_diagnosed(rsa_key: PrivateKey) -> None:
    signed = mailseal.sign(MESSAGE, key=rsa_key, domain="example.com", selector="ms") + MESSAGE
    resolver = InMemoryResolver(_records(rsa_key, "ms"))
    with PostfixInstance(
        main_cf={"disable_mime_output_conversion": "no", "smtp_discard_ehlo_keywords": "8bitmime, smtputf8"}
    ) as relay:
        with relay.smtp() as session:  # a client that declares its 8-bit body, as it must (RFC 6152)
            session.sendmail("alice@example.com", ["bob@example.net"], signed, mail_options=["BODY=8BITMIME"])
        (out,) = relay.delivered(1, timeout=30)
    assert b"Content-Transfer-Encoding: quoted-printable" in out.data  # Postfix really re-encoded it
    (sig,) = mailseal.verify_sync(out.data, resolver=resolver).signatures
    assert sig.diagnosis is not None
    assert sig.diagnosis.code is Cause.BODY_REENCODED, sig.diagnosis
    assert "quoted-printable" in sig.diagnosis.evidence
