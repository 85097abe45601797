"""Self-check of the peer harness (tests/support/peers.py), not of mailseal.

Each available peer signs a sample message; every available peer must verify
every signature it can check ("pass"), and must say "fail" once the body or a
signed header field is changed.  Peers that are missing are skipped, never
silently passed.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from support import peers
from support.required import need

pytestmark = pytest.mark.interop

DOMAIN = "example.com"
RSA_SELECTOR = "rsa2048"
ED_SELECTOR = "ed"

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@example.org>\r\n"
    b"Subject: interop self-check\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
    b"Message-ID: <selfcheck@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b"\r\n"
    b"  indented line with trailing space \r\n"
    b"last line\r\n"
)
SIGNED_HEADERS = ("from", "to", "subject", "date", "message-id")


@dataclass(frozen=True)
class Keys:
    rsa_pem: bytes
    ed_pem: bytes
    dns: dict[str, str]

    def pem(self, algorithm: peers.Algorithm) -> bytes:
        return self.ed_pem if algorithm == "ed25519-sha256" else self.rsa_pem

    def selector(self, algorithm: peers.Algorithm) -> str:
        return ED_SELECTOR if algorithm == "ed25519-sha256" else RSA_SELECTOR


def _pkcs8(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def keys() -> Keys:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    rsa_pub = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ed_pub = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    dns = {
        f"{RSA_SELECTOR}._domainkey.{DOMAIN}": "v=DKIM1; k=rsa; p=" + base64.b64encode(rsa_pub).decode(),
        f"{ED_SELECTOR}._domainkey.{DOMAIN}": "v=DKIM1; k=ed25519; p=" + base64.b64encode(ed_pub).decode(),
    }
    return Keys(rsa_pem=_pkcs8(rsa_key), ed_pem=_pkcs8(ed_key), dns=dns)


# ----------------------------------------------------------------------------- peer tables

Signer = Callable[[bytes, Keys, peers.Algorithm, Path], bytes]
Verifier = Callable[[bytes, dict[str, str], Path], list[str]]


def _sign_dkimpy(message: bytes, keys: Keys, algorithm: peers.Algorithm, _tmp: Path) -> bytes:
    return peers.dkimpy_sign(
        message,
        selector=keys.selector(algorithm),
        domain=DOMAIN,
        private_key_pem=keys.pem(algorithm),
        algorithm=algorithm,
        headers=SIGNED_HEADERS,
    )


def _sign_opendkim(message: bytes, keys: Keys, algorithm: peers.Algorithm, tmp: Path) -> bytes:
    return peers.opendkim_sign(
        message,
        selector=keys.selector(algorithm),
        domain=DOMAIN,
        private_key_pem=keys.pem(algorithm),
        algorithm=algorithm,
        sign_headers=SIGNED_HEADERS,
        workdir=tmp,
    )


def _sign_mail_dkim(message: bytes, keys: Keys, algorithm: peers.Algorithm, _tmp: Path) -> bytes:
    return peers.mail_dkim_sign(
        message,
        selector=keys.selector(algorithm),
        domain=DOMAIN,
        private_key_pem=keys.pem(algorithm),
        algorithm=algorithm,
        headers=SIGNED_HEADERS,
    )


def _verify_dkimpy(message: bytes, dns: dict[str, str], _tmp: Path) -> list[str]:
    return peers.dkimpy_verify(message, dns)


def _verify_opendkim(message: bytes, dns: dict[str, str], tmp: Path) -> list[str]:
    return peers.opendkim_verify(message, dns, tmp)


def _verify_mail_dkim(message: bytes, dns: dict[str, str], _tmp: Path) -> list[str]:
    return peers.mail_dkim_verify(message, dns)


SIGNERS: dict[str, Signer] = {
    "dkimpy": _sign_dkimpy,
    "opendkim": _sign_opendkim,
    "mail_dkim": _sign_mail_dkim,
}
VERIFIERS: dict[str, Verifier] = {
    "dkimpy": _verify_dkimpy,
    "opendkim": _verify_opendkim,
    "mail_dkim": _verify_mail_dkim,
}
AVAILABLE: dict[str, Callable[[], bool]] = {
    "dkimpy": peers.have_dkimpy,
    "opendkim": peers.have_opendkim,
    "mail_dkim": peers.have_mail_dkim,
}
ED25519: dict[str, Callable[[], bool]] = {
    "dkimpy": peers.dkimpy_supports_ed25519,
    "opendkim": peers.opendkim_supports_ed25519,
    "mail_dkim": peers.mail_dkim_supports_ed25519,
}
ALGORITHMS: tuple[peers.Algorithm, ...] = ("rsa-sha256", "ed25519-sha256")


# What would let each peer handle ed25519-sha256 where the installed one cannot.
ED25519_HINT = {
    "dkimpy": "pip install pynacl",
    "opendkim": "an OpenDKIM built against OpenSSL 1.1.1 or later",
    "mail_dkim": "Mail::DKIM newer than Debian 12's 1.20230212, from CPAN",
}


def _require(peer: str, algorithm: peers.Algorithm | None = None) -> None:
    """A missing peer skips, or fails under MAILSEAL_REQUIRE_PEERS; a peer without Ed25519 skips."""
    need(AVAILABLE[peer](), peer, "scripts/test.sh installs it")
    if algorithm == "ed25519-sha256" and not ED25519[peer]():
        pytest.skip(f"{peer} cannot handle ed25519-sha256 here ({ED25519_HINT[peer]})")


@pytest.fixture(scope="module")
def signed(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], bytes]:
    """Signature header of MESSAGE by every (available signer, algorithm it supports)."""
    out: dict[tuple[str, str], bytes] = {}
    for peer, sign in SIGNERS.items():
        for algorithm in ALGORITHMS:
            if AVAILABLE[peer]() and (algorithm != "ed25519-sha256" or ED25519[peer]()):
                out[peer, algorithm] = sign(MESSAGE, keys, algorithm, tmp_path_factory.mktemp(peer))
    return out


def _header(signed: dict[tuple[str, str], bytes], signer: str, algorithm: peers.Algorithm) -> bytes:
    _require(signer, algorithm)
    return signed[signer, algorithm]


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("signer", sorted(SIGNERS))
def test_signature_header_is_crlf_wire_format(
    signed: dict[tuple[str, str], bytes], signer: str, algorithm: peers.Algorithm
) -> None:
    header = _header(signed, signer, algorithm)
    assert header.startswith(b"DKIM-Signature:")
    assert header.endswith(b"\r\n")
    assert header.count(b"\n") == header.count(b"\r\n"), "bare LF in signature header"
    assert header.count(b"\r") == header.count(b"\r\n"), "bare CR in signature header"
    assert f"a={algorithm}".encode() in header


@pytest.mark.parametrize("verifier", sorted(VERIFIERS))
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("signer", sorted(SIGNERS))
def test_peer_verifies_peer(
    signed: dict[tuple[str, str], bytes],
    keys: Keys,
    tmp_path: Path,
    signer: str,
    algorithm: peers.Algorithm,
    verifier: str,
) -> None:
    header = _header(signed, signer, algorithm)
    _require(verifier, algorithm)
    verify = VERIFIERS[verifier]
    assert verify(header + MESSAGE, keys.dns, tmp_path) == ["pass"]


@pytest.mark.parametrize("verifier", sorted(VERIFIERS))
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("signer", sorted(SIGNERS))
@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda m: m.replace(b"Hello Bob", b"Hello Eve"), id="body"),
        pytest.param(lambda m: m.replace(b"interop self-check", b"interop self-chuck"), id="subject"),
    ],
)
def test_tampering_fails_everywhere(
    signed: dict[tuple[str, str], bytes],
    keys: Keys,
    tmp_path: Path,
    signer: str,
    algorithm: peers.Algorithm,
    verifier: str,
    tamper: Callable[[bytes], bytes],
) -> None:
    header = _header(signed, signer, algorithm)
    _require(verifier, algorithm)
    tampered = tamper(MESSAGE)
    assert tampered != MESSAGE
    assert VERIFIERS[verifier](header + tampered, keys.dns, tmp_path) == ["fail"]


@pytest.mark.parametrize("verifier", sorted(VERIFIERS))
def test_multiple_signatures_reported_in_header_order(
    signed: dict[tuple[str, str], bytes], keys: Keys, tmp_path: Path, verifier: str
) -> None:
    _require(verifier)
    _require("dkimpy", "ed25519-sha256")
    good_rsa = signed["dkimpy", "rsa-sha256"]
    ed = signed["dkimpy", "ed25519-sha256"]
    # An RSA signature from a selector with no key published, between two good ones.
    orphan = peers.dkimpy_sign(
        MESSAGE, selector="nokey", domain=DOMAIN, private_key_pem=keys.rsa_pem, headers=SIGNED_HEADERS
    )
    message = ed + orphan + good_rsa + MESSAGE
    ed_expected = "pass" if ED25519[verifier]() else "permerror"
    missing_key = "temperror" if verifier == "opendkim" else "permerror"
    assert VERIFIERS[verifier](message, keys.dns, tmp_path) == [ed_expected, missing_key, "pass"]


@pytest.mark.parametrize("verifier", sorted(VERIFIERS))
def test_unsigned_message_has_no_verdicts(keys: Keys, tmp_path: Path, verifier: str) -> None:
    _require(verifier)
    assert VERIFIERS[verifier](MESSAGE, keys.dns, tmp_path) == []


def test_single_missing_key_is_still_reported_by_opendkim(keys: Keys, tmp_path: Path) -> None:
    """OpenDKIM drops its A-R field here; the harness falls back to the summary line."""
    _require("opendkim")
    _require("dkimpy")
    header = peers.dkimpy_sign(
        MESSAGE, selector="nokey", domain=DOMAIN, private_key_pem=keys.rsa_pem, headers=SIGNED_HEADERS
    )
    verdicts = peers.opendkim_verify_detailed(header + MESSAGE, keys.dns, tmp_path)
    assert [v.result for v in verdicts] == ["temperror"]
    assert "key DNS query failed" in verdicts[0].detail


def test_mail_dkim_ed25519_limits_are_reported(signed: dict[tuple[str, str], bytes], keys: Keys) -> None:
    """Debian 12's Mail::DKIM (1.20230212) has no Ed25519: verify says permerror, sign refuses."""
    _require("mail_dkim")
    _require("dkimpy", "ed25519-sha256")
    if peers.mail_dkim_supports_ed25519():
        pytest.skip(f"Mail::DKIM {peers.mail_dkim_version()} supports ed25519")
    verdicts = peers.mail_dkim_verify_detailed(signed["dkimpy", "ed25519-sha256"] + MESSAGE, keys.dns)
    assert [v.result for v in verdicts] == ["permerror"]
    assert "unsupported algorithm" in verdicts[0].detail
    with pytest.raises(peers.PeerUnsupported):
        peers.mail_dkim_sign(
            MESSAGE,
            selector=ED_SELECTOR,
            domain=DOMAIN,
            private_key_pem=keys.ed_pem,
            algorithm="ed25519-sha256",
        )


def test_unparseable_signature_stops_opendkim(keys: Keys, tmp_path: Path) -> None:
    """opendkim -t exits 70 without any verdict when a DKIM-Signature has no b= tag."""
    _require("opendkim")
    broken = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=rsa2048; h=from; bh=AAAA\r\n"
    with pytest.raises(peers.PeerError, match="exited 70"):
        peers.opendkim_verify(broken + MESSAGE, keys.dns, tmp_path)
    _require("mail_dkim")
    assert len(peers.mail_dkim_verify(broken + MESSAGE, keys.dns)) == 1
