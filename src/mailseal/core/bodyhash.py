"""One streaming pass over the body feeding every body hash the signatures need.

Signatures that share canonicalization, hash and l= share one hash; all those
with the same canonicalization share one canonicalizer (RFC 6376 3.7).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from mailseal.core.canonicalization import BodyCanonicalizer, Canon

BodyHashSpec = tuple[Canon, str, int | None]  # canonicalization, hash name, l= limit
_NEW_HASH = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}  # direct constructors beat hashlib.new()


class _Stream:
    """All hashes of one canonicalization, plus the canonical length so far."""

    __slots__ = ("canonicalizer", "length", "limited", "unlimited")

    def __init__(self, canon: Canon) -> None:
        self.length = 0
        self.unlimited: list[hashlib._Hash] = []
        self.limited: list[tuple[hashlib._Hash, int]] = []
        self.canonicalizer = BodyCanonicalizer(canon, self._take)

    def _take(self, data: bytes) -> None:
        start = self.length
        self.length = start + len(data)
        for digest in self.unlimited:
            digest.update(data)
        for digest, limit in self.limited:
            if start < limit:
                digest.update(data[: limit - start])


class BodyHasher:
    """Computes the body hash for each distinct (canonicalization, hash, l=) spec."""

    __slots__ = ("_hashes", "_streams")

    def __init__(self, specs: Iterable[BodyHashSpec]) -> None:
        self._streams: dict[Canon, _Stream] = {}
        self._hashes: dict[BodyHashSpec, hashlib._Hash] = {}
        for spec in specs:
            if spec in self._hashes:
                continue
            canon, hash_name, limit = spec
            stream = self._streams.get(canon)
            if stream is None:
                stream = self._streams[canon] = _Stream(canon)
            digest = _NEW_HASH[hash_name]() if hash_name in _NEW_HASH else hashlib.new(hash_name)
            self._hashes[spec] = digest
            if limit is None:
                stream.unlimited.append(digest)
            else:
                stream.limited.append((digest, limit))

    def feed(self, chunk: bytes, start: int = 0) -> None:
        """Add body bytes ``chunk[start:]`` in any chunking; CRLF may straddle chunks."""
        for stream in self._streams.values():
            stream.canonicalizer.feed(chunk, start)

    def finish(self) -> None:
        """Flush the end-of-body rules; call once, before ``digest``."""
        for stream in self._streams.values():
            stream.canonicalizer.finish()

    def digest(self, spec: BodyHashSpec) -> bytes:
        """The body hash for ``spec`` (after ``finish``)."""
        return self._hashes[spec].digest()

    def canonical_length(self, canon: Canon) -> int:
        """Bytes of canonical body seen under ``canon`` (l= is counted in these)."""
        return self._streams[canon].length
