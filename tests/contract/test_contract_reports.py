"""Issue 10 contract: ``mailseal reports ingest`` lines and exit codes, ``reports summary --json``.

The expected summary of the vendored reports is computed here by a tiny parser of its
own (``xml.etree`` over the files that are well-formed XML), not by mailseal's reader.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import zipfile
from collections import Counter, defaultdict
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from support.clock import FIXED_NOW
from support.dmarc_reports import DAY, VECTORS, Row, Sig, Spec, gz, report_email, report_xml, zipped
from support.inprocess_cli import Done, mailseal

AGGREGATE = VECTORS / "aggregate"
ROW_KEYS = [
    "domain", "selector", "receiver", "messages", "dkim_pass", "dkim_fail", "aligned_pass", "known_selector",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _no_key_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new user: no keys configuration anywhere, so summary has no key store to join with."""
    monkeypatch.delenv("MAILSEAL_KEYS_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    # root's default key store is /var/lib/mailseal/keys.db whatever XDG says: keep it out of reach
    for where in ("mailseal.keys.config", "mailseal.cli.reports"):
        monkeypatch.setattr(f"{where}.default_store_path", lambda: tmp_path / "data" / "keys.db")
    if Path("/etc/mailseal/keys.toml").exists():
        pytest.skip("this host has /etc/mailseal/keys.toml; the no-key-store contract cannot be checked here")


def reports(store: Path, *argv: str, stdin: bytes = b"") -> Done:
    command, *rest = argv
    return mailseal("reports", command, "--store", str(store), "--now", str(FIXED_NOW), *rest, stdin=stdin)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(node: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in node if _local(c.tag) == name), None)


def _text(node: ET.Element | None, *path: str) -> str:
    for name in path:
        if node is None:
            return ""
        node = _child(node, name)
    return "" if node is None or node.text is None else node.text.strip()


def _aligned(signer: str, header_from: str, strict: bool) -> bool:
    signer, header_from = signer.lower().rstrip("."), header_from.lower().rstrip(".")
    if signer == header_from:
        return True
    return not strict and (signer.endswith("." + header_from) or header_from.endswith("." + signer))


def expected_summary(documents: list[bytes]) -> dict[str, object]:
    """The contract's object for these report documents, by an independent reading of RFC 7489 XML."""
    seen: set[tuple[str, str, str, str, str]] = set()
    rows: dict[tuple[str, str | None, str], Counter[str]] = defaultdict(Counter)
    totals = Counter[str]()
    for data in documents:
        root = ET.fromstring(data)  # noqa: S314 - our vendored files
        meta, policy = _child(root, "report_metadata"), _child(root, "policy_published")
        # An empty org_name (one real reporter sends that) falls back to its e-mail's domain.
        receiver = _text(meta, "org_name") or _text(meta, "email").rpartition("@")[2].lower() or "unknown"
        key = (receiver, _text(meta, "report_id"), _text(policy, "domain").lower(),
               _text(meta, "date_range", "begin"), _text(meta, "date_range", "end"))  # fmt: skip
        if key in seen:
            continue
        seen.add(key)
        totals["reports"] += 1
        strict = _text(policy, "adkim").lower() == "s"
        for record in (c for c in root if _local(c.tag) == "record"):
            count = int(_text(record, "row", "count") or 0)
            header_from = _text(record, "identifiers", "header_from").lower()
            totals["records"] += 1
            totals["messages"] += count
            results = _child(record, "auth_results")
            sigs = [s for s in (results if results is not None else []) if _local(s.tag) == "dkim"]
            if not sigs:
                rows[(header_from, None, receiver)].update(messages=count, dkim_fail=count)
            for sig in sigs:
                domain = _text(sig, "domain").lower()
                passed = _text(sig, "result").lower() == "pass"
                cell = rows[(domain, _text(sig, "selector") or None, receiver)]
                cell.update(
                    messages=count,
                    dkim_pass=count if passed else 0,
                    dkim_fail=0 if passed else count,
                    aligned_pass=count if passed and _aligned(domain, header_from, strict) else 0,
                )
    return {
        "reports": totals["reports"],
        "records": totals["records"],
        "messages": totals["messages"],
        "rows": {
            k: {
                "messages": c["messages"],
                "dkim_pass": c["dkim_pass"],
                "dkim_fail": c["dkim_fail"],
                "aligned_pass": c["aligned_pass"],
                "known_selector": None,
            }
            for k, c in rows.items()
        },
    }


