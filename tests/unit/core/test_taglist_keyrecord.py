"""Tag lists and key records: the table of cases feeds parse and format."""

from __future__ import annotations

import pytest

from mailseal.core.algorithms import KeyType
from mailseal.core.keyrecord import KeyRecord, split_txt, zone_file_record
from mailseal.core.problems import SyntaxProblem
from mailseal.core.results import Reason
from mailseal.core.taglist import format_tag_list, parse_tag_list

CASES = [
    ("a=1", {"a": "1"}),
    ("a=1;", {"a": "1"}),
    (" a = 1 ; b=two words ;", {"a": "1", "b": "two words"}),
    ("a=\r\n\t1;b=", {"a": "1", "b": ""}),
    ("x_1=y", {"x_1": "y"}),
]


@pytest.mark.parametrize(("text", "tags"), CASES)
def test_parse(text: str, tags: dict[str, str]) -> None:
    assert parse_tag_list(text) == tags


@pytest.mark.parametrize(("_text", "tags"), CASES)
def test_format_round_trips(_text: str, tags: dict[str, str]) -> None:
    assert parse_tag_list(format_tag_list(list(tags.items()))) == tags


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a=1; a=2", Reason.SIG_DUPLICATE_TAG),
        ("a=1;;b=2", Reason.SIG_SYNTAX),
        ("1a=1", Reason.SIG_SYNTAX),
        ("a", Reason.SIG_SYNTAX),
        ("a=\x01", Reason.SIG_SYNTAX),
        ("a=x\ny", Reason.SIG_SYNTAX),
    ],
)
def test_parse_errors(text: str, reason: Reason) -> None:
    with pytest.raises(SyntaxProblem) as info:
        parse_tag_list(text)
    assert info.value.reason is reason


def test_key_record_fields() -> None:
    record = KeyRecord.from_txt(b"v=DKIM1; k=ed25519; h=sha256; s=email; t=y:s; n=hi; p=AAAA; x=unknown")
    assert record.key_type is KeyType.ED25519
    assert record.hash_algorithms == ("sha256",)
    assert record.service_types == ("email",)
    assert record.testing and record.strict_subdomains
    assert record.notes == "hi"


def test_key_record_defaults() -> None:
    record = KeyRecord.from_txt(b"p=AAAA")
    assert (
        record.key_type is KeyType.RSA and record.hash_algorithms is None and record.service_types == ("*",)
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"v=DKIM2; p=AAAA", Reason.KEY_VERSION),
        (b"k=rsa; v=DKIM1; p=AAAA", Reason.KEY_SYNTAX),  # v= must come first
        (b"v=DKIM1; k=rsa", Reason.KEY_SYNTAX),  # no p=
        (b"v=DKIM1; k=dsa; p=AAAA", Reason.KEY_TYPE_UNKNOWN),
        (b"p=\xff", Reason.KEY_SYNTAX),
        (b"p=A; p=B", Reason.KEY_SYNTAX),
    ],
)
def test_key_record_errors(data: bytes, reason: Reason) -> None:
    with pytest.raises(SyntaxProblem) as info:
        KeyRecord.from_txt(data)
    assert info.value.reason is reason


def test_txt_split_and_zone_line() -> None:
    text = "v=DKIM1; k=rsa; p=" + "A" * 392
    strings = split_txt(text)
    assert [len(s) for s in strings] == [255, len(text) - 255]
    assert "".join(strings) == text
    line = zone_file_record("s._domainkey.example.com.", strings)
    assert line.startswith("s._domainkey.example.com. IN TXT (") and line.count('"') == 4
