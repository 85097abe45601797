"""Sealing private keys under a key-encryption key: round trip, tampering, moved rows, KEK files."""

from __future__ import annotations

import base64

import pytest

from mailseal.core.keywrap import KEK_BYTES, KekRing, KeyEncryptionKey, parse_kek_text, seal, unseal
from mailseal.errors import KeyStoreError

KEK = KeyEncryptionKey(bytes(range(KEK_BYTES)))
OTHER = KeyEncryptionKey(bytes(KEK_BYTES))
NONCE = bytes(12)
PEM = b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"


def test_round_trip_and_no_plaintext_in_the_sealed_bytes() -> None:
    sealed = seal(KEK, PEM, domain="example.com", selector="s1", nonce=NONCE)
    assert PEM not in sealed and b"PRIVATE" not in sealed
    assert unseal(KekRing((KEK,)), KEK.id, sealed, domain="example.com", selector="s1") == PEM


def test_a_sealed_key_moved_to_another_row_does_not_open() -> None:
    sealed = seal(KEK, PEM, domain="example.com", selector="s1", nonce=NONCE)
    with pytest.raises(KeyStoreError, match="moved from another key's row"):
        unseal(KekRing((KEK,)), KEK.id, sealed, domain="example.com", selector="s2")
    with pytest.raises(KeyStoreError, match="moved from another key's row"):
        unseal(KekRing((KEK,)), KEK.id, sealed, domain="evil.example", selector="s1")


@pytest.mark.parametrize("position", [0, 4, 16, -1])
def test_any_altered_byte_is_refused(position: int) -> None:
    sealed = bytearray(seal(KEK, PEM, domain="example.com", selector="s1", nonce=NONCE))
    sealed[position] ^= 1
    with pytest.raises(KeyStoreError, match=r"malformed|altered"):
        unseal(KekRing((KEK,)), KEK.id, bytes(sealed), domain="example.com", selector="s1")


def test_a_missing_kek_is_named_by_id() -> None:
    sealed = seal(KEK, PEM, domain="example.com", selector="s1", nonce=NONCE)
    with pytest.raises(
        KeyStoreError, match=f"sealed with KEK {KEK.id}, which is not in this host's KEK file"
    ):
        unseal(KekRing((OTHER,)), KEK.id, sealed, domain="example.com", selector="s1")


def test_a_ring_opens_with_any_of_its_keys_and_seals_with_the_first() -> None:
    ring = parse_kek_text(f"# comment\n{OTHER.to_line()}\n\n{KEK.to_line()}\n")
    assert ring.current == OTHER and ring.find(KEK.id) == KEK
    old = seal(KEK, PEM, domain="d.example", selector="s", nonce=NONCE)
    assert unseal(ring, KEK.id, old, domain="d.example", selector="s") == PEM
    assert "secret" not in repr(KEK) and KEK.to_line() not in repr(ring)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no key in it"),
        ("# only a comment\n", "no key in it"),
        ("not base64!\n", "line 1: not base64"),
        (base64.b64encode(b"short").decode() + "\n", "line 1: a key-encryption key is 32 bytes, not 5"),
        ((KEK.to_line() + "\n") * 17, "more than 16 keys"),
    ],
)
def test_bad_kek_files_are_refused_with_the_line(text: str, reason: str) -> None:
    with pytest.raises(KeyStoreError, match=reason):
        parse_kek_text(text)


def test_the_kek_id_does_not_reveal_the_key() -> None:
    assert len(KEK.id) == 16
    assert KEK.id != OTHER.id
    assert KEK.id not in KEK.secret.hex()