def clean_vectors() -> list[tuple[Path, bytes]]:
    """The vendored files that are well-formed XML as they are, or once gunzipped/unzipped."""
    out = []
    for path in sorted(AGGREGATE.iterdir()):
        raw = path.read_bytes()
        if path.name.endswith(".gz"):
            raw = gzip.decompress(raw)
        elif path.name.endswith(".zip"):
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                raw = archive.read(archive.namelist()[0])
        elif not path.name.endswith(".xml"):
            continue
        try:
            ET.fromstring(raw)  # noqa: S314 - our vendored files
        except ET.ParseError:
            continue
        out.append((path, raw))
    return out


def summary(store: Path, *argv: str) -> dict[str, object]:
    done = reports(store, "summary", *argv, "--json")
    assert done.status == 0, done.stderr
    lines = done.out.splitlines()
    assert len(lines) == 1, "exactly one JSON object"
    found = json.loads(lines[0])
    assert list(found) == ["reports", "records", "messages", "rows"]
    for row in found["rows"]:
        assert list(row) == ROW_KEYS
    return dict(found)


def keyed(found: dict[str, object]) -> dict[str, object]:
    rows = found["rows"]
    assert isinstance(rows, list)
    table = {(r["domain"], r["selector"], r["receiver"]): {k: r[k] for k in ROW_KEYS[3:]} for r in rows}
    assert len(table) == len(rows), "one row per domain, selector and receiver"
    return {**found, "rows": table}


def test_vendored_reports_summary_matches_an_independent_count(tmp_path: Path) -> None:
    store = tmp_path / "r.db"
    vectors = clean_vectors()
    assert len(vectors) >= 12
    done = reports(store, "ingest", *(str(p) for p, _ in vectors))
    assert done.status == 0, done.out + done.stderr
    assert len(done.out.splitlines()) == len(vectors), "one line per report"
    assert all(
        line.split()[0] in {"ingested", "duplicate"} or "ingested" in line for line in done.out.splitlines()
    )
    assert keyed(summary(store)) == expected_summary([raw for _, raw in vectors])


def test_summary_since_and_domain(tmp_path: Path) -> None:
    store = tmp_path / "r.db"
    old = Spec(
        report_id="old", begin=FIXED_NOW - 30 * DAY, rows=[Row(count=4, sigs=[Sig("example.com", "s1")])]
    )
    new = Spec(
        report_id="new", begin=FIXED_NOW - 2 * DAY, rows=[Row(count=3, sigs=[Sig("example.com", "s1")])]
    )
    other = Spec(report_id="o", domain="example.org", begin=FIXED_NOW - DAY,
                 rows=[Row(count=5, header_from="example.org", sigs=[Sig("example.org", "k", "fail")])])  # fmt: skip
    paths = []
    for n, spec in enumerate((old, new, other)):
        paths.append(tmp_path / f"{n}.xml")
        paths[-1].write_bytes(report_xml(spec))
    assert reports(store, "ingest", *map(str, paths)).status == 0
    everything = keyed(summary(store))
    assert (everything["reports"], everything["messages"]) == (3, 12)
    assert everything["rows"][("example.com", "s1", "google.com")]["messages"] == 7  # type: ignore[index]
    recent = keyed(summary(store, "--since", "7"))
    assert (recent["reports"], recent["messages"]) == (2, 8)
    only = keyed(summary(store, "--domain", "example.com"))
    assert (only["reports"], only["messages"]) == (2, 7)
    assert only["rows"] == {
        ("example.com", "s1", "google.com"): {
            "messages": 7, "dkim_pass": 7, "dkim_fail": 0, "aligned_pass": 7, "known_selector": None,
        }
    }  # fmt: skip


