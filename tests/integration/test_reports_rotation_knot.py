"""Rotation feedback end to end: a rotation on a real Knot, gated on DMARC reports made by the test.

The old key's revocation waits until reports show the new selector passing at
three receivers, then proceeds; a second domain shows the deadline letting a
revocation through with a warning; an old selector still seen after its
retirement is flagged by ``reports summary``; ``keys check`` quotes the reports.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from mailseal.cli.main import main
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import KeyState
from support.clock import FIXED_NOW
from support.dmarc_reports import DAY, Row, Sig, Spec, report_xml
from support.dnsserver import knot_available
from support.keyflow import DOMAIN, rotation_scenario
from support.knotkeys import KeysSetup, keys_setup
from support.required import needs

pytestmark = [
    pytest.mark.integration,
    needs(knot_available(), "knotd", "apt-get install knot knot-dnsutils"),
]


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[KeysSetup]:
    with keys_setup(tmp_path, "") as ready:
        yield ready


def _reports(*args: str, store: Path, now: int) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(["reports", args[0], "--store", str(store), "--now", str(now), *args[1:]])
    return status, out.getvalue(), err.getvalue()


def _state(setup: KeysSetup, selector: str) -> tuple[KeyState, int | None, int | None]:
    store = SqliteKeyStore(setup.store)
    try:
        entry = store.entry(DOMAIN, selector)
        assert entry is not None
        return entry.state, entry.activated_at, entry.retired_at
    finally:
        store.close()


def _ingest(tmp_path: Path, store: Path, now: int, *specs: Spec) -> None:
    paths = []
    for n, spec in enumerate(specs):
        path = tmp_path / f"report-{now}-{n}.xml"
        path.write_bytes(report_xml(spec))
        paths.append(str(path))
    status, out, err = _reports("ingest", *paths, store=store, now=now)
    assert status == 0, out + err


def test_revocation_waits_for_reports_then_proceeds_and_late_old_selector_is_flagged(
    setup: KeysSetup, tmp_path: Path
) -> None:
    reports = tmp_path / "reports.db"
    gate = ["--reports-receivers", "3", "--reports-store", str(reports), "--reports-deadline", "10d"]
    assert setup.cli("generate", DOMAIN, "--selector", "first", now=FIXED_NOW)[0] == 0
    moments = rotation_scenario()
    now = FIXED_NOW
    for moment in moments[:4]:  # up to: successor active, first retiring
        now += moment.advance
        status, out, err = setup.cli("tick", now=now)
        assert status == 0, (moment.label, out, err)
    state, _, retired_at = _state(setup, "first")
    new_state, activated_at, _ = _state(setup, "ms2026q2")
    assert (state, new_state) == (KeyState.RETIRING, KeyState.ACTIVE)
    assert activated_at is not None and retired_at is not None

    # Reports from two receivers only, so far; an empty store must exist for the gate.
    day = activated_at + DAY
    _ingest(
        tmp_path,
        reports,
        day,
        *(
            Spec(
                reporter=r,
                report_id=f"{r}-1",
                domain=DOMAIN,
                begin=day,
                rows=[Row(count=40, header_from=DOMAIN, sigs=[Sig(DOMAIN, "ms2026q2")])],
            )
            for r in ("google.com", "Outlook.com")
        ),
    )
    now += moments[4].advance  # grace over
    status, out, err = setup.cli("tick", *gate, now=now)
    assert status == 0, out + err
    assert "waiting for DMARC reports: ms2026q2 seen passing at 2 of 3 receivers" in out
    assert _state(setup, "first")[0] is KeyState.RETIRING
    assert setup.served(f"first._domainkey.{DOMAIN}") != {"v=DKIM1; k=ed25519; p="}

    # A third receiver; and a report showing the old selector still in use after retirement.
    late = retired_at + 3 * DAY
    _ingest(
        tmp_path,
        reports,
        now,
        Spec(
            reporter="yahoo.com",
            report_id="y-1",
            domain=DOMAIN,
            begin=late,
            rows=[Row(count=5, header_from=DOMAIN, sigs=[Sig(DOMAIN, "ms2026q2")])],
        ),
        Spec(
            reporter="fastmail.com",
            report_id="f-1",
            domain=DOMAIN,
            begin=late,
            rows=[Row(count=2, header_from=DOMAIN, sigs=[Sig(DOMAIN, "first")])],
        ),
    )
    status, out, err = setup.cli("tick", *gate, now=now + 60)
    assert status == 0, out + err
    assert (
        "reports show ms2026q2 passing at 3 receivers (Outlook.com, google.com, yahoo.com): revoking" in out
    )
    assert _state(setup, "first")[0] is KeyState.REVOKED
    store = SqliteKeyStore(setup.store)
    first = store.entry(DOMAIN, "first")
    store.close()
    assert first is not None
    assert setup.served(f"first._domainkey.{DOMAIN}") == {first.revoked_text}

    status, out, _ = _reports("summary", "--keys-store", str(setup.store), store=reports, now=now + 60)
    assert status == 0
    assert "warning [retired-selector-seen] first was retired on" in out
    status, out, _ = setup.cli("check", DOMAIN, "ms2026q2", "--reports-store", str(reports), now=now + 60)
    assert "reports: 85 messages signed with ms2026q2, 100.0% DKIM pass, passing at 3 receivers" in out
    status, out, _ = _reports(
        "summary", "--json", "--keys-store", str(setup.store), store=reports, now=now + 60
    )
    rows = {(r["selector"], r["receiver"]): r for r in json.loads(out)["rows"]}
    assert rows[("ms2026q2", "yahoo.com")]["known_selector"] is True
    assert rows[("first", "fastmail.com")]["known_selector"] is True


def test_the_deadline_lets_a_stalled_revocation_through_with_a_warning(
    setup: KeysSetup, tmp_path: Path
) -> None:
    reports = tmp_path / "reports.db"
    _ingest(
        tmp_path,
        reports,
        FIXED_NOW,
        Spec(reporter="google.com", report_id="old", domain=DOMAIN, begin=FIXED_NOW - 100 * DAY),
    )
    gate = ["--reports-receivers", "3", "--reports-store", str(reports), "--reports-deadline", "10d"]
    setup.cli("generate", DOMAIN, "--selector", "first", now=FIXED_NOW)
    now = FIXED_NOW
    moments = rotation_scenario()
    for moment in moments[:5]:
        now += moment.advance
        setup.cli("tick", *gate, now=now)
    assert _state(setup, "first")[0] is KeyState.RETIRING  # grace is over but no report shows the successor
    _, _, retired_at = _state(setup, "first")
    assert retired_at is not None
    status, out, _ = setup.cli("tick", *gate, now=retired_at + 10 * DAY)
    assert status == 0
    assert "passing at only 0 of 3 receivers, but the reports deadline" in out
    assert _state(setup, "first")[0] is KeyState.REVOKED
