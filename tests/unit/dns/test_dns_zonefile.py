"""ZoneFileResolver: real-world zone files, origin discovery, errors that name the line."""

from __future__ import annotations

import asyncio
import base64
import random
from pathlib import Path

import dns.exception
import pytest

from mailseal.core.txtanswer import TxtStatus
from mailseal.dns.zonefile import ZoneFileResolver
from mailseal.errors import UsageError

KEY = "sel._domainkey.example.com"

WITH_ORIGIN = """\
; a zone as BIND or Knot keep it
$ORIGIN example.com.
$TTL 1h
@   IN SOA ns1 hostmaster ( 2024010101 ; serial
            3600 600 86400
            120 )          ; negative TTL (RFC 2308)
    IN NS  ns1
ns1 IN A   192.0.2.53
sel._domainkey 300 IN TXT ( "v=DKIM1; k=rsa; "  ; first part
                            "p=MIIBIjAN" )      ; second part
www IN A   192.0.2.80
"""

ABSOLUTE_SOA_NO_ORIGIN = """\
$TTL 600
example.com. IN SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 300
example.com. IN NS ns1.example.com.
sel._domainkey IN TXT "v=DKIM1; p=relative"
abs._domainkey.example.com. IN TXT "v=DKIM1; p=absolute"
"""

RELATIVE_NO_ORIGIN = """\
$TTL 300
@ IN SOA ns1 hostmaster 1 3600 600 86400 60
@ IN NS ns1
sel._domainkey IN TXT "v=DKIM1; p=relative"
"""


def write(tmp_path: Path, text: str, name: str = "example.com.zone") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def rsa2048_sized_record() -> bytes:
    """A record the size of an RSA-2048 DKIM key: 410 bytes, so two strings (255 + 155)."""
    spki = random.Random(2048).randbytes(294)  # DER SubjectPublicKeyInfo of RSA-2048
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(spki)


def test_zone_with_origin_joins_multi_string_txt(tmp_path: Path) -> None:
    resolver = ZoneFileResolver(write(tmp_path, WITH_ORIGIN))
    answer = resolver.lookup_txt_sync(KEY)
    assert resolver.origin == "example.com"
    assert answer.status is TxtStatus.FOUND
    assert answer.records == (b"v=DKIM1; k=rsa; p=MIIBIjAN",)
    assert answer.ttl == 300
    assert answer.authenticated is False


def test_negative_answers_carry_the_soa_negative_ttl(tmp_path: Path) -> None:
    resolver = ZoneFileResolver(write(tmp_path, WITH_ORIGIN))
    missing = resolver.lookup_txt_sync("nope._domainkey.example.com")
    no_txt = resolver.lookup_txt_sync("www.example.com")
    assert (missing.status, missing.ttl) == (TxtStatus.NXDOMAIN, 120)
    assert (no_txt.status, no_txt.ttl) == (TxtStatus.NO_DATA, 120)


def test_empty_non_terminal_is_no_data(tmp_path: Path) -> None:
    resolver = ZoneFileResolver(write(tmp_path, WITH_ORIGIN))
    assert resolver.lookup_txt_sync("_domainkey.example.com").status is TxtStatus.NO_DATA


def test_names_outside_the_zone_are_nxdomain(tmp_path: Path) -> None:
    resolver = ZoneFileResolver(write(tmp_path, WITH_ORIGIN))
    answer = resolver.lookup_txt_sync("sel._domainkey.example.org")
    assert answer.status is TxtStatus.NXDOMAIN
    assert "outside zone example.com" in answer.detail


def test_lookups_are_case_insensitive_and_accept_a_trailing_dot(tmp_path: Path) -> None:
    resolver = ZoneFileResolver(write(tmp_path, WITH_ORIGIN))
    assert resolver.lookup_txt_sync("SEL._DomainKey.EXAMPLE.com.").status is TxtStatus.FOUND


def test_async_lookup_matches_sync(tmp_path: Path) -> None:
    resolver = ZoneFileResolver(write(tmp_path, WITH_ORIGIN))
    assert asyncio.run(resolver.lookup_txt(KEY)) == resolver.lookup_txt_sync(KEY)


def test_origin_comes_from_an_absolute_soa_owner(tmp_path: Path) -> None:
    resolver = ZoneFileResolver(write(tmp_path, ABSOLUTE_SOA_NO_ORIGIN))
    assert resolver.origin == "example.com"
    assert resolver.lookup_txt_sync(KEY).records == (b"v=DKIM1; p=relative",)
    assert resolver.lookup_txt_sync("abs._domainkey.example.com").records == (b"v=DKIM1; p=absolute",)
    assert resolver.lookup_txt_sync("nope.example.com").ttl == 300


