"""The milter reports each failure's diagnosis in its log line and metrics, not in Authentication-Results."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mailseal import PrivateKey, sign, verify_sync
from mailseal.core.diagnosis import Cause
from mailseal.dns.memory import InMemoryResolver
from mailseal.milter.actions import ACCEPTED
from mailseal.milter.loading import load
from mailseal.milter.metrics import PrometheusMetrics
from mailseal.milter.routing import Origin
from mailseal.milter.session import MessageOutcome
from support.clock import FIXED_NOW
from support.milter_client import MilterClient
from support.milter_harness import MESSAGE, ServerThread, dns_records, write_config
from support.milter_store import wait_until

EXTERNAL = "192.0.2.44"
FOOTER = b"--\r\nlist footer: unsubscribe at https://lists.example.org/\r\n"
Keys = Mapping[str, tuple[PrivateKey | None, str, str]]


@pytest.fixture
def keys(rsa_key: PrivateKey) -> Keys:
    return {"rsa": (rsa_key, "example.com", "rsa2026")}


@pytest.fixture
def server(tmp_path: Path, keys: Keys) -> Iterator[ServerThread]:
    path = write_config(tmp_path, keys, {"*@example.com": list(keys)})
    with ServerThread(
        load(str(path)), resolver=InMemoryResolver(dns_records(keys)), clock=lambda: FIXED_NOW
    ) as running:
        yield running


def signed_by_sender(rsa_key: PrivateKey) -> bytes:
    return sign(MESSAGE, key=rsa_key, domain="example.com", selector="rsa2026", now=FIXED_NOW) + MESSAGE


def lines(caplog: pytest.LogCaptureFixture, queue_id: str) -> list[str]:
    wait_until(lambda: any(f"qid={queue_id}" in r.getMessage() for r in caplog.records))
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"qid={queue_id}")]


def test_log_line_names_the_cause_and_authentication_results_stays_plain(
    server: ServerThread, rsa_key: PrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mailseal")
    signed = signed_by_sender(rsa_key)
    tagged = signed.replace(b"Subject: a test", b"Subject: [list] a test")
    with MilterClient(server.address) as client:
        client.negotiate()
        client.macros(b"C", {"j": "mx.test", "daemon_name": "smtpd"})
        client.connect(address=EXTERNAL)
        appended = client.send_message(signed + FOOTER, chunks=[7, 3, 50], queue_id="4APP")
        subject = client.send_message(tagged, chunks=2, queue_id="4TAG")
        untouched = client.send_message(signed, queue_id="4OK")
    (line,) = lines(caplog, "4APP")
    assert "dkim=fail/example.com/body-hash-mismatch" in line
    assert "diagnosis=body-appended" in line
    (line,) = lines(caplog, "4TAG")
    assert "diagnosis=subject-tagged" in line
    (line,) = lines(caplog, "4OK")
    assert "dkim=pass/example.com" in line and "diagnosis=" not in line
    for result in (appended, subject, untouched):
        (authres,) = result.inserted("Authentication-Results")
        assert b"appended" not in authres.value and b"tagged" not in authres.value
        assert b"diagnosis" not in authres.value


def test_metrics_count_failures_by_cause(rsa_key: PrivateKey) -> None:
    resolver = InMemoryResolver(dns_records({"rsa": (rsa_key, "example.com", "rsa2026")}))
    signed = signed_by_sender(rsa_key)
    reports = [
        verify_sync(signed + FOOTER, resolver=resolver, now=FIXED_NOW),
        verify_sync(signed + FOOTER + FOOTER, resolver=resolver, now=FIXED_NOW),
        verify_sync(
            signed.replace(b"Subject: a test", b"Subject: [x] a test"), resolver=resolver, now=FIXED_NOW
        ),
        verify_sync(signed, resolver=resolver, now=FIXED_NOW),
    ]
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    for report in reports:
        metrics.observe(
            MessageOutcome(
                "Q", EXTERNAL, Origin.EXTERNAL, "verify", None, ACCEPTED, (), "", report, 0, 0.001
            ),
            frozenset(),
        )
    text = generate_latest(registry).decode()
    assert f'mailseal_verify_failures_total{{cause="{Cause.BODY_APPENDED}"}} 2.0' in text
    assert f'mailseal_verify_failures_total{{cause="{Cause.SUBJECT_TAGGED}"}} 1.0' in text
    assert text.count("mailseal_verify_failures_total{") == 2
