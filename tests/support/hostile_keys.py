"""Key records no honest signer publishes: huge moduli, huge or even exponents (issue 8 item 7)."""

from __future__ import annotations

import base64
import random

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def odd_number(bits: int, seed: int = 8) -> int:
    """A deterministic odd number of exactly ``bits`` bits (a stand-in modulus or exponent)."""
    value = random.Random(seed).getrandbits(bits)
    return value | 1 | (1 << (bits - 1))


def rsa_p(modulus: int, exponent: int) -> str:
    """The p= value (SubjectPublicKeyInfo, base64) of an RSA public key built from its numbers."""
    key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def modulus_of(public_key_b64: str) -> int:
    """The modulus n of an RSA p= value."""
    key = serialization.load_der_public_key(base64.b64decode(public_key_b64))
    assert isinstance(key, rsa.RSAPublicKey)
    return key.public_numbers().n


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_integer(value: int) -> bytes:
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")  # a leading 0 keeps it positive
    return b"\x02" + _der_length(len(raw)) + raw


def pkcs1_p(modulus: int, exponent: int) -> str:
    """A bare PKCS#1 RSAPublicKey p= (RFC 6376 3.6.1 allows it), built by hand: no checks on n or e."""
    body = _der_integer(modulus) + _der_integer(exponent)
    return base64.b64encode(b"\x30" + _der_length(len(body)) + body).decode("ascii")