def test_relative_soa_without_origin_asks_for_one(tmp_path: Path) -> None:
    path = write(tmp_path, RELATIVE_NO_ORIGIN)
    with pytest.raises(UsageError, match=r"origin=.*--zone-origin") as caught:
        ZoneFileResolver(path)
    assert str(path) in str(caught.value)


def test_relative_names_with_origin_argument(tmp_path: Path) -> None:
    resolver = ZoneFileResolver(write(tmp_path, RELATIVE_NO_ORIGIN), origin="Example.COM.")
    assert resolver.origin == "example.com"
    assert resolver.lookup_txt_sync(KEY).records == (b"v=DKIM1; p=relative",)
    assert resolver.lookup_txt_sync("sel._domainkey").status is TxtStatus.NXDOMAIN  # names are absolute


def test_origin_argument_ignores_records_outside_the_zone(tmp_path: Path) -> None:
    text = RELATIVE_NO_ORIGIN + 'sel._domainkey.example.org. IN TXT "elsewhere"\n'
    resolver = ZoneFileResolver(write(tmp_path, text), origin="example.com")
    assert resolver.lookup_txt_sync("sel._domainkey.example.org").status is TxtStatus.NXDOMAIN


def test_file_without_soa_holds_plain_records(tmp_path: Path) -> None:
    text = (
        "; drafted before publishing\n"
        'sel._domainkey.example.com. IN TXT "v=DKIM1; p=draft"\n'
        'sel._domainkey.example.net. 120 IN TXT "v=DKIM1; p=other"\n'
    )
    resolver = ZoneFileResolver(write(tmp_path, text, "draft.txt"))
    assert resolver.origin is None
    assert resolver.lookup_txt_sync(KEY).records == (b"v=DKIM1; p=draft",)
    assert resolver.lookup_txt_sync("sel._domainkey.example.net").ttl == 120
    assert resolver.lookup_txt_sync("x._domainkey.example.com").status is TxtStatus.NXDOMAIN
    assert resolver.lookup_txt_sync("_domainkey.example.com").status is TxtStatus.NO_DATA


def test_relative_names_without_soa_or_origin_ask_for_origin(tmp_path: Path) -> None:
    path = write(tmp_path, 'sel._domainkey IN TXT "v=DKIM1; p=x"\n')
    with pytest.raises(UsageError, match=r"sel\._domainkey are relative"):
        ZoneFileResolver(path)
    assert ZoneFileResolver(path, origin="example.com").lookup_txt_sync(KEY).status is TxtStatus.FOUND


def test_generate_directive_is_understood(tmp_path: Path) -> None:
    text = WITH_ORIGIN + "$GENERATE 1-3 s$._domainkey TXT p=k$\n"
    resolver = ZoneFileResolver(write(tmp_path, text))
    assert resolver.lookup_txt_sync("s2._domainkey.example.com").records == (b"p=k2",)


def test_relative_generate_without_origin_asks_for_one(tmp_path: Path) -> None:
    path = write(tmp_path, "$TTL 300\n$GENERATE 1-3 s$._domainkey TXT p=k$\n")
    with pytest.raises(UsageError, match="origin="):
        ZoneFileResolver(path)


def test_duplicate_soa_lines_at_one_absolute_name_are_one_origin(tmp_path: Path) -> None:
    soa = "example.com. IN SOA ns1.example.com. hostmaster.example.com. 1 3600 600 86400 300\n"
    resolver = ZoneFileResolver(write(tmp_path, ABSOLUTE_SOA_NO_ORIGIN + soa))
    assert resolver.origin == "example.com"
    assert resolver.lookup_txt_sync(KEY).status is TxtStatus.FOUND


def test_rsa_2048_record_split_into_255_byte_strings(tmp_path: Path) -> None:
    record = rsa2048_sized_record()
    assert len(record) == 410
    strings = " ".join(f'"{record[i : i + 255].decode()}"' for i in range(0, len(record), 255))
    text = f"$ORIGIN example.com.\n$TTL 300\nsel._domainkey IN TXT ( {strings} )\n"
    answer = ZoneFileResolver(write(tmp_path, text)).lookup_txt_sync(KEY)
    assert answer.records == (record,)


def test_several_txt_records_at_one_name(tmp_path: Path) -> None:
    text = '$ORIGIN example.com.\n$TTL 300\nsel._domainkey TXT "one"\nsel._domainkey TXT "two"\n'
    records = ZoneFileResolver(write(tmp_path, text)).lookup_txt_sync(KEY).records
    assert sorted(records) == [b"one", b"two"]


