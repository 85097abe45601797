"""Signing algorithms (a=): RFC 6376 rsa-sha256/rsa-sha1, RFC 8463 ed25519-sha256.

RFC 8301 retires rsa-sha1 ("Verifiers MUST NOT consider signatures using
RSA-SHA1 as valid") and sets 1024 bits as the smallest RSA key a verifier
must accept (that rule lives in :mod:`mailseal.core.keypolicy`); we verify rsa-sha1 only to explain the result, and count it as
a pass only behind an option whose name says it is legacy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey
PrivateKeyObject = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


class KeyType(StrEnum):
    """k= values of the key record."""

    RSA = "rsa"
    ED25519 = "ed25519"


_NEW_HASH: Final = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}  # direct constructors beat hashlib.new()


@dataclass(frozen=True, slots=True)
class Algorithm:
    """One a= value: its key type and hash."""

    name: str
    key_type: KeyType
    hash_name: str  # as in the key record's h= tag

    @property
    def legacy(self) -> bool:
        """True for rsa-sha1, which RFC 8301 forbids counting as valid."""
        return self.hash_name == "sha1"

    def new_hash(self) -> hashlib._Hash:
        """A fresh hashlib object for the body and header hashes."""
        constructor = _NEW_HASH.get(self.hash_name)
        return constructor() if constructor is not None else hashlib.new(self.hash_name)


RSA_SHA256: Final = Algorithm("rsa-sha256", KeyType.RSA, "sha256")
RSA_SHA1: Final = Algorithm("rsa-sha1", KeyType.RSA, "sha1")
ED25519_SHA256: Final = Algorithm("ed25519-sha256", KeyType.ED25519, "sha256")

ALGORITHMS: Final = {a.name: a for a in (RSA_SHA256, RSA_SHA1, ED25519_SHA256)}

_CRYPTO_HASH: Final = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}
# Stateless parameter objects, built once rather than for every signature.
_PKCS1V15: Final = padding.PKCS1v15()
_PREHASHED: Final = {name: Prehashed(cls()) for name, cls in _CRYPTO_HASH.items()}


def sign_digest(algorithm: Algorithm, key: PrivateKeyObject, header_hash: hashlib._Hash) -> bytes:
    """Sign the hash of the canonicalized header block (RFC 6376 3.7, RFC 8463 3).

    RSA signs the digest with PKCS#1 v1.5; Ed25519 signs the 32-byte SHA-256
    digest itself as its message (PureEdDSA over the hash).
    """
    digest = header_hash.digest()
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(digest, _PKCS1V15, _PREHASHED[algorithm.hash_name])
    return key.sign(digest)


def verify_digest(algorithm: Algorithm, key: PublicKey, signature: bytes, header_hash: hashlib._Hash) -> bool:
    """Check ``signature`` over the header hash; False for any mismatch."""
    digest = header_hash.digest()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, digest, _PKCS1V15, _PREHASHED[algorithm.hash_name])
        else:
            key.verify(signature, digest)
    except InvalidSignature:
        return False
    return True


def rsa_key_made(key: PublicKey, signature: bytes) -> bool | None:
    """Whether ``key`` made ``signature`` over *some* data (RSA only; None for Ed25519).

    PKCS#1 v1.5 signatures can be opened with the public key: the right key
    yields the padding and a DigestInfo whatever was signed, a wrong key yields
    noise. Diagnosis uses this to tell "the key changed" from "the header
    fields changed" (RFC 8017 section 8.2.2 steps 2-3).
    """
    if not isinstance(key, rsa.RSAPublicKey):
        return None
    if len(signature) != (key.key_size + 7) // 8:
        return False
    try:
        key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
    except (InvalidSignature, ValueError):
        return False
    return True


def rsa_signed_digest(key: PublicKey, signature: bytes, digest_size: int) -> bytes | None:
    """The hash an RSA signature was made over, opened with the public key (None if it does not open).

    Lets diagnosis compare many candidate header hashes against ``b=`` with one
    RSA operation instead of one per candidate (RFC 8017 section 8.2.2).
    """
    if not isinstance(key, rsa.RSAPublicKey) or len(signature) != (key.key_size + 7) // 8:
        return None
    try:
        info = key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
    except (InvalidSignature, ValueError):
        return None
    return info[-digest_size:] if len(info) > digest_size else None


def key_type_of(key: PublicKey | PrivateKeyObject) -> KeyType:
    """The k= key type for a key object."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return KeyType.RSA
    return KeyType.ED25519


def rsa_exponent(key: rsa.RSAPublicKey | rsa.RSAPrivateKey | ed25519.Ed25519PublicKey) -> int:
    """The RSA public exponent e (0 for Ed25519 keys)."""
    if isinstance(key, rsa.RSAPrivateKey):
        return key.public_key().public_numbers().e
    if isinstance(key, rsa.RSAPublicKey):
        return key.public_numbers().e
    return 0


def key_bits(key: PublicKey | PrivateKeyObject) -> int:
    """RSA modulus size, or 256 for Ed25519 (its security is about 128 bits)."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return key.key_size
    return 256
