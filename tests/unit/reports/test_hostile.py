"""Reports are untrusted input: entity bombs, external entities, decompression bombs, huge and garbage input."""

from __future__ import annotations

import gzip
import io
import os
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from mailseal.reports.ingest import Ingestor, Status
from mailseal.reports.model import Unreadable
from mailseal.reports.sqlite_store import SqliteReportStore
from mailseal.reports.unpack import Item, Limits, documents, item_documents
from mailseal.reports.xmlparse import parse_report, parse_report_bytes
from support.clock import FIXED_NOW
from support.dmarc_reports import Row, Sig, Spec, gz, report_email, report_xml, zipped

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE feedback [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
"""


def _with_org(prolog: bytes, org: bytes) -> bytes:
    body = report_xml(Spec(reporter="PLACEHOLDER")).split(b"\n", 1)[1]
    return prolog + body.replace(b"PLACEHOLDER", org, 1)


@pytest.mark.parametrize("strict", [False, True])
def test_billion_laughs_is_refused(strict: bool) -> None:
    with pytest.raises(Unreadable, match="document type declaration"):
        parse_report_bytes(_with_org(LAUGHS, b"&lol9;"), strict=strict)


def test_billion_laughs_hidden_behind_a_long_comment_is_not_expanded() -> None:
    """Past the 64 KiB head the DTD is still refused, and nothing was expanded meanwhile."""
    prolog = b'<?xml version="1.0"?>\n<!--' + b"x" * 70000 + b"-->\n" + LAUGHS.split(b"\n", 1)[1]
    tracemalloc.start()
    try:
        with pytest.raises(Unreadable, match=r"document type declaration|not a DMARC"):
            parse_report_bytes(_with_org(prolog, b"&lol9;"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024


@pytest.mark.parametrize("hidden", [False, True])
def test_external_entities_are_never_read(tmp_path: Path, hidden: bool) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    pad = b"<!--" + b"y" * 70000 + b"-->\n" if hidden else b""
    prolog = (
        b'<?xml version="1.0"?>\n'
        + pad
        + f'<!DOCTYPE feedback [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>\n'.encode()
    )
    data = _with_org(prolog, b"&xxe;")
    with pytest.raises(Unreadable) as caught:
        parse_report_bytes(data)
    assert "TOPSECRET" not in caught.value.reason


def test_network_dtd_is_not_fetched() -> None:
    prolog = b'<?xml version="1.0"?>\n<!DOCTYPE feedback SYSTEM "http://192.0.2.1/evil.dtd">\n'
    with pytest.raises(Unreadable, match="document type declaration"):
        parse_report_bytes(_with_org(prolog, b"x"))


def _bomb_body() -> bytes:
    return b"<feedback>" + b" " * (200 * 1024 * 1024)


def test_zip_bomb_is_refused_after_reading_at_most_the_cap() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("report.xml", _bomb_body())
    bomb = buffer.getvalue()
    assert len(bomb) < 1024 * 1024
    with pytest.raises(Unreadable, match="larger than the 32 MiB limit once decompressed"):
        documents(bomb, "bomb.zip", Limits())


def test_zip_bomb_with_a_lying_size_header_is_cut_while_streaming() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("report.xml", _bomb_body())
    data = bytearray(buffer.getvalue())
    # Rewrite the central directory's uncompressed size (offset 24 in the entry) to a small lie.
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (1000).to_bytes(4, "little")
    tracemalloc.start()
    try:
        with pytest.raises(Unreadable, match=r"limit once decompressed|cannot decompress"):
            for document in documents(bytes(data), "liar.zip", Limits()):
                parse_report(document.open())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_gzip_bomb_is_refused_in_flat_memory() -> None:
    bomb = gzip.compress(_bomb_body(), compresslevel=9)
    assert len(bomb) < 1024 * 1024
    tracemalloc.start()
    try:
        (document,) = documents(bomb, "bomb.xml.gz", Limits())
        with pytest.raises(Unreadable, match="larger than the 32 MiB limit once decompressed"):
            parse_report(document.open())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024


def test_truncated_and_corrupt_gzip_give_reasons() -> None:
    whole = gz(report_xml(Spec()))
    (document,) = documents(whole[: len(whole) // 2], "half.gz", Limits())
    with pytest.raises(Unreadable, match="truncated"):
        parse_report(document.open())
    broken = whole[:10] + bytes(len(whole) - 10)
    (document,) = documents(broken, "zeros.gz", Limits())
    with pytest.raises(Unreadable, match="cannot decompress"):
        parse_report(document.open())


def test_fifty_megabyte_report_is_quarantined_without_being_read_into_memory(tmp_path: Path) -> None:
    big = tmp_path / "big.xml"
    head = report_xml(Spec()).split(b"<record>", 1)[0]
    with big.open("wb") as out:
        out.write(head)
        out.write(b"<!-- padding -->" * (50 * 1024 * 1024 // 16))
        out.write(b"</feedback>\n")
    assert big.stat().st_size > 50 * 1024 * 1024
    store = SqliteReportStore(tmp_path / "r.db")
    ingestor = Ingestor(store, tmp_path / "q", clock=lambda: FIXED_NOW)
    tracemalloc.start()
    try:
        (outcome,) = ingestor.ingest(Item(str(big), big.read_bytes, big))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        store.close()
    assert outcome.status is Status.QUARANTINED
    assert "larger than the 32 MiB report limit" in outcome.detail
    assert peak < 8 * 1024 * 1024  # refused by its size; the quarantine copy is streamed
    (kept,) = (tmp_path / "q").glob("*.bin")
    assert kept.stat().st_size == big.stat().st_size


def test_a_big_report_costs_its_records_not_its_xml_tree(tmp_path: Path) -> None:
    rows = [
        Row(source_ip=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", sigs=[Sig("example.com", "s1")])
        for i in range(20000)
    ]
    path = tmp_path / "big.xml"
    path.write_bytes(report_xml(Spec(rows=rows)))
    size = path.stat().st_size
    tracemalloc.start()
    try:
        (document,) = item_documents(Item(str(path), path.read_bytes, path), Limits())
        report = parse_report(document.open())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(report.records) == 20000
    # The XML tree is freed record by record; what stays is one compact Record each
    # (interned words and domains): about the size of the XML, not the 5-10x of a tree.
    assert peak < 1.5 * size


def test_deep_nesting_is_refused_not_a_crash() -> None:
    data = b"<feedback>" + b"<a>" * 100000 + b"</a>" * 100000 + b"</feedback>"
    with pytest.raises(Unreadable):
        parse_report_bytes(data, strict=True)
    with pytest.raises(Unreadable):
        parse_report_bytes(data)


def test_garbage_attachment_labelled_as_report_is_quarantined_with_its_part(tmp_path: Path) -> None:
    message = report_email(
        b"\x00garbage" + os.urandom(3000),  # never a magic number by chance
        filename="report.zip",
        content_type="application/zip",
    )
    with pytest.raises(Unreadable, match=r"part 2 \(report.zip\): labelled as a report"):
        documents(message, "mail", Limits())


def test_garbage_with_zip_magic_is_refused_with_a_reason() -> None:
    message = report_email(b"PK\x03\x04" + os.urandom(3000), filename="r.zip", content_type="application/zip")
    with pytest.raises(Unreadable, match="not a readable zip archive"):
        documents(message, "mail", Limits())


def test_unrelated_attachments_beside_a_report_are_ignored() -> None:
    png = b"\x89PNG\r\n\x1a\n" + os.urandom(500)
    message = report_email(gz(report_xml(Spec())), extra=[(png, "logo.png", "image/png")])
    (document,) = documents(message, "mail", Limits())
    assert parse_report(document.open()).report_id == "r1"


def test_mail_without_report_and_random_bytes_are_unreadable() -> None:
    with pytest.raises(Unreadable, match="without a report attachment"):
        documents(b"From: a@b\r\nSubject: hi\r\n\r\nhello\r\n", "mail", Limits())
    with pytest.raises(Unreadable, match="neither XML, gzip, zip nor an e-mail"):
        documents(b"\x00\x01" + os.urandom(100), "blob", Limits())


def test_too_many_mime_parts_and_zip_members_are_refused() -> None:
    boundary = "b"
    parts = "".join(f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(200))
    mail = f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n{parts}--{boundary}--\r\n'.encode()
    with pytest.raises(Unreadable, match="MIME parts"):
        documents(mail, "mail", Limits())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for n in range(20):
            archive.writestr(f"{n}.xml", b"<feedback/>")
    with pytest.raises(Unreadable, match="holds 20 files"):
        documents(buffer.getvalue(), "many.zip", Limits())
    assert zipped(b"x")


def test_hostile_values_are_kept_as_text_and_capped() -> None:
    spec = Spec(reporter="<script>alert(1)</script>" + "A" * 5000)
    report = parse_report_bytes(report_xml(spec))
    assert report.reporter.startswith("<script>alert(1)</script>AAA")
    assert len(report.reporter) == 1024


def _ingest_peak(tmp_path: Path, records: int) -> tuple[int, int]:
    rows = [
        Row(source_ip=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", sigs=[Sig("example.com", "s1")])
        for i in range(records)
    ]
    path = tmp_path / f"big-{records}.xml"
    path.write_bytes(report_xml(Spec(report_id=f"big-{records}", rows=rows)))
    store = SqliteReportStore(tmp_path / f"r-{records}.db")
    ingestor = Ingestor(store, tmp_path / "q", clock=lambda: FIXED_NOW)
    tracemalloc.start()
    try:
        (outcome,) = ingestor.ingest(Item(str(path), path.read_bytes, path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        store.close()
    assert (outcome.status, outcome.records) == (Status.INGESTED, records)
    return peak, path.stat().st_size


def test_ingest_memory_is_flat_in_report_size(tmp_path: Path) -> None:
    """Records stream from libxml2 into the store's transaction in batches: memory does not follow size."""
    small, _ = _ingest_peak(tmp_path, 4000)
    large, size = _ingest_peak(tmp_path, 24000)
    assert large < 1.3 * small
    assert large < size / 4
