"""The DKIM key record (RFC 6376 section 3.6.1) as a value type.

``KeyRecord.from_txt()`` parses the TXT data (strings already joined) and
raises ``SyntaxProblem`` with the reason; ``to_txt_strings()`` splits a record
into the <=255-byte character-strings DNS requires (RFC 1035 3.3.14).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from functools import lru_cache

from mailseal.core.algorithms import KeyType, PublicKey
from mailseal.core.keymaterial import PublicKeyError, parse_public_key_sized
from mailseal.core.keypolicy import KeySize
from mailseal.core.problems import SyntaxProblem
from mailseal.core.results import Reason
from mailseal.core.taglist import parse_tag_list, strip_fws

TXT_STRING_MAX = 255


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A parsed key record: the key plus the restrictions the domain put on it."""

    key_type: KeyType
    public_key_b64: str
    hash_algorithms: tuple[str, ...] | None  # h=; None = any
    service_types: tuple[str, ...]  # s=
    flags: tuple[str, ...]  # t=
    notes: str | None = None

    @property
    def revoked(self) -> bool:
        """An empty p= means the key was revoked (3.6.1)."""
        return not self.public_key_b64

    @property
    def testing(self) -> bool:
        """t=y: the domain is testing DKIM."""
        return "y" in self.flags

    @property
    def strict_subdomains(self) -> bool:
        """t=s: the i= domain must equal d=, not be a subdomain of it."""
        return "s" in self.flags

    @classmethod
    def from_txt(cls, data: bytes) -> KeyRecord:
        """Parse one TXT record; unknown tags are ignored as 3.6.1 requires."""
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise SyntaxProblem(Reason.KEY_SYNTAX, "the key record contains non-ASCII bytes") from None
        tags = parse_tag_list(text, reason_prefix="key")
        if "v" in tags:
            if tags["v"] != "DKIM1":
                raise SyntaxProblem(Reason.KEY_VERSION, f"key record has v={tags['v']}, expected DKIM1")
            if next(iter(tags)) != "v":
                raise SyntaxProblem(Reason.KEY_SYNTAX, "v= must be the first tag of the key record")
        if "p" not in tags:
            raise SyntaxProblem(Reason.KEY_SYNTAX, "key record has no p= tag")
        try:
            key_type = KeyType(tags.get("k", "rsa").lower())
        except ValueError:
            raise SyntaxProblem(Reason.KEY_TYPE_UNKNOWN, f"unknown key type k={tags['k']}") from None
        p = strip_fws(tags["p"])
        hashes = None
        if "h" in tags:
            hashes = tuple(h.strip(" \t\r\n").lower() for h in tags["h"].split(":"))
        services = tuple(s.strip(" \t\r\n").lower() for s in tags.get("s", "*").split(":"))
        flags = tuple(f.strip(" \t\r\n").lower() for f in tags.get("t", "").split(":") if f.strip())
        return cls(key_type, p, hashes, services, flags, tags.get("n"))

    def public_key(self) -> PublicKey:
        """Decode p= into a key object; raises ``SyntaxProblem`` if it is unusable."""
        return self.public_key_sized()[0]

    def public_key_sized(self) -> tuple[PublicKey, KeySize]:
        """:meth:`public_key` and the numbers the size rules read; memoized by p= for key-sized values."""
        if len(self.public_key_b64) <= MAX_CACHED_P:
            return _decode_public_key_cached(self.key_type, self.public_key_b64)
        return _decode_public_key(self.key_type, self.public_key_b64)

    @classmethod
    def for_key(cls, key_type: KeyType, public_key_b64: str, *, flags: tuple[str, ...] = ()) -> KeyRecord:
        """A record publishing ``public_key_b64`` (what ``keygen`` prints)."""
        return cls(key_type, public_key_b64, None, ("*",), flags)

    def to_text(self) -> str:
        """The record as one string: ``v=DKIM1; k=...; p=...``."""
        parts = ["v=DKIM1", f"k={self.key_type}"]
        if self.hash_algorithms:
            parts.append("h=" + ":".join(self.hash_algorithms))
        if self.service_types != ("*",):
            parts.append("s=" + ":".join(self.service_types))
        if self.flags:
            parts.append("t=" + ":".join(self.flags))
        parts.append(f"p={self.public_key_b64}")
        return "; ".join(parts)

    def to_txt_strings(self) -> tuple[str, ...]:
        """The record split into DNS character-strings of at most 255 bytes."""
        return split_txt(self.to_text())


MAX_CACHED_P = 2048  # base64 characters; an RSA-8192 key's p= is about 1.5 KB


@lru_cache(maxsize=1024)
def _decode_public_key_cached(key_type: KeyType, p: str) -> tuple[PublicKey, KeySize]:
    """Memoized: the same few keys sign most mail, and decoding costs more than the rest of a key check."""
    return _decode_public_key(key_type, p)


def _decode_public_key(key_type: KeyType, p: str) -> tuple[PublicKey, KeySize]:
    try:
        der = base64.b64decode(p, validate=True)
    except binascii.Error:
        raise SyntaxProblem(Reason.KEY_BAD_BASE64, "p= is not valid base64") from None
    try:
        return parse_public_key_sized(key_type, der)
    except PublicKeyError as exc:
        raise SyntaxProblem(Reason.KEY_INVALID, str(exc)) from None


MAX_CACHED_RECORD = 4096  # an RSA-8192 record is about 1.5 KB; larger TXT data is not a key


def parse_key_record(data: bytes) -> KeyRecord | SyntaxProblem:
    """:meth:`KeyRecord.from_txt` that returns the problem instead of raising.

    Memoized for record-sized data: the same few records answer most lookups,
    parsing is pure, and nobody can fill the cache with huge TXT answers.
    """
    if len(data) <= MAX_CACHED_RECORD:
        return _parse_key_record_cached(data)
    return _parse_key_record(data)


@lru_cache(maxsize=4096)
def _parse_key_record_cached(data: bytes) -> KeyRecord | SyntaxProblem:
    return _parse_key_record(data)


def _parse_key_record(data: bytes) -> KeyRecord | SyntaxProblem:
    try:
        return KeyRecord.from_txt(data)
    except SyntaxProblem as problem:
        return problem


def split_txt(text: str) -> tuple[str, ...]:
    """Split a TXT value into <=255-byte strings (it is ASCII, so chars = bytes)."""
    return tuple(text[i : i + TXT_STRING_MAX] for i in range(0, len(text), TXT_STRING_MAX)) or ("",)


def zone_file_record(name: str, strings: tuple[str, ...], *, ttl: int | None = None) -> str:
    """A zone-file line (multi-string in parentheses) for ``name`` (relative or absolute)."""
    ttl_text = f"{ttl} " if ttl is not None else ""
    if len(strings) == 1:
        return f'{name} {ttl_text}IN TXT "{strings[0]}"'
    body = "\n".join(f'    "{s}"' for s in strings)
    return f"{name} {ttl_text}IN TXT (\n{body} )"
