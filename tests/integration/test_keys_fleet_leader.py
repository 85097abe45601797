"""Five hosts tick one PostgreSQL store for thousands of simulated clock steps, killed at random.

What must hold (issue 12): one leader at a time; never two transitions for
one event; never a signing gap, and never a key signing that DNS does not
serve. The hosts are real processes (tests/support/fleet_ticker.py) running
the real ``Lifecycle`` on the real store; SIGKILL gives them no chance to
clean up. DNS and the clock are simulated in the same database, so every host
sees one zone and one time.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from mailseal.core.algorithms import KeyType
from mailseal.keys.kek import add_kek
from mailseal.keys.lifecycle import Lifecycle
from mailseal.keys.pg_store import PgKeyStore
from mailseal.keys.rotation import Generation, Policies
from mailseal.keys.store import STATE_ORDER, KeyState
from support.clock import FIXED_NOW
from support.fleet_ticker import HOUR, POLICY, SIM_SCHEMA, SimZone
from support.keyflow import DOMAIN
from support.postgres import PostgresServer
from support.stores import fresh_pg_dsn

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOSTS = 5
STEPS = 2400  # half an hour each: 50 simulated days, about 25 rotations
STEP = HOUR // 2
KILL_EVERY = 40  # steps between kills, on average


@pytest.fixture
def fleet(pg_cluster: PostgresServer, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    dsn = fresh_pg_dsn(pg_cluster)
    kek = tmp_path / "kek"
    add_kek(kek)
    PgKeyStore(dsn, kek_file=kek).close()  # the schema
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("DROP SCHEMA IF EXISTS sim CASCADE")
        for statement in SIM_SCHEMA:
            db.execute(statement)
        db.execute("INSERT INTO sim.clock (now) VALUES (%s)", (FIXED_NOW,))
    yield dsn, kek


def signing_snapshot(sim: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """The selectors that sign now, each checked against what DNS serves, in one consistent snapshot.

    Keys and zone are read in one REPEATABLE READ transaction: a host moving
    keys between two separate reads would otherwise fake a violation.
    """
    with sim.transaction():
        sim.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        signing = sim.execute(
            "SELECT selector, record_text FROM mailseal.keys WHERE domain = %s AND state = 'active' "
            "AND visible_at IS NOT NULL AND private_sealed IS NOT NULL",
            (DOMAIN,),
        ).fetchall()
        served = {
            (str(name), str(text)) for name, text in sim.execute("SELECT name, text FROM sim.zone").fetchall()
        }
    for selector, record in signing:
        assert (f"{selector}._domainkey.{DOMAIN}", record) in served, (
            f"{selector} signs but DNS does not serve it"
        )
    return [str(selector) for selector, _ in signing]


def spawn(dsn: str, kek: Path, ticker: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "support.fleet_ticker", dsn, str(kek), str(ticker)],
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT / 'tests'}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def test_five_tickers_one_leader_no_double_transition_no_signing_gap(fleet: tuple[str, Path]) -> None:
    dsn, kek = fleet
    with (
        psycopg.connect(dsn, autocommit=True) as sim,
        contextlib.closing(PgKeyStore(dsn, kek_file=kek)) as driver,
    ):
        zone = SimZone(sim)
        Lifecycle(
            driver,
            publisher_for=lambda _d: zone,
            observer=zone,
            policies=Policies(POLICY),
            clock=lambda: FIXED_NOW,
        ).generate(Generation(DOMAIN, KeyType.ED25519, 256, "first"))
        rng = random.Random(12)
        hosts = [spawn(dsn, kek, i) for i in range(HOSTS)]
        kills = 0
        signing = False
        started = time.monotonic()
        try:
            for step in range(STEPS):
                sim.execute("UPDATE sim.clock SET now = now + %s", (STEP,))
                time.sleep(0.004)  # the hosts tick meanwhile (each every 2-10 ms)
                now_signing = signing_snapshot(sim)
                assert now_signing or not signing, f"signing gap at step {step}"
                signing = signing or bool(now_signing)
                if rng.random() < 1 / KILL_EVERY:
                    victim = rng.randrange(HOSTS)
                    os.killpg(hosts[victim].pid, signal.SIGKILL)
                    hosts[victim].wait()
                    victim_err = hosts[victim].stderr
                    if victim_err is not None:
                        victim_err.close()
                    hosts[victim] = spawn(dsn, kek, victim)
                    kills += 1
                for i, host in enumerate(hosts):
                    assert host.poll() is None, (
                        f"host {i} exited at step {step}: {host.stderr.read().decode(errors='replace') if host.stderr else ''}"
                    )
            time.sleep(0.5)  # let the last steps settle, then check again
            assert signing_snapshot(sim), "signing gap at the end"
        finally:
            for host in hosts:
                if host.poll() is None:
                    os.killpg(host.pid, signal.SIGKILL)
                host.wait()
                if host.stderr is not None:
                    host.stderr.close()
        elapsed = time.monotonic() - started

        violations = sim.execute("SELECT what FROM sim.violations ORDER BY at").fetchall()
        assert violations == [], violations
        leaders = sim.execute("SELECT DISTINCT ticker FROM sim.ticks WHERE steps > 0").fetchall()
        assert len(leaders) >= 2, "leadership never moved between hosts"
        assert kills >= STEPS // KILL_EVERY // 2

        entries = driver.entries(DOMAIN)
        for entry in entries:
            history = driver.history(entry.id)
            states = [t.to_state for t in history]
            # One transition per event: each state entered once, in the only order there is, each from the last.
            assert states == sorted(set(states), key=STATE_ORDER.index), (entry.selector, states)
            assert [t.from_state for t in history[1:]] == states[:-1]
            if KeyState.REMOVED in states:
                assert KeyState.ACTIVE in states, (
                    f"{entry.selector} was withdrawn: a second successor was generated"
                )
        generated = [e.created_at for e in entries]
        assert len(set(generated)) == len(generated)
        assert POLICY.rotate_every is not None
        rotations = (STEPS * STEP) // POLICY.rotate_every
        # Never more successors than rotations fell due (a second leader would generate twice); the
        # hosts may lag behind the simulated clock on a loaded machine, so fewer is fine.
        assert rotations // 3 <= len(entries) - 1 <= rotations, (len(entries), rotations)
        active = [e for e in entries if e.state is KeyState.ACTIVE]
        assert len(active) == 1
        print(f"{STEPS} steps, {len(entries)} keys, {kills} kills, {elapsed:.1f}s")