def test_cname_inside_the_zone_is_followed(tmp_path: Path) -> None:
    text = WITH_ORIGIN + "alias._domainkey 60 IN CNAME sel._domainkey\n"
    answer = ZoneFileResolver(write(tmp_path, text)).lookup_txt_sync("alias._domainkey.example.com")
    assert answer.records == (b"v=DKIM1; k=rsa; p=MIIBIjAN",)
    assert answer.ttl == 60  # the smallest TTL along the chain


def test_cname_leaving_the_zone_is_an_error_not_a_missing_key(tmp_path: Path) -> None:
    text = WITH_ORIGIN + "esp._domainkey IN CNAME key.esp.example.net.\n"
    answer = ZoneFileResolver(write(tmp_path, text)).lookup_txt_sync("esp._domainkey.example.com")
    assert answer.status is TxtStatus.ERROR
    assert "key.esp.example.net" in answer.detail


def test_cname_loop_is_an_error(tmp_path: Path) -> None:
    text = WITH_ORIGIN + "a IN CNAME b\nb IN CNAME a\n"
    answer = ZoneFileResolver(write(tmp_path, text)).lookup_txt_sync("a.example.com")
    assert answer.status is TxtStatus.ERROR
    assert "CNAME chain" in answer.detail


def test_relative_origin_directive_nests(tmp_path: Path) -> None:
    text = WITH_ORIGIN + '$ORIGIN _domainkey\nnew IN TXT "v=DKIM1; p=nested"\n'
    answer = ZoneFileResolver(write(tmp_path, text)).lookup_txt_sync("new._domainkey.example.com")
    assert answer.records == (b"v=DKIM1; p=nested",)


def test_invalid_query_name_is_an_error_answer(tmp_path: Path) -> None:
    answer = ZoneFileResolver(write(tmp_path, WITH_ORIGIN)).lookup_txt_sync("a..example.com")
    assert answer.status is TxtStatus.ERROR


def test_malformed_file_reports_path_line_and_reason(tmp_path: Path) -> None:
    path = write(tmp_path, WITH_ORIGIN + "bad IN A 192.0.2.999\nalso IN A 192.0.2.1\n")
    with pytest.raises(UsageError) as caught:
        ZoneFileResolver(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:12: invalid zone file: ")
    assert message.endswith("Text input is malformed.")  # dnspython's words
    assert not isinstance(caught.value, dns.exception.DNSException)
    assert caught.value.__suppress_context__


def test_problem_found_at_end_of_record_reports_the_record_line(tmp_path: Path) -> None:
    path = write(tmp_path, WITH_ORIGIN + "empty IN TXT\nwww2 IN A 192.0.2.1\n")
    with pytest.raises(UsageError, match=rf"^{path}:12: invalid zone file: "):
        ZoneFileResolver(path)


def test_multi_line_record_error_reports_its_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, WITH_ORIGIN + 'k IN TXT ( "a"\n   "b"\n')
    with pytest.raises(UsageError, match=rf"^{path}:12: invalid zone file: "):
        ZoneFileResolver(path)


def test_unknown_type_reports_dnspython_reason(tmp_path: Path) -> None:
    path = write(tmp_path, "$ORIGIN example.com.\n$TTL 300\nsel BOGUS data\n")
    with pytest.raises(UsageError, match=rf"^{path}:3: invalid zone file: .*BOGUS"):
        ZoneFileResolver(path)


def test_include_is_refused(tmp_path: Path) -> None:
    write(tmp_path, WITH_ORIGIN, "other.zone")
    path = write(tmp_path, f"$ORIGIN example.com.\n$INCLUDE {tmp_path / 'other.zone'}\n")
    with pytest.raises(UsageError, match=r":2: invalid zone file: .*INCLUDE"):
        ZoneFileResolver(path)


def test_several_soa_records_are_refused(tmp_path: Path) -> None:
    text = ABSOLUTE_SOA_NO_ORIGIN + "example.org. IN SOA ns1.example.org. h.example.org. 1 2 3 4 5\n"
    with pytest.raises(UsageError, match="several names"):
        ZoneFileResolver(write(tmp_path, text))


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read zone file"):
        ZoneFileResolver(tmp_path / "absent.zone")


def test_invalid_origin_argument_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="origin"):
        ZoneFileResolver(write(tmp_path, RELATIVE_NO_ORIGIN), origin="a..b")
