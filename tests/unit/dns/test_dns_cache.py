"""CachingResolver: TTLs, negative caching, never caching failures, one query per burst."""

from __future__ import annotations

import asyncio

import pytest

from mailseal.core.txtanswer import TxtAnswer, TxtStatus
from mailseal.dns.cache import CachingResolver, name_key
from mailseal.dns.memory import InMemoryResolver
from mailseal.errors import UsageError

NAME = "sel._domainkey.example.com"


class FakeClock:
    """Seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_name_key_folds_ascii_case_and_trailing_dot_only() -> None:
    assert name_key("SEL._DomainKey.Example.COM.") == NAME
    assert name_key("Ä.example") == "Ä.example"  # RFC 4343: only ASCII letters fold


def test_found_answer_is_cached_for_its_ttl(clock: FakeClock) -> None:
    inner = InMemoryResolver({NAME: "v=DKIM1; p=x"}, ttl=300)
    cache = CachingResolver(inner, clock=clock)
    first = cache.lookup_txt_sync(NAME)
    clock.now += 100
    second = cache.lookup_txt_sync(NAME.upper())
    assert inner.queries == [NAME]
    assert second.records == first.records == (b"v=DKIM1; p=x",)
    assert second.ttl == 200  # the remaining TTL, like any cache
    clock.now += 200
    cache.lookup_txt_sync(NAME)
    assert inner.queries == [NAME, NAME]


def test_negative_answers_use_their_ttl_or_negative_ttl(clock: FakeClock) -> None:
    inner = InMemoryResolver(
        {"soa.example": TxtAnswer.failure(TxtStatus.NO_DATA, ttl=30)}  # SOA-derived, RFC 2308
    )
    cache = CachingResolver(inner, clock=clock, negative_ttl=60)
    cache.lookup_txt_sync("soa.example")
    cache.lookup_txt_sync("missing.example")  # InMemoryResolver's NXDOMAIN carries no TTL
    clock.now += 45
    cache.lookup_txt_sync("soa.example")
    cache.lookup_txt_sync("missing.example")
    assert inner.queries == ["soa.example", "missing.example", "soa.example"]
    clock.now += 15
    assert cache.lookup_txt_sync("missing.example").status is TxtStatus.NXDOMAIN
    assert inner.queries.count("missing.example") == 2


@pytest.mark.parametrize("status", [TxtStatus.TIMEOUT, TxtStatus.SERVFAIL, TxtStatus.ERROR])
def test_failures_are_never_cached(clock: FakeClock, status: TxtStatus) -> None:
    inner = InMemoryResolver({NAME: TxtAnswer.failure(status, "boom", ttl=300)})
    cache = CachingResolver(inner, clock=clock, min_ttl=60)
    assert cache.lookup_txt_sync(NAME).status is status
    assert cache.lookup_txt_sync(NAME).status is status
    assert len(inner.queries) == 2
    assert len(cache) == 0


def test_ttl_is_clamped_to_min_and_max(clock: FakeClock) -> None:
    inner = InMemoryResolver(
        {
            "short.example": TxtAnswer.found((b"a",), ttl=1),
            "long.example": TxtAnswer.found((b"b",), ttl=10**6),
        }
    )
    cache = CachingResolver(inner, clock=clock, min_ttl=10, max_ttl=100)
    cache.lookup_txt_sync("short.example")
    cache.lookup_txt_sync("long.example")
    clock.now += 9
    assert cache.lookup_txt_sync("short.example").ttl == 1
    clock.now += 90
    assert cache.lookup_txt_sync("long.example").ttl == 1
    assert inner.queries == ["short.example", "long.example"]
    clock.now += 1
    cache.lookup_txt_sync("long.example")
    cache.lookup_txt_sync("short.example")
    assert inner.queries == ["short.example", "long.example", "long.example", "short.example"]


def test_zero_ttl_is_not_cached(clock: FakeClock) -> None:
    inner = InMemoryResolver({NAME: TxtAnswer.found((b"a",), ttl=0)})
    cache = CachingResolver(inner, clock=clock)
    cache.lookup_txt_sync(NAME)
    cache.lookup_txt_sync(NAME)
    assert len(inner.queries) == 2


def test_least_recently_used_entry_is_evicted(clock: FakeClock) -> None:
    inner = InMemoryResolver({"a.example": "a", "b.example": "b", "c.example": "c"})
    cache = CachingResolver(inner, clock=clock, max_entries=2)
    cache.lookup_txt_sync("a.example")
    cache.lookup_txt_sync("b.example")
    cache.lookup_txt_sync("a.example")  # a is now more recent than b
    cache.lookup_txt_sync("c.example")  # evicts b
    assert len(cache) == 2
    cache.lookup_txt_sync("a.example")
    cache.lookup_txt_sync("b.example")
    assert inner.queries == ["a.example", "b.example", "c.example", "b.example"]


def test_clear_forgets_everything(clock: FakeClock) -> None:
    inner = InMemoryResolver({NAME: "old"})
    cache = CachingResolver(inner, clock=clock)
    cache.lookup_txt_sync(NAME)
    inner.set(NAME, "new")
    assert cache.lookup_txt_sync(NAME).records == (b"old",)
    cache.clear()
    assert cache.lookup_txt_sync(NAME).records == (b"new",)


def test_async_lookups_are_cached(clock: FakeClock) -> None:
    inner = InMemoryResolver({NAME: "x"})
    cache = CachingResolver(inner, clock=clock)

    async def twice() -> tuple[TxtAnswer, TxtAnswer]:
        return await cache.lookup_txt(NAME), await cache.lookup_txt(NAME + ".")

    first, second = asyncio.run(twice())
    assert first.records == second.records == (b"x",)
    assert inner.queries == [NAME]


class GatedResolver:
    """An async resolver whose lookups wait until the test opens the gate."""

    def __init__(self) -> None:
        self.queries: list[str] = []
        self.gate = asyncio.Event()

    async def lookup_txt(self, name: str) -> TxtAnswer:
        self.queries.append(name)
        await self.gate.wait()
        return TxtAnswer.found((b"v=DKIM1; p=x",), ttl=300)


def test_concurrent_lookups_share_one_query(clock: FakeClock) -> None:
    async def scenario() -> tuple[list[TxtAnswer], list[str]]:
        inner = GatedResolver()
        cache = CachingResolver(inner, clock=clock)
        lookups = [asyncio.ensure_future(cache.lookup_txt(n)) for n in (NAME, NAME.upper(), NAME + ".")]
        await asyncio.sleep(0)
        inner.gate.set()
        return list(await asyncio.gather(*lookups)), inner.queries

    answers, queries = asyncio.run(scenario())
    assert queries == [NAME]
    assert {a.records for a in answers} == {(b"v=DKIM1; p=x",)}


def test_cancelling_one_waiter_does_not_cancel_the_shared_query(clock: FakeClock) -> None:
    async def scenario() -> tuple[TxtAnswer, list[str], bool]:
        inner = GatedResolver()
        cache = CachingResolver(inner, clock=clock)
        impatient = asyncio.ensure_future(cache.lookup_txt(NAME))
        patient = asyncio.ensure_future(cache.lookup_txt(NAME))
        await asyncio.sleep(0)
        impatient.cancel()
        await asyncio.sleep(0)
        inner.gate.set()
        return await patient, inner.queries, impatient.cancelled()

    answer, queries, cancelled = asyncio.run(scenario())
    assert cancelled
    assert answer.status is TxtStatus.FOUND
    assert queries == [NAME]


def test_cache_is_usable_from_successive_event_loops(clock: FakeClock) -> None:
    inner = InMemoryResolver({NAME: "x"})
    cache = CachingResolver(inner, clock=clock)
    assert asyncio.run(cache.lookup_txt(NAME)).records == (b"x",)
    clock.now += 10**6
    assert asyncio.run(cache.lookup_txt(NAME)).records == (b"x",)
    assert len(inner.queries) == 2


class SyncOnly:
    def lookup_txt_sync(self, name: str) -> TxtAnswer:
        return TxtAnswer.found((b"x",))


class AsyncOnly:
    async def lookup_txt(self, name: str) -> TxtAnswer:
        return TxtAnswer.found((b"x",))


def test_missing_inner_method_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no async lookup_txt"):
        asyncio.run(CachingResolver(SyncOnly()).lookup_txt(NAME))
    with pytest.raises(UsageError, match="no lookup_txt_sync"):
        CachingResolver(AsyncOnly()).lookup_txt_sync(NAME)
    assert CachingResolver(SyncOnly()).lookup_txt_sync(NAME).records == (b"x",)
    assert asyncio.run(CachingResolver(AsyncOnly()).lookup_txt(NAME)).records == (b"x",)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_entries": 0}, {"min_ttl": -1}, {"min_ttl": 10, "max_ttl": 5}, {"negative_ttl": -1}],
)
def test_bad_settings_are_usage_errors(kwargs: dict[str, int]) -> None:
    with pytest.raises(UsageError):
        CachingResolver(InMemoryResolver(), **kwargs)  # type: ignore[arg-type]


def test_inner_without_lookup_methods_is_rejected() -> None:
    with pytest.raises(UsageError, match="neither"):
        CachingResolver(object())  # type: ignore[arg-type]
