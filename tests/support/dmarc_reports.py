"""Build DMARC aggregate reports (RFC 7489 or DMARCbis XML) and report e-mails for tests."""

from __future__ import annotations

import gzip
import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from xml.sax.saxutils import escape

from mailseal import generate_private_key
from mailseal.core.algorithms import KeyType
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import NewKey
from support.clock import FIXED_NOW

DAY = 86400
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "dmarc-reports"


@dataclass(frozen=True)
class Sig:
    """One auth_results/dkim entry."""

    domain: str
    selector: str | None
    result: str = "pass"


@dataclass(frozen=True)
class Row:
    """One record."""

    source_ip: str = "192.0.2.1"
    count: int = 1
    header_from: str = "example.com"
    sigs: Sequence[Sig] = ()
    disposition: str = "none"
    dkim: str = "pass"
    spf: str = "pass"
    overrides: Sequence[str] = ()


@dataclass(frozen=True)
class Spec:
    """One report."""

    reporter: str = "google.com"
    report_id: str = "r1"
    domain: str = "example.com"
    begin: int = 1_767_225_600
    end: int | None = None
    rows: Sequence[Row] = field(default_factory=lambda: [Row(sigs=[Sig("example.com", "s1")])])
    bis: bool = False
    adkim: str = "r"


def report_xml(spec: Spec) -> bytes:
    """The XML of one report."""
    end = spec.end if spec.end is not None else spec.begin + DAY - 1
    out = io.StringIO()
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write('<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0">\n' if spec.bis else "<feedback>\n")
    out.write(f"<version>{'2.0' if spec.bis else '1.0'}</version>\n")
    out.write(
        f"<report_metadata><org_name>{escape(spec.reporter)}</org_name>"
        f"<email>noreply@{escape(spec.reporter)}</email><report_id>{escape(spec.report_id)}</report_id>"
        f"<date_range><begin>{spec.begin}</begin><end>{end}</end></date_range></report_metadata>\n"
    )
    out.write(
        f"<policy_published><domain>{escape(spec.domain)}</domain><adkim>{spec.adkim}</adkim><aspf>r</aspf><p>none</p>"
    )
    out.write(
        "<np>none</np><testing>n</testing><discovery_method>treewalk</discovery_method>"
        if spec.bis
        else "<pct>100</pct>"
    )
    out.write("</policy_published>\n")
    for row in spec.rows:
        reasons = "".join(
            f"<reason><type>{escape(t)}</type><comment></comment></reason>" for t in row.overrides
        )
        out.write(
            f"<record><row><source_ip>{row.source_ip}</source_ip><count>{row.count}</count>"
            f"<policy_evaluated><disposition>{row.disposition}</disposition><dkim>{row.dkim}</dkim>"
            f"<spf>{row.spf}</spf>{reasons}</policy_evaluated></row>"
            f"<identifiers><header_from>{escape(row.header_from)}</header_from></identifiers><auth_results>"
        )
        for sig in row.sigs:
            selector = f"<selector>{escape(sig.selector)}</selector>" if sig.selector else ""
            out.write(
                f"<dkim><domain>{escape(sig.domain)}</domain>{selector}<result>{sig.result}</result></dkim>"
            )
        out.write(f"<spf><domain>{escape(row.header_from)}</domain><result>{row.spf}</result></spf>")
        out.write("</auth_results></record>\n")
    out.write("</feedback>\n")
    return out.getvalue().encode()


def gz(data: bytes) -> bytes:
    """gzip, as reporters attach it."""
    return gzip.compress(data, mtime=0)


def zipped(data: bytes, name: str = "report.xml") -> bytes:
    """A zip archive with one member."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def report_email(
    attachment: bytes,
    *,
    filename: str = "google.com!example.com!1767225600!1767311999.xml.gz",
    content_type: str = "application/gzip",
    to: str = "dmarc@example.com",
    subject: str = "Report domain: example.com Submitter: google.com",
    extra: Sequence[tuple[bytes, str, str]] = (),
) -> bytes:
    """A report e-mail: a text part and the attachment (plus ``extra`` (data, filename, type) parts)."""
    message = EmailMessage()
    message["From"] = "noreply-dmarc-support@google.com"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = "<report-1@google.com>"
    message.set_content("This is an aggregate report from google.com.")
    maintype, subtype = content_type.split("/", 1)
    message.add_attachment(attachment, maintype=maintype, subtype=subtype, filename=filename)
    for data, name, ctype in extra:
        main, sub = ctype.split("/", 1)
        message.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return message.as_bytes()


def key_store_with_one_key(
    path: Path, *, domain: str = "example.com", selector: str = "s2026"
) -> SqliteKeyStore:
    """A key store holding one Ed25519 key ``selector`` of ``domain``, made 100 days before FIXED_NOW (caller closes)."""
    store = SqliteKeyStore(path)
    store.add(
        NewKey(
            domain=domain,
            selector=selector,
            key_type=KeyType.ED25519,
            bits=256,
            private_pem=generate_private_key(KeyType.ED25519).to_pem(),
            record_text="v=DKIM1; k=ed25519; p=AA",
            revoked_text="v=DKIM1; k=ed25519; p=",
            created_at=FIXED_NOW - 100 * DAY,
        )
    )
    return store
