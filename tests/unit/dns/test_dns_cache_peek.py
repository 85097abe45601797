"""CachingResolver.cached(): the stored answer without I/O, for callers on an event loop."""

from __future__ import annotations

import asyncio

from mailseal.core.txtanswer import TxtAnswer, TxtStatus
from mailseal.dns.cache import CachingResolver
from mailseal.dns.memory import InMemoryResolver

NAME = "sel._domainkey.example.com"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cached_is_none_until_a_lookup_stored_the_answer_and_never_asks() -> None:
    clock = Clock()
    inner = InMemoryResolver({NAME: "v=DKIM1; p=x"}, ttl=300)
    cache = CachingResolver(inner, clock=clock)
    assert cache.cached(NAME) is None
    assert inner.queries == []  # a peek is not a lookup
    asyncio.run(cache.lookup_txt(NAME))
    clock.now += 100
    answer = cache.cached(NAME.upper() + ".")
    assert answer is not None
    assert answer.records == (b"v=DKIM1; p=x",)
    assert answer.ttl == 200
    clock.now += 200
    assert cache.cached(NAME) is None  # expired: the caller must look it up again
    assert inner.queries == [NAME]


def test_cached_never_returns_a_failure_that_was_not_stored() -> None:
    inner = InMemoryResolver({NAME: TxtAnswer.failure(TxtStatus.SERVFAIL, "boom", ttl=300)})
    cache = CachingResolver(inner, clock=Clock())
    assert asyncio.run(cache.lookup_txt(NAME)).status is TxtStatus.SERVFAIL
    assert cache.cached(NAME) is None
