"""Key bytes <-> key objects: PEM private keys, p= public keys, key generation.

With :mod:`mailseal.core.algorithms`, the only place that touches
``cryptography`` key formats.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailseal.core.algorithms import (
    ED25519_SHA256,
    RSA_SHA256,
    Algorithm,
    KeyType,
    PrivateKeyObject,
    PublicKey,
    key_bits,
    key_type_of,
)
from mailseal.core.keypolicy import DEFAULT_MAX_RSA_BITS, MIN_RSA_BITS, KeySize, key_size
from mailseal.errors import KeyFileError, UsageError

DEFAULT_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """A loaded signing key; ``repr()`` never shows key material."""

    key: PrivateKeyObject = field(repr=False)
    key_type: KeyType
    bits: int

    @property
    def default_algorithm(self) -> Algorithm:
        """rsa-sha256 for RSA keys, ed25519-sha256 for Ed25519 keys."""
        return RSA_SHA256 if self.key_type is KeyType.RSA else ED25519_SHA256

    def public_key_b64(self) -> str:
        """The p= value that publishes this key's public half."""
        return public_key_b64(self.key.public_key())

    def to_pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted (the file holding it must be 0600)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def load_private_key(data: bytes, *, password: bytes | None = None) -> PrivateKey:
    """Load a PEM private key (PKCS#8 or PKCS#1), or a base64 Ed25519 seed.

    Loading validates the key, which costs milliseconds for RSA: load once and
    reuse the object. Raises :class:`KeyFileError` for unusable data and
    :class:`UsageError` for RSA keys below ``keypolicy.MIN_RSA_BITS`` (1024).
    """
    stripped = data.strip()
    key: object
    if stripped.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(stripped, password=password)
        except (ValueError, TypeError) as exc:
            raise KeyFileError(f"cannot load private key: {exc}") from None
    else:
        try:
            seed = base64.b64decode(stripped, validate=True)
        except binascii.Error:
            raise KeyFileError("private key is neither PEM nor a base64 Ed25519 seed") from None
        if len(seed) != 32:
            raise KeyFileError("a base64 Ed25519 seed must decode to 32 bytes")
        key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"unsupported private key type {type(key).__name__}: DKIM uses RSA or Ed25519")
    bits = key_bits(key)
    if isinstance(key, rsa.RSAPrivateKey) and bits < MIN_RSA_BITS:
        raise UsageError(f"RSA key of {bits} bits refused: RFC 8301 requires at least {MIN_RSA_BITS}")
    return PrivateKey(key, key_type_of(key), bits)


def generate_private_key(key_type: KeyType, bits: int = DEFAULT_RSA_BITS) -> PrivateKey:
    """A new key; RSA-2048 by default (RFC 8301: 1024 minimum, 2048 recommended)."""
    if key_type is KeyType.ED25519:
        key: PrivateKeyObject = ed25519.Ed25519PrivateKey.generate()
    else:
        if bits < MIN_RSA_BITS:
            raise UsageError(f"RSA keys must have at least {MIN_RSA_BITS} bits (RFC 8301)")
        if bits > DEFAULT_MAX_RSA_BITS:
            raise UsageError(f"RSA keys above {DEFAULT_MAX_RSA_BITS} bits are not supported")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return PrivateKey(key, key_type_of(key), key_bits(key))


def public_key_b64(key: PublicKey) -> str:
    """p= encoding: RSA as SubjectPublicKeyInfo DER, Ed25519 as the raw 32 bytes."""
    if isinstance(key, rsa.RSAPublicKey):
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        der = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(der).decode("ascii")


class PublicKeyError(ValueError):
    """p= data that is not a usable key of the stated type."""


MAX_CACHED_KEY = 2048  # bytes of DER; an RSA-8192 key is about 1.1 KB, so real keys always fit


def parse_public_key(key_type: KeyType, der: bytes) -> PublicKey:
    """Decode p= bytes, memoized for key-sized inputs only (the cache cannot be bloated)."""
    return parse_public_key_sized(key_type, der)[0]


def parse_public_key_sized(key_type: KeyType, der: bytes) -> tuple[PublicKey, KeySize]:
    """:func:`parse_public_key` plus the numbers the size rules read, both memoized together."""
    if len(der) <= MAX_CACHED_KEY:
        return _parse_public_key_cached(key_type, der)
    key = _parse_public_key(key_type, der)
    return key, key_size(key)


@lru_cache(maxsize=4096)
def _parse_public_key_cached(key_type: KeyType, der: bytes) -> tuple[PublicKey, KeySize]:
    key = _parse_public_key(key_type, der)
    return key, key_size(key)


def _parse_public_key(key_type: KeyType, der: bytes) -> PublicKey:
    """Decode p= bytes; memoized because the same few keys sign most mail.

    RSA keys may be SubjectPublicKeyInfo (what everybody publishes) or a bare
    PKCS#1 RSAPublicKey (the form RFC 6376 section 3.6.1 names).
    """
    if key_type is KeyType.ED25519:
        if len(der) != 32:
            raise PublicKeyError(f"an Ed25519 key is 32 bytes, this one is {len(der)}")
        return ed25519.Ed25519PublicKey.from_public_bytes(der)
    try:
        key: object = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        try:
            key = _load_pkcs1_rsa(der)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise PublicKeyError("p= is not a DER RSA public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise PublicKeyError(f"p= holds a {type(key).__name__}, not an RSA key")
    return key


def _load_pkcs1_rsa(der: bytes) -> object:
    pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(der) + b"-----END RSA PUBLIC KEY-----\n"
    return serialization.load_pem_public_key(pem)
