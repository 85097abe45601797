"""A TTL cache in front of any resolver, with an injectable clock and shared in-flight lookups."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from mailseal.core.txtanswer import TxtAnswer, TxtStatus
from mailseal.dns.interface import KeyResolver, SyncKeyResolver
from mailseal.errors import UsageError

__all__ = ["CachingResolver", "name_key"]

_CACHEABLE = frozenset({TxtStatus.FOUND, TxtStatus.NXDOMAIN, TxtStatus.NO_DATA})
_NEGATIVE = frozenset({TxtStatus.NXDOMAIN, TxtStatus.NO_DATA})
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def name_key(name: str) -> str:
    """Fold a DNS name for comparison: ASCII case only (RFC 4343), trailing dot optional."""
    return name.removesuffix(".").translate(_ASCII_LOWER)


class CachingResolver:
    """Remember answers for their TTL so a burst of mail signed by one domain costs one lookup.

    Caches FOUND answers for their TTL, and NXDOMAIN / NO_DATA for the TTL the
    answer carries (the SOA-derived negative TTL, RFC 2308 §5) or
    ``negative_ttl`` when it carries none; every TTL is then clamped to
    ``[min_ttl, max_ttl]``. TIMEOUT, SERVFAIL and ERROR are never cached: they
    are temporary (RFC 6376 §6.1.2 TEMPFAIL) and the next message should try
    again. Answers served from the cache carry the remaining TTL.

    Concurrent async lookups of one name share a single query to ``inner``.
    Wraps resolvers with either or both methods; calling a method the inner
    resolver lacks raises :class:`UsageError`.
    """

    def __init__(
        self,
        inner: KeyResolver | SyncKeyResolver,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10000,
        min_ttl: int = 0,
        max_ttl: int = 86400,
        negative_ttl: int = 60,
    ) -> None:
        """Wrap ``inner``; ``clock`` returns seconds on a monotonic scale (tests pass a fake)."""
        if not isinstance(inner, KeyResolver | SyncKeyResolver):
            raise UsageError(f"{inner!r} has neither lookup_txt nor lookup_txt_sync")
        if max_entries < 1:
            raise UsageError(f"max_entries must be at least 1, not {max_entries}")
        if not 0 <= min_ttl <= max_ttl:
            raise UsageError(f"need 0 <= min_ttl <= max_ttl, got {min_ttl} and {max_ttl}")
        if negative_ttl < 0:
            raise UsageError(f"negative_ttl must not be negative, not {negative_ttl}")
        self.inner = inner
        # Checked once: isinstance() against a runtime Protocol is too slow for every lookup.
        self._async_inner = inner if isinstance(inner, KeyResolver) else None
        self._sync_inner = inner if isinstance(inner, SyncKeyResolver) else None
        self._clock = clock
        self._max_entries = max_entries
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._negative_ttl = negative_ttl
        self._entries: OrderedDict[str, tuple[float, TxtAnswer]] = OrderedDict()
        self._lock = threading.Lock()  # the sync method may be called from several threads
        self._inflight: dict[str, asyncio.Task[TxtAnswer]] = {}

    def __len__(self) -> int:
        """The number of stored answers, expired ones included until next touched."""
        return len(self._entries)

    def clear(self) -> None:
        """Forget every stored answer (e.g. after publishing a new key)."""
        with self._lock:
            self._entries.clear()

    async def lookup_txt(self, name: str) -> TxtAnswer:
        """Answer from the cache, from a lookup already under way, or by asking ``inner``."""
        inner = self._async_inner
        if inner is None:
            raise UsageError(f"{self.inner!r} has no async lookup_txt; use lookup_txt_sync")
        key = name_key(name)
        cached = self._get(key)
        if cached is not None:
            return cached
        loop = asyncio.get_running_loop()
        task = self._inflight.get(key)
        if task is None or task.get_loop() is not loop:
            task = loop.create_task(self._fetch(inner, key, name))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget_inflight(key, done))
        # shield: one cancelled caller must not cancel the lookup the others wait for.
        return await asyncio.shield(task)

    def cached(self, name: str) -> TxtAnswer | None:
        """The stored answer for ``name`` if it is still fresh, else None; never does I/O.

        Lets an event-loop caller use a cached answer at once instead of
        scheduling a task for it (the milter does this for every message).
        """
        return self._get(name_key(name))

    def lookup_txt_sync(self, name: str) -> TxtAnswer:
        """Answer from the cache or by asking ``inner``, blocking."""
        inner = self._sync_inner
        if inner is None:
            raise UsageError(f"{self.inner!r} has no lookup_txt_sync; use the async lookup_txt")
        key = name_key(name)
        cached = self._get(key)
        if cached is not None:
            return cached
        answer = inner.lookup_txt_sync(name)
        self._put(key, answer)
        return answer

    async def _fetch(self, inner: KeyResolver, key: str, name: str) -> TxtAnswer:
        answer = await inner.lookup_txt(name)
        self._put(key, answer)
        return answer

    def _forget_inflight(self, key: str, done: asyncio.Task[TxtAnswer]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]

    def _get(self, key: str) -> TxtAnswer | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, answer = entry
            if now >= expires:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
        return dataclasses.replace(answer, ttl=math.ceil(expires - now))

    def _put(self, key: str, answer: TxtAnswer) -> None:
        if answer.status not in _CACHEABLE:
            return
        ttl = answer.ttl
        if answer.status in _NEGATIVE and ttl <= 0:
            ttl = self._negative_ttl
        ttl = min(max(ttl, self._min_ttl), self._max_ttl)
        if ttl <= 0:
            return
        expires = self._clock() + ttl
        with self._lock:
            self._entries[key] = (expires, answer)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)  # least recently used
