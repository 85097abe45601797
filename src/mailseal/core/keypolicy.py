"""Which keys we accept: RSA size floor and cap, exponent cap, key-record restrictions, verify cost.

One home for these rules: the verifier (``core/verifier.py``), key loading
and generation (``core/keymaterial.py``) and ``keys check`` (``keys/check.py``)
all ask this module, so a floor or a cap cannot drift between them.

Sizes, and why:

* ``MIN_RSA_BITS`` (1024): RFC 8301 section 3.2 -- verifiers MUST NOT
  consider keys under 1024 bits valid. ``WEAK_RSA_BITS`` (2048) is what it
  recommends signers use; smaller keys pass but are reported as weak.
* ``DEFAULT_MAX_RSA_BITS`` (8192): RFC 8301 asks verifiers to handle up to
  4096 bits; we accept twice that, because mailseal itself generates keys up
  to 8192 bits and a domain may publish one. A verification with an 8192-bit
  key and e=65537 costs about 16 times one with 2048 bits (well under a
  millisecond), while a 16,384-bit key costs 64 times and bigger ones are
  refused by OpenSSL anyway. Configurable up to ``RSA_BITS_LIMIT`` (16384,
  OpenSSL's own ceiling), so a key OpenSSL would refuse is always refused
  here first, as ``key-too-large``, never reported as a signature mismatch.
* ``MAX_RSA_EXPONENT_BITS`` (32): every deployed key uses e=65537 (17
  bits) or e=3; the cost of a verification grows with the exponent's length,
  and a 3,070-bit exponent costs ~500 times as much. 32 bits leaves every
  exponent a key generator uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from mailseal.core.algorithms import Algorithm, KeyType, PublicKey, key_bits, key_type_of, rsa_exponent
from mailseal.core.identity import domain_of_auid
from mailseal.core.problems import SyntaxProblem
from mailseal.core.results import Reason

if TYPE_CHECKING:  # keyrecord imports keymaterial, which imports this module
    from mailseal.core.keyrecord import KeyRecord

MIN_RSA_BITS: Final = 1024
WEAK_RSA_BITS: Final = 2048
DEFAULT_MAX_RSA_BITS: Final = 8192
RSA_BITS_LIMIT: Final = 16384
MAX_RSA_EXPONENT_BITS: Final = 32

REFERENCE_RSA_BITS: Final = 2048
"""A verification with an RSA-2048 key and e=65537 is one unit of work."""
_REFERENCE_EXPONENT_OPS: Final = 18  # 17 squarings and 1 multiplication for e=65537
ED25519_VERIFY_COST: Final = 3
"""An Ed25519 verification, in RSA-2048 units (measured: about 2-3 times one RSA-2048 verify)."""


def max_key_der_bytes(max_rsa_bits: int) -> int:
    """Longest p= (decoded) worth parsing: a modulus and an exponent at the caps, plus DER framing."""
    return (max_rsa_bits + MAX_RSA_EXPONENT_BITS) // 8 + 64


@dataclass(frozen=True, slots=True)
class KeySize:
    """What the size rules read from a public key: read once per key, not per message.

    ``public_numbers()`` builds the modulus as a Python int and the key
    classes are ABCs (each isinstance check walks the registry): reading
    these per signature cost more than hashing a 2 KB message.
    """

    rsa: bool
    bits: int
    exponent: int  # 0 for Ed25519


def key_size(key: PublicKey) -> KeySize:
    """The type, size and (RSA) public exponent of ``key``."""
    if key_type_of(key) is not KeyType.RSA:
        return KeySize(rsa=False, bits=key_bits(key), exponent=0)
    return KeySize(rsa=True, bits=key_bits(key), exponent=rsa_exponent(key))


def key_size_problem(key: PublicKey, *, min_rsa_bits: int, max_rsa_bits: int) -> SyntaxProblem | None:
    """Is this RSA key inside the floor and the caps? Ed25519 keys always are."""
    return size_problem(key_size(key), min_rsa_bits=min_rsa_bits, max_rsa_bits=max_rsa_bits)


def size_problem(size: KeySize, *, min_rsa_bits: int, max_rsa_bits: int) -> SyntaxProblem | None:
    """:func:`key_size_problem` for a key whose :class:`KeySize` was read already."""
    if not size.rsa:
        return None
    bits = size.bits
    if bits < min_rsa_bits:
        return SyntaxProblem(
            Reason.KEY_TOO_SMALL,
            f"the RSA key has {bits} bits; at least {min_rsa_bits} are required (RFC 8301)",
        )
    if bits > min(max_rsa_bits, RSA_BITS_LIMIT):
        return SyntaxProblem(
            Reason.KEY_TOO_LARGE,
            f"the RSA key has {bits} bits; at most {min(max_rsa_bits, RSA_BITS_LIMIT)} are accepted",
        )
    exponent = size.exponent
    if exponent.bit_length() > MAX_RSA_EXPONENT_BITS:
        return SyntaxProblem(
            Reason.KEY_TOO_LARGE,
            f"the RSA public exponent has {exponent.bit_length()} bits; at most {MAX_RSA_EXPONENT_BITS} "
            "are accepted",
        )
    if exponent < 3 or exponent % 2 == 0:
        return SyntaxProblem(
            Reason.KEY_INVALID, f"the RSA public exponent {exponent} is not an odd number >= 3"
        )
    return None


def verify_cost(key: PublicKey) -> int:
    """Units of work (one RSA-2048, e=65537 verification each) to check one signature with ``key``."""
    return size_cost(key_size(key))


def size_cost(size: KeySize) -> int:
    """:func:`verify_cost` for a key whose :class:`KeySize` was read already.

    RSA costs grow with the square of the modulus and linearly with the
    exponent's length (square-and-multiply), so the cost of a key inside the
    caps is bounded (at most 16 * 3.6 = 58 units at 8192 bits and 32 bits).
    """
    if not size.rsa:
        return ED25519_VERIFY_COST
    bits, exponent = size.bits, size.exponent
    ops = exponent.bit_length() + exponent.bit_count() - 1
    scale = (bits * bits) / (REFERENCE_RSA_BITS * REFERENCE_RSA_BITS)
    return max(1, round(scale * ops / _REFERENCE_EXPONENT_OPS))


def allows_email(record: KeyRecord) -> bool:
    """s= names email or ``*`` (RFC 6376 3.6.1)."""
    return "*" in record.service_types or "email" in record.service_types


def allows_hash(record: KeyRecord, hash_name: str) -> bool:
    """h= is absent or names ``hash_name`` (RFC 6376 3.6.1)."""
    return record.hash_algorithms is None or hash_name in record.hash_algorithms


def usage_problem(
    record: KeyRecord, algorithm: Algorithm, *, domain: str, auid: str, where: str
) -> SyntaxProblem | None:
    """RFC 6376 6.1.2 step 6 onwards: does this key record allow this signature?"""
    if record.revoked:
        return SyntaxProblem(Reason.KEY_REVOKED, f"the key at {where} has been revoked (empty p=)")
    if record.key_type is not algorithm.key_type:
        return SyntaxProblem(
            Reason.KEY_TYPE_MISMATCH,
            f"the key at {where} is {record.key_type} but the signature uses {algorithm.name}",
        )
    if not allows_hash(record, algorithm.hash_name):
        hashes = ":".join(record.hash_algorithms or ())
        return SyntaxProblem(Reason.KEY_HASH_NOT_ALLOWED, f"the key at {where} allows only h={hashes}")
    if not allows_email(record):
        return SyntaxProblem(Reason.KEY_SERVICE_NOT_EMAIL, f"the key at {where} is not for email (s=)")
    if record.strict_subdomains and domain_of_auid(auid).lower() != domain:
        return SyntaxProblem(
            Reason.KEY_STRICT_SUBDOMAIN,
            f"the key at {where} has t=s, but i={auid} is in a subdomain of d={domain}",
        )
    return None
