"""Prometheus text exposition of the report store: pass rates per selector and receiver, last report time.

Written by hand (format 0.0.4) rather than through prometheus_client: the
values are read from the store at scrape time, nothing is kept in process.
Label values come from reports (attacker-controlled): they are escaped as the
format requires, capped in length, and the number of (domain, selector,
receiver) series is capped (the rest is summed under ``receiver="other"``) so a
flood of invented reporter names cannot blow up the scraper.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from mailseal.reports.store import DAY, ReportStore, day_of
from mailseal.reports.summary import group

__all__ = ["MAX_SERIES", "render_metrics"]

MAX_SERIES: Final = 500
_LABEL_MAX: Final = 120


def _label(value: str) -> str:
    value = value[:_LABEL_MAX]
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def render_metrics(store: ReportStore, *, now: int, window_days: int = 7) -> str:
    """The exposition text: rollups of the last ``window_days`` days, totals over everything stored."""
    rows = group(store.daily(since_day=day_of(now - window_days * DAY)))
    ordered = sorted(rows.items(), key=lambda kv: -kv[1][0])
    kept = ordered[:MAX_SERIES]
    other: dict[tuple[str, str], list[int]] = {}
    for (domain, selector, _receiver), cell in ordered[MAX_SERIES:]:
        into = other.setdefault((domain, selector or ""), [0, 0, 0, 0])
        for i in range(4):
            into[i] += cell[i]
    out = [
        f"# HELP mailseal_dmarc_messages Messages in DMARC aggregate reports of the last {window_days} days.",
        "# TYPE mailseal_dmarc_messages gauge",
    ]
    series: list[tuple[dict[str, str], list[int]]] = [
        ({"domain": d, "selector": s or "", "receiver": r}, cell) for (d, s, r), cell in kept
    ]
    series += [({"domain": d, "selector": s, "receiver": "other"}, cell) for (d, s), cell in other.items()]
    out += [f"mailseal_dmarc_messages{_labels(labels)} {cell[0]}" for labels, cell in series]
    out += [
        "# HELP mailseal_dmarc_dkim_pass_ratio Share of those messages whose DKIM signature passed.",
        "# TYPE mailseal_dmarc_dkim_pass_ratio gauge",
    ]
    out += [
        f"mailseal_dmarc_dkim_pass_ratio{_labels(labels)} {cell[1] / cell[0]:.6g}"
        for labels, cell in series
        if cell[0]
    ]
    out += [
        "# HELP mailseal_dmarc_aligned_pass_ratio Share of those messages with a passing, aligned signature.",
        "# TYPE mailseal_dmarc_aligned_pass_ratio gauge",
    ]
    out += [
        f"mailseal_dmarc_aligned_pass_ratio{_labels(labels)} {cell[3] / cell[0]:.6g}"
        for labels, cell in series
        if cell[0]
    ]
    out += [
        "# HELP mailseal_dmarc_last_report_timestamp_seconds End of the newest stored report's period.",
        "# TYPE mailseal_dmarc_last_report_timestamp_seconds gauge",
    ]
    domains = store.domains()
    for domain in domains[:MAX_SERIES]:
        totals = store.totals(domain=domain)
        if totals.last_report is not None:
            out.append(
                f"mailseal_dmarc_last_report_timestamp_seconds{_labels({'domain': domain})} {totals.last_report}"
            )
    out += [
        "# HELP mailseal_dmarc_reports Reports stored.",
        "# TYPE mailseal_dmarc_reports gauge",
        f"mailseal_dmarc_reports {store.totals().reports}",
        "# HELP mailseal_dmarc_quarantined Inputs kept in quarantine (recent, up to 1000).",
        "# TYPE mailseal_dmarc_quarantined gauge",
        f"mailseal_dmarc_quarantined {len(store.quarantined(1000))}",
    ]
    return "\n".join(out) + "\n"
