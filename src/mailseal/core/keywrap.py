"""Private keys sealed at rest under a key-encryption key (KEK): AES-256-GCM, bound to the key's name.

A shared database must not hand a signing key to whoever can read its table.
Each signing host holds a KEK file (mode 0600) that the database never sees;
rows hold only ``seal()`` output. The AEAD's associated data is the key's
identity (``domain``, ``selector``), so a sealed key copied onto another row
fails to open instead of signing under the wrong name.

A KEK file holds one or more keys, one per line (base64 of 32 random bytes;
``#`` comments): the first seals, any of them opens. That is what makes KEK
rotation possible without a moment when some host cannot read the keys: add
the new KEK first everywhere, re-seal every row, then drop the old one.

Sealed format: ``b"MSK1" || nonce (12 bytes) || ciphertext+tag``; the KEK's
id (the first 16 hex digits of its SHA-256) is stored beside it, so the right
KEK is picked without trial decryption. Pure functions over bytes: the nonce
comes from the caller (the I/O edge reads the random source).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mailseal.errors import KeyStoreError

__all__ = ["KEK_BYTES", "NONCE_BYTES", "KekRing", "KeyEncryptionKey", "parse_kek_text", "seal", "unseal"]

KEK_BYTES: Final = 32
NONCE_BYTES: Final = 12
_MAGIC: Final = b"MSK1"
MAX_KEKS: Final = 16
"""A KEK file holds at most this many keys (rotation needs two)."""


@dataclass(frozen=True, slots=True)
class KeyEncryptionKey:
    """One AES-256 key; ``repr()`` shows only its id."""

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEK_BYTES:
            raise KeyStoreError(f"a key-encryption key is {KEK_BYTES} bytes, not {len(self.secret)}")

    @property
    def id(self) -> str:
        """A public fingerprint: which KEK sealed a row (safe to store and to log)."""
        return hashlib.sha256(b"mailseal-kek\0" + self.secret).hexdigest()[:16]

    def to_line(self) -> str:
        """The KEK file line for this key."""
        return base64.b64encode(self.secret).decode("ascii")


@dataclass(frozen=True, slots=True)
class KekRing:
    """The keys of one KEK file, newest first: ``current`` seals, each opens what it sealed."""

    keys: tuple[KeyEncryptionKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyStoreError("a KEK file must hold at least one key")

    @property
    def current(self) -> KeyEncryptionKey:
        """The key new seals use."""
        return self.keys[0]

    def find(self, kek_id: str) -> KeyEncryptionKey | None:
        """The key with this id, or ``None``."""
        return next((k for k in self.keys if k.id == kek_id), None)


def parse_kek_text(text: str) -> KekRing:
    """Parse a KEK file's text; :class:`KeyStoreError` names the bad line."""
    keys: list[KeyEncryptionKey] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            secret = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise KeyStoreError(f"line {number}: not base64") from None
        if len(secret) != KEK_BYTES:
            raise KeyStoreError(
                f"line {number}: a key-encryption key is {KEK_BYTES} bytes, not {len(secret)}"
            )
        keys.append(KeyEncryptionKey(secret))
        if len(keys) > MAX_KEKS:
            raise KeyStoreError(f"more than {MAX_KEKS} keys")
    if not keys:
        raise KeyStoreError("no key in it")
    return KekRing(tuple(keys))


def _aad(domain: str, selector: str) -> bytes:
    return f"mailseal-private-key\0{domain}\0{selector}".encode()


def seal(kek: KeyEncryptionKey, plaintext: bytes, *, domain: str, selector: str, nonce: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` (a PEM) for the key ``selector`` of ``domain``."""
    if len(nonce) != NONCE_BYTES:
        raise KeyStoreError(f"the nonce must be {NONCE_BYTES} bytes")
    return _MAGIC + nonce + AESGCM(kek.secret).encrypt(nonce, plaintext, _aad(domain, selector))


def unseal(ring: KekRing, kek_id: str, sealed: bytes, *, domain: str, selector: str) -> bytes:
    """The plaintext of ``sealed``; :class:`KeyStoreError` when no KEK fits or the bytes were altered."""
    kek = ring.find(kek_id)
    if kek is None:
        have = ", ".join(k.id for k in ring.keys)
        raise KeyStoreError(
            f"the private key of {selector}._domainkey.{domain} is sealed with KEK {kek_id}, "
            f"which is not in this host's KEK file (it has {have})"
        )
    if len(sealed) < len(_MAGIC) + NONCE_BYTES + 16 or not sealed.startswith(_MAGIC):
        raise KeyStoreError(f"the sealed private key of {selector}._domainkey.{domain} is malformed")
    nonce = sealed[len(_MAGIC) : len(_MAGIC) + NONCE_BYTES]
    try:
        return AESGCM(kek.secret).decrypt(nonce, sealed[len(_MAGIC) + NONCE_BYTES :], _aad(domain, selector))
    except InvalidTag:
        raise KeyStoreError(
            f"the sealed private key of {selector}._domainkey.{domain} does not open with KEK {kek_id}: "
            "altered, or moved from another key's row"
        ) from None
