"""Crash safety against knotd: SIGKILL a real ``keys tick`` process at every step point of a rotation.

The reference run counts the step points of each tick of the scenario in
:mod:`support.keyflow` (before a step commits, after it commits, after its DNS
work). Then, for every point, a fresh server and store replay the scenario; the
tick holding that point runs in a child process that kills itself there with
SIGKILL. Right after the kill, and after every later tick, no key signs that
knotd does not serve, and once signing has begun some key always signs. The
next tick (same time) must carry on, and the rotation must end where the
uninterrupted one ends. The kills run against both stores (SQLite and
PostgreSQL, ``store_backend``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import mailseal
from mailseal.keys.backends import open_store
from mailseal.keys.config import load_config
from mailseal.keys.rotation import Step
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import KeyState
from support.clock import FIXED_NOW
from support.dnsserver import knot_available
from support.keyflow import DOMAIN, assert_signing_is_safe, rotation_scenario
from support.knotkeys import KeysSetup, keys_setup
from support.memdns import FakeClock
from support.required import needs
from support.stores import StoreBackend

pytestmark = [
    pytest.mark.integration,
    needs(knot_available(), "knotd", "apt-get install knot knot-dnsutils"),
]

SRC = Path(mailseal.__file__).parents[1]
TESTS = Path(__file__).parents[1]
POINTS_PER_TICK = [5, 2, 7, 2, 5, 5, 0]  # see test_reference_run_counts_the_step_points


def on_backend(setup: KeysSetup, backend: StoreBackend) -> None:
    """Point the setup's configuration at ``backend`` (a PostgreSQL database; SQLite stays in its folder)."""
    if backend.name == "postgresql":
        text = setup.config.read_text()
        text = re.sub(
            r'(?m)^store = ".*"$', f'store = "{backend.location}"\nkek_file = "{backend.kek_file}"', text
        )
        setup.config.write_text(text)


def check_safe(setup: KeysSetup, *, must_sign: bool) -> bool:
    """The invariants, read from the store as the milter would and from knotd; returns whether any key signs."""
    config = load_config(setup.config)
    store = open_store(config.store, readonly=True, kek_file=config.kek_file)
    try:
        assert_signing_is_safe(store, lambda name: [setup.served(name)], must_sign=must_sign)
        return bool(store.signing_keys(DOMAIN))
    finally:
        store.close()


def final_state(setup: KeysSetup) -> dict[str, tuple[KeyState, bool]]:
    config = load_config(setup.config)
    store = open_store(config.store, readonly=True, kek_file=config.kek_file)
    try:
        return {e.selector: (e.state, e.confirmed_at is not None) for e in store.entries(DOMAIN)}
    finally:
        store.close()


def test_reference_run_counts_the_step_points(tmp_path: Path) -> None:
    from mailseal.keys.lifecycle import lifecycle_from_config

    with keys_setup(tmp_path) as setup:
        setup.cli("generate", DOMAIN, "--selector", "first", now=FIXED_NOW)
        config = load_config(setup.config)
        store = SqliteKeyStore(config.store)
        counts: list[int] = []
        now = FIXED_NOW
        for moment in rotation_scenario():
            now += moment.advance
            points: list[str] = []

            def hook(point: str, step: Step, seen: list[str] = points) -> None:
                seen.append(point)

            clock = FakeClock(now)
            lifecycle_from_config(config, store, clock=clock, out=sys.stdout, hook=hook).tick()
            counts.append(len(points))
        store.close()
        assert counts == POINTS_PER_TICK
        assert final_state(setup) == {"first": (KeyState.REMOVED, True), "ms2026q2": (KeyState.ACTIVE, True)}


@pytest.mark.parametrize("kill_at", range(1, sum(POINTS_PER_TICK) + 1))
def test_sigkill_at_any_step_point_is_completed_by_the_next_tick(
    tmp_path: Path, kill_at: int, store_backend: StoreBackend
) -> None:
    with keys_setup(tmp_path) as setup:
        on_backend(setup, store_backend)
        setup.cli("generate", DOMAIN, "--selector", "first", now=FIXED_NOW)
        now = FIXED_NOW
        before = 0
        signing = False
        for moment, points in zip(rotation_scenario(), POINTS_PER_TICK, strict=True):
            now += moment.advance
            if before < kill_at <= before + points:
                child = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "support.crashtick",
                        str(setup.config),
                        str(now),
                        str(kill_at - before),
                    ],
                    env={**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}"},
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert child.returncode == -signal.SIGKILL, (child.stdout, child.stderr)
                assert "killing at" in child.stdout
                signing = check_safe(setup, must_sign=signing) or signing  # right after the kill
            before += points
            status, out, err = setup.cli("tick", now=now)  # the next tick (for the killed one: same time)
            assert status == 0, (moment.label, out, err)
            signing = check_safe(setup, must_sign=signing) or signing
        assert final_state(setup) == {"first": (KeyState.REMOVED, True), "ms2026q2": (KeyState.ACTIVE, True)}
        assert setup.served(f"first._domainkey.{DOMAIN}") == set()
