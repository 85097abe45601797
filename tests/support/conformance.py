"""Loaders for the conformance vectors copied into tests/vectors (data by others; never edited)."""

from __future__ import annotations

from pathlib import Path

from mailseal.core.txtanswer import TxtAnswer, TxtStatus
from mailseal.dns.memory import InMemoryResolver

CONFORMANCE = Path(__file__).resolve().parents[1] / "vectors"


def records_then_message(path: Path) -> tuple[InMemoryResolver, bytes]:
    """Stalwart's layout: ``name value`` lines, an empty line, then an LF message."""
    text = path.read_bytes()
    head, _, message = text.partition(b"\n\n")
    records: dict[str, str] = {}
    for line in head.decode().splitlines():
        name, _, value = line.strip().partition(" ")
        records[name] = value.strip()
    return InMemoryResolver(records), message.replace(b"\n", b"\r\n")


def fake_dns(path: Path) -> InMemoryResolver:
    """Mail::DKIM's FAKE_DNS.dat, with its NXDOMAIN/timeout/SERVFAIL markers."""
    answers: dict[str, TxtAnswer | str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        name, _, value = line.partition(" ")
        value = value.strip()
        if value == "NXDOMAIN":
            answers[name] = TxtAnswer.failure(TxtStatus.NXDOMAIN)
        elif value == "~~Query timed out~~":
            answers[name] = TxtAnswer.failure(TxtStatus.TIMEOUT, "query timed out")
        elif value == "~~SERVFAIL~~":
            answers[name] = TxtAnswer.failure(TxtStatus.SERVFAIL, "SERVFAIL")
        elif value == '""':
            answers[name] = TxtAnswer.found((b"",))
        else:
            answers[name] = value
    return InMemoryResolver(answers)
