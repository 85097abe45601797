"""Prometheus metrics for the milter; the only module that imports prometheus_client.

prometheus_client is imported only when metrics are switched on, and after
:func:`use_directory` when several worker processes share one endpoint (its
multiprocess mode picks its storage at import time). Label values are kept to
a bounded set: signing domains come from our own key table, and a verified
domain is named only when the configuration requires a signature from it --
any other becomes ``other``, so mail from the whole Internet cannot grow the
series without bound.
"""

from __future__ import annotations

import glob
import importlib
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from mailseal.milter.session import MessageOutcome

_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


class Metrics(Protocol):
    """What the server reports."""

    def observe(self, outcome: MessageOutcome, watched_domains: frozenset[str]) -> None:
        """Count one finished message."""
        ...

    def error(self, kind: str) -> None:
        """Count one error that is not a message outcome (protocol errors, reload failures)."""
        ...


class NullMetrics:
    """Metrics switched off."""

    def observe(self, outcome: MessageOutcome, watched_domains: frozenset[str]) -> None:
        """Do nothing."""

    def error(self, kind: str) -> None:
        """Do nothing."""


def use_directory(directory: str) -> None:
    """Share metrics between worker processes through files in ``directory`` (call before any import)."""
    os.environ[_ENV] = directory


def preload() -> None:
    """Import prometheus_client now (before dropping privileges; after :func:`use_directory`)."""
    _client()
    importlib.import_module("prometheus_client.multiprocess")


def _client() -> Any:
    import prometheus_client  # here, not at the top: see use_directory()

    return prometheus_client


class PrometheusMetrics:
    """Counters and a latency histogram in a prometheus_client registry."""

    def __init__(self, registry: Any = None) -> None:
        """Register the metrics (in the default registry unless one is given)."""
        client = _client()
        kwargs = {} if registry is None else {"registry": registry}
        self.registry = registry if registry is not None else client.REGISTRY
        self._messages = client.Counter(
            "mailseal_messages", "Messages handled, by mode and final action", ["mode", "action"], **kwargs
        )
        self._signed = client.Counter(
            "mailseal_signatures_added", "DKIM signatures added, by domain and algorithm",
            ["domain", "algorithm"], **kwargs,
        )  # fmt: skip
        self._verified = client.Counter(
            "mailseal_signatures_verified", "DKIM signatures verified, by result and domain",
            ["result", "domain"], **kwargs,
        )  # fmt: skip
        self._diagnosed = client.Counter(
            "mailseal_verify_failures", "Signatures that did not pass, by diagnosed cause (a closed set)",
            ["cause"], **kwargs,
        )  # fmt: skip
        self._unsigned = client.Counter(
            "mailseal_unsigned", "Outgoing messages passed on unsigned, by reason", ["reason"], **kwargs
        )
        self._errors = client.Counter("mailseal_errors", "Errors, by kind", ["kind"], **kwargs)
        self._latency = client.Histogram(
            "mailseal_message_seconds", "Time from the first header to the end-of-message reply",
            ["mode"], buckets=_BUCKETS, **kwargs,
        )  # fmt: skip

    def observe(self, outcome: MessageOutcome, watched_domains: frozenset[str]) -> None:
        """Count one finished message."""
        self._messages.labels(outcome.mode, outcome.decision.verdict.value).inc()
        self._latency.labels(outcome.mode).observe(outcome.seconds)
        for domain, _selector, algorithm in outcome.signed:
            self._signed.labels(domain, algorithm).inc()
        if outcome.sign_note:
            self._unsigned.labels(outcome.sign_note).inc()
        if outcome.decision.cause and not outcome.decision.cause.startswith("required:"):
            self._errors.labels(outcome.decision.cause).inc()
        if outcome.report is not None:
            if not outcome.report.signatures:
                self._verified.labels("none", "none").inc()
            for signature in outcome.report.signatures:
                domain = signature.domain if signature.domain in watched_domains else "other"
                self._verified.labels(signature.result.value, domain or "other").inc()
                if signature.diagnosis is not None:
                    self._diagnosed.labels(signature.diagnosis.code.value).inc()

    def error(self, kind: str) -> None:
        """Count one error that is not a message outcome."""
        self._errors.labels(kind).inc()


_WRITTEN: Final = 8
"""Bytes a shared metrics file has once its worker has written its header (the used-size word and padding)."""


def _written(path: str) -> bool:
    try:
        return os.path.getsize(path) >= _WRITTEN
    except OSError:  # removed since the listing (a worker marked dead)
        return False


class _WrittenFiles:
    """The workers' shared metrics files, less one a worker is creating at this moment.

    prometheus_client creates a worker's file empty and writes its header a
    moment later; merging it in between raises ``struct.error``, which failed
    the scrape (and, before ``http_response`` caught it, stopped the supervisor).
    """

    def __init__(self, directory: str) -> None:
        """Collect from the ``*.db`` files in ``directory``."""
        self._directory = directory

    def collect(self) -> Any:
        """The merged samples of every written file."""
        multiprocess = importlib.import_module("prometheus_client.multiprocess")
        files = [path for path in glob.glob(os.path.join(self._directory, "*.db")) if _written(path)]
        return multiprocess.MultiProcessCollector.merge(files, accumulate=True)


def exposition(registry: Any = None) -> tuple[bytes, str]:
    """The text exposition of ``registry`` (or of every worker, in multiprocess mode) and its type."""
    client = _client()
    if registry is None:
        directory = os.environ.get(_ENV)
        if directory:
            registry = client.CollectorRegistry()
            registry.register(_WrittenFiles(directory))
        else:
            registry = client.REGISTRY
    return client.generate_latest(registry), client.CONTENT_TYPE_LATEST


def forget_processes(pids: Iterable[int]) -> None:
    """Tell multiprocess mode that these workers are gone (their gauges must not linger)."""
    if not os.environ.get(_ENV):
        return
    multiprocess = importlib.import_module("prometheus_client.multiprocess")
    for pid in pids:
        try:
            multiprocess.mark_process_dead(pid)
        except OSError:  # a file already gone: nothing lingers, and the supervisor must go on
            continue
