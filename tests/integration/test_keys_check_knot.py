"""``mailseal keys check`` against knotd serving one broken record per problem it must name."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import PrivateKey, generate_private_key
from mailseal.core.keyrecord import split_txt
from mailseal.keys.lifecycle import records_for
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import Change, KeyState, NewKey
from support.clock import FIXED_NOW
from support.dnsserver import knot_available, txt_strings
from support.keyflow import DOMAIN
from support.knotkeys import KeysSetup, keys_setup
from support.required import needs

pytestmark = [
    pytest.mark.integration,
    needs(knot_available(), "knotd", "apt-get install knot knot-dnsutils"),
]


def _rsa512() -> str:
    modulus = (
        1 << 511
    ) | 0xC0FFEE1  # a 512-bit public key, built from numbers (cryptography refuses to generate one)
    der = (
        rsa.RSAPublicNumbers(65537, modulus)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory, rsa_key: PrivateKey) -> Iterator[KeysSetup]:
    tmp_path = tmp_path_factory.mktemp("check")
    store = SqliteKeyStore(tmp_path / "data" / "keys.db")
    ed = generate_private_key(KeyType.ED25519)
    other = generate_private_key(KeyType.ED25519)
    rsa1024 = generate_private_key(KeyType.RSA, 1024)

    def keep(selector: str, key: PrivateKey) -> str:
        record, revoked = records_for(key.key_type, key.public_key_b64())
        store.add(NewKey(DOMAIN, selector, key.key_type, key.bits, key.to_pem(), record, revoked, FIXED_NOW))
        return record

    for selector in ("good", "missing", "several", "longttl", "mismatch", "revoked"):
        keep(selector, ed)
    missing = store.entry(DOMAIN, "missing")
    assert missing is not None
    store.apply([Change.to(missing, state=KeyState.PUBLISHED, published_at=FIXED_NOW)])  # it should be in DNS
    rsa_record = keep("split", rsa_key)
    keep("cut", rsa_key)
    keep("quotes", rsa_key)
    keep("small", rsa1024)
    testing_record, _ = records_for(KeyType.ED25519, ed.public_key_b64(), testing=True)
    good = records_for(KeyType.ED25519, ed.public_key_b64())[0]
    first, second = split_txt(rsa_record)
    zone = "".join(
        [
            f"good._domainkey IN TXT {txt_strings(good)}\n",
            f"several._domainkey IN TXT {txt_strings(good)}\n",
            'several._domainkey IN TXT "v=spf1 -all"\n',
            f"longttl._domainkey 172800 IN TXT {txt_strings(good)}\n",
            f"mismatch._domainkey IN TXT {txt_strings(records_for(KeyType.ED25519, other.public_key_b64())[0])}\n",
            'revoked._domainkey IN TXT "v=DKIM1; k=ed25519; p="\n',
            f'split._domainkey IN TXT "{first}"\n',
            f'split._domainkey IN TXT "{second}"\n',
            f'cut._domainkey IN TXT "{first}"\n',
            f"quotes._domainkey IN TXT {txt_strings(chr(34) + first + chr(34) + ' ' + chr(34) + second + chr(34))}\n",
            f"small._domainkey IN TXT {txt_strings(records_for(KeyType.RSA, rsa1024.public_key_b64())[0])}\n",
            f"tiny._domainkey IN TXT {txt_strings('v=DKIM1; k=rsa; p=' + _rsa512())}\n",
            f"testing._domainkey IN TXT {txt_strings(testing_record)}\n",
            'syntax._domainkey IN TXT "v=DKIM1; k=rsa; p=!!!not-base64"\n',
            'version._domainkey IN TXT "v=DKIM2; p=abc"\n',
        ]
    )
    store.close()
    with keys_setup(tmp_path, zone) as ready:
        yield ready


@pytest.mark.parametrize(
    ("selector", "code", "level", "exit_status"),
    [
        ("good", "key-matches", "pass", 0),
        ("missing", "no-record", "fail", 1),
        ("syntax", "syntax", "fail", 1),
        ("version", "syntax", "fail", 1),
        ("mismatch", "key-mismatch", "fail", 1),
        ("small", "key-weak", "warn", 3),
        ("tiny", "key-too-small", "fail", 1),
        ("testing", "testing-flag", "warn", 3),
        ("split", "split-into-records", "fail", 1),
        ("quotes", "quotes-in-record", "fail", 1),
        ("cut", "truncated", "fail", 1),
        ("several", "several-records", "fail", 1),
        ("longttl", "ttl-long", "warn", 3),
        ("revoked", "revoked", "fail", 1),
    ],
)
def test_check_names_the_problem(
    checked: KeysSetup, selector: str, code: str, level: str, exit_status: int
) -> None:
    status, out, _ = checked.cli("check", DOMAIN, selector, "--json", now=FIXED_NOW)
    (result,) = json.loads(out)
    found = {f["code"]: f for f in result["findings"]}
    assert code in found, (selector, sorted(found))
    assert found[code]["level"] == level
    if level != "pass":
        assert found[code]["fix"]
    assert status == exit_status, (selector, result)
    assert result["status"] == {0: "pass", 1: "fail", 3: "warn"}[exit_status]


def test_check_text_output_gives_each_fix(checked: KeysSetup) -> None:
    status, out, _ = checked.cli("check", DOMAIN, "split", now=FIXED_NOW)
    assert status == 1
    assert f"split._domainkey.{DOMAIN} (generated): FAIL" in out
    assert "FAIL  split-into-records" in out and "fix: publish ONE TXT record" in out


def test_check_without_selector_covers_the_keys_that_belong_in_dns(checked: KeysSetup) -> None:
    status, out, _ = checked.cli("check", DOMAIN, "--json", now=FIXED_NOW)
    assert status == 1
    assert [r["name"] for r in json.loads(out)] == [
        f"missing._domainkey.{DOMAIN}"
    ]  # the others are 'generated'
    status, _, err = checked.cli("check", "example.org", now=FIXED_NOW)
    assert status == 2 and "give a SELECTOR" in err


def test_resolver_view_is_compared(checked: KeysSetup) -> None:
    _, out, _ = checked.cli("check", DOMAIN, "good", "--json", now=FIXED_NOW)
    (result,) = json.loads(out)
    found = {f["code"]: f["level"] for f in result["findings"]}
    assert found["resolver-agrees"] == "pass" and found["ttl"] == "pass"


def test_unreachable_servers_fail_the_check(checked: KeysSetup, tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        status, out, _ = checked.cli(
            "check",
            DOMAIN,
            "good",
            "--json",
            "--authoritative",
            f"127.0.0.1:{port}",
            "--timeout",
            "0.3",
            now=FIXED_NOW,
        )
    (result,) = json.loads(out)
    found = {f["code"]: f["level"] for f in result["findings"]}
    assert status == 1 and found["dns-error"] == "fail"
