"""InMemoryResolver: the test double every verifier test leans on."""

from __future__ import annotations

import asyncio

import pytest

from mailseal.core.txtanswer import TxtAnswer, TxtStatus
from mailseal.dns.interface import KeyResolver, SyncKeyResolver
from mailseal.dns.memory import InMemoryResolver
from mailseal.errors import UsageError

NAME = "sel._domainkey.example.com"


def test_satisfies_both_protocols() -> None:
    resolver = InMemoryResolver()
    assert isinstance(resolver, KeyResolver)
    assert isinstance(resolver, SyncKeyResolver)


@pytest.mark.parametrize(
    ("spec", "records"),
    [
        ("v=DKIM1; p=abc", (b"v=DKIM1; p=abc",)),
        (b"v=DKIM1; p=\xff", (b"v=DKIM1; p=\xff",)),
        (["one", b"two"], (b"one", b"two")),
        (("only",), (b"only",)),
    ],
)
def test_record_specs_become_found_answers(
    spec: str | bytes | list[str | bytes], records: tuple[bytes, ...]
) -> None:
    answer = InMemoryResolver({NAME: spec}, ttl=42).lookup_txt_sync(NAME)
    assert answer == TxtAnswer(TxtStatus.FOUND, records, 42, False, "")


def test_empty_sequence_is_no_data() -> None:
    assert InMemoryResolver({NAME: []}).lookup_txt_sync(NAME).status is TxtStatus.NO_DATA


def test_txt_answer_is_returned_as_given() -> None:
    timeout = TxtAnswer.failure(TxtStatus.TIMEOUT, "simulated")
    assert InMemoryResolver({NAME: timeout}).lookup_txt_sync(NAME) is timeout


def test_unknown_name_is_nxdomain() -> None:
    answer = InMemoryResolver({NAME: "x"}).lookup_txt_sync("other._domainkey.example.com")
    assert answer.status is TxtStatus.NXDOMAIN
    assert answer.records == ()


def test_names_are_case_insensitive_and_trailing_dot_optional() -> None:
    resolver = InMemoryResolver({"SEL._DomainKey.Example.COM.": "x"})
    assert resolver.lookup_txt_sync(NAME).records == (b"x",)
    assert resolver.lookup_txt_sync(NAME.upper() + ".").records == (b"x",)


def test_queries_are_recorded_as_passed_sync_and_async() -> None:
    resolver = InMemoryResolver({NAME: "x"})
    resolver.lookup_txt_sync(NAME)
    answer = asyncio.run(resolver.lookup_txt("Missing.Example"))
    assert answer.status is TxtStatus.NXDOMAIN
    assert resolver.queries == [NAME, "Missing.Example"]


def test_set_and_remove_change_answers() -> None:
    resolver = InMemoryResolver()
    resolver.set(NAME, "new")
    assert resolver.lookup_txt_sync(NAME).records == (b"new",)
    resolver.remove(NAME)
    assert resolver.lookup_txt_sync(NAME).status is TxtStatus.NXDOMAIN


def test_non_text_record_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="must be str or bytes"):
        InMemoryResolver({NAME: [1]})  # type: ignore[list-item]
