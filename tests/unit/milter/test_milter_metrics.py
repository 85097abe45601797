"""Prometheus metrics: what is counted, and that label values stay bounded."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mailseal.core.results import DKIMResult, Reason, SignatureResult, VerificationReport
from mailseal.milter.actions import ACCEPTED, Decision, Failure, Verdict
from mailseal.milter.metrics import PrometheusMetrics
from mailseal.milter.metrics_http import http_response
from mailseal.milter.routing import Origin
from mailseal.milter.session import MessageOutcome


def outcome(**changes: object) -> MessageOutcome:
    base: dict[str, object] = {
        "queue_id": "Q",
        "client": "192.0.2.1",
        "origin": Origin.EXTERNAL,
        "mode": "verify",
        "sender_domain": None,
        "decision": ACCEPTED,
        "signed": (),
        "sign_note": "",
        "report": None,
        "removed_authres": 0,
        "seconds": 0.003,
    }
    base.update(changes)
    return MessageOutcome(**base)  # type: ignore[arg-type]


def test_counts_and_bounded_domains() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    report = VerificationReport(
        (
            SignatureResult(DKIMResult.PASS, None, "", domain="bank.example"),
            SignatureResult(DKIMResult.FAIL, Reason.BODY_HASH_MISMATCH, "", domain="random-spammer.example"),
        ),
        "bank.example",
    )
    metrics.observe(outcome(report=report), frozenset({"bank.example"}))
    metrics.observe(
        outcome(mode="sign", signed=(("example.com", "s", "rsa-sha256"),), seconds=0.0008), frozenset()
    )
    metrics.observe(
        outcome(mode="sign", decision=Decision(Verdict.TEMPFAIL, Failure.SIGN_KEY_UNAVAILABLE, "x")),
        frozenset(),
    )
    metrics.observe(outcome(mode="sign", sign_note="unlisted"), frozenset())
    metrics.error("protocol")
    text = generate_latest(registry).decode()
    assert 'mailseal_signatures_verified_total{domain="bank.example",result="pass"} 1.0' in text
    assert 'mailseal_signatures_verified_total{domain="other",result="fail"} 1.0' in text
    assert "random-spammer" not in text
    assert 'mailseal_signatures_added_total{algorithm="rsa-sha256",domain="example.com"} 1.0' in text
    assert 'mailseal_messages_total{action="tempfail",mode="sign"} 1.0' in text
    assert 'mailseal_errors_total{kind="sign_key_unavailable"} 1.0' in text
    assert 'mailseal_errors_total{kind="protocol"} 1.0' in text
    assert 'mailseal_unsigned_total{reason="unlisted"} 1.0' in text
    assert 'mailseal_message_seconds_bucket{le="0.001",mode="sign"} 1.0' in text
    assert 'mailseal_message_seconds_bucket{le="0.005",mode="sign"} 3.0' in text


def test_http_endpoint_answers_only_get_metrics() -> None:
    assert http_response(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.0 200 OK\r\n")
    assert http_response(b"GET /other HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 404")
    assert http_response(b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 405")


def test_metrics_that_cannot_be_collected_are_a_503_not_an_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the collection raises stays inside the answer: the supervisor's loop serves it."""
    import mailseal.milter.metrics as metrics

    def broken() -> tuple[bytes, str]:
        raise struct.error("unpack_from requires a buffer of at least 4 bytes")

    monkeypatch.setattr(metrics, "exposition", broken)
    answer = http_response(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.0 503 ")
    assert b"Retry-After: 1\r\n" in answer


def test_shared_metrics_skip_a_file_still_being_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty worker file (created, header not yet written) is left out; the written ones are read."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    import mailseal.milter.metrics as metrics

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    written = MmapedDict(str(tmp_path / "counter_4193999.db"))  # type: ignore[no-untyped-call]  # a worker's, once it counted
    written.write_value(mmap_key("mailseal_probe", "mailseal_probe_total", [], [], "probe"), 3.0, 0.0)  # type: ignore[no-untyped-call]
    written.close()  # type: ignore[no-untyped-call]
    (tmp_path / "counter_4194000.db").touch()
    text, _ = metrics.exposition()
    assert b"mailseal_probe_total 3.0" in text