def test_ingest_one_line_per_report_duplicates_zip_gzip_mail_and_stdin(tmp_path: Path) -> None:
    store = tmp_path / "r.db"
    specs = [
        Spec(report_id=f"id{n}", rows=[Row(count=n + 1, sigs=[Sig("example.com", "s1")])]) for n in range(4)
    ]
    files = {
        "a.xml": report_xml(specs[0]),
        "b.xml.gz": gz(report_xml(specs[1])),
        "c.zip": zipped(report_xml(specs[2])),
        "d.eml": report_email(report_xml(specs[3])),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    done = reports(store, "ingest", *(str(tmp_path / n) for n in files))
    assert done.status == 0, done.stderr
    lines = done.out.splitlines()
    assert len(lines) == 4
    assert all("ingested" in line for line in lines), lines
    again = reports(store, "ingest", str(tmp_path / "a.xml"))
    assert again.status == 0
    assert len(again.out.splitlines()) == 1
    assert "duplicate" in again.out
    piped = reports(store, "ingest", stdin=report_email(report_xml(Spec(report_id="piped"))))
    assert piped.status == 0, piped.stderr
    assert len(piped.out.splitlines()) == 1
    assert "ingested" in piped.out
    dup_stdin = reports(store, "ingest", stdin=gz(report_xml(specs[1])))
    assert (dup_stdin.status, len(dup_stdin.out.splitlines())) == (0, 1)
    assert "duplicate" in dup_stdin.out
    assert keyed(summary(store))["reports"] == 5


def test_quarantined_input_exits_1_with_its_reason(tmp_path: Path) -> None:
    store = tmp_path / "r.db"
    good, bad = tmp_path / "good.xml", tmp_path / "bad.xml"
    good.write_bytes(report_xml(Spec()))
    bad.write_bytes(b"<feedback><report_metadata>")
    done = reports(store, "ingest", str(good), str(bad))
    assert done.status == 1
    lines = done.out.splitlines()
    assert len(lines) == 2
    assert "ingested" in lines[0]
    assert "quarantined" in lines[1]
    assert len(lines[1].split("quarantined", 1)[1].strip()) > 3, "a reason"
    assert "Traceback" not in done.out + done.stderr
    piped = reports(store, "ingest", stdin=b"not a report at all\n")
    assert piped.status == 1
    assert "quarantined" in piped.out


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes any file; run as a normal user")
def test_unwritable_store_is_75_never_lost_unprivileged(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    done = reports(folder / "r.db", "ingest", stdin=report_xml(Spec()))
    assert done.status == 75


def test_store_that_is_not_a_database_is_75(tmp_path: Path) -> None:
    """A temporary failure: the MTA keeps the report queued (the store is a directory right now)."""
    store = tmp_path / "r.db"
    store.mkdir()
    done = reports(store, "ingest", stdin=report_xml(Spec()))
    assert done.status == 75, done.out + done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["ingest", "summary", "prune", "fetch", "serve", "metrics"])
def test_every_reports_command_takes_store_and_now(command: str) -> None:
    done = mailseal("reports", command, "--help")
    assert done.status == 0
    assert "--store" in done.out
    assert "--now" in done.out


def test_a_mail_with_good_reports_and_a_garbage_attachment(tmp_path: Path) -> None:
    """One line per report: the good ones stored, the bad part quarantined (the whole mail kept), exit 1."""
    from email.message import EmailMessage

    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "noreply@google.com", "dmarc@example.com", "Report"
    mail.set_content("reports attached")
    mail.add_attachment(
        report_xml(Spec(report_id="m1")), maintype="application", subtype="xml", filename="a.xml"
    )
    mail.add_attachment(
        gz(report_xml(Spec(report_id="m2"))), maintype="application", subtype="gzip", filename="b.xml.gz"
    )
    mail.add_attachment(b"garbage", maintype="application", subtype="zip", filename="c.zip")
    store = tmp_path / "r.db"
    done = reports(store, "ingest", stdin=mail.as_bytes())
    assert done.status == 1
    lines = done.out.splitlines()
    assert [line.split()[0] for line in lines] == ["ingested", "ingested", "quarantined"]
    assert "c.zip" in lines[2]
    assert len(list((tmp_path / "reports-quarantine").glob("*.bin"))) == 1
    assert keyed(summary(store))["reports"] == 2
