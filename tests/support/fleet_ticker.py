"""One host of a simulated fleet: ``keys tick`` in a loop against the shared PostgreSQL store (leader tests).

Usage: ``python -m support.fleet_ticker DSN KEK_FILE TICKER_ID``. Runs until
killed (the test kills hosts at random, with SIGKILL: no cleanup). Shared
through the database, besides the key store itself:

* ``sim.clock``: the simulated time every host's lifecycle reads;
* ``sim.zone``: the DNS zone (what the primary, and so every authoritative
  server, serves), written by the leader's publisher;
* ``sim.leader``: who claims to lead. A host claims it right after getting
  the rotation lock and clears it right before releasing it; at every step a
  leader checks the claim is still its own. A claim whose backend is still
  alive when another host gets the lock means two leaders at once: that is
  written to ``sim.violations``, which the test asserts stays empty.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from mailseal.core.algorithms import KeyType
from mailseal.errors import KeyStoreError
from mailseal.keys.lifecycle import Lifecycle
from mailseal.keys.pg_store import PgKeyStore
from mailseal.keys.rotation import DAY, DnsView, Policies, RotationPolicy, Step
from mailseal.keys.store import KeyEntry, KeyStoreBusyError

HOUR = 3600
POLICY = RotationPolicy(
    rotate_every=2 * DAY,
    grace=12 * HOUR,
    propagation_delay=HOUR,
    revoked_for=6 * HOUR,
    key_type=KeyType.ED25519,
    selector_scheme="f{year}{month}{day}",
    ttl=300,
)
SERVER = "ns1.sim"

SIM_SCHEMA = (
    "CREATE SCHEMA sim",
    "CREATE TABLE sim.clock (one boolean PRIMARY KEY DEFAULT true, now bigint NOT NULL)",
    "CREATE TABLE sim.zone (name text NOT NULL, text text NOT NULL, PRIMARY KEY (name, text))",
    "CREATE TABLE sim.leader (one boolean PRIMARY KEY DEFAULT true, ticker int, backend int)",
    "CREATE TABLE sim.violations (at timestamptz DEFAULT clock_timestamp(), what text NOT NULL)",
    "CREATE TABLE sim.ticks (ticker int NOT NULL, led boolean NOT NULL, steps int NOT NULL)",
)


class SimZone:
    """The zone in ``sim.zone``: a Publisher (idempotent sync) and an Observer (one authoritative server)."""

    primary = "sim-primary"

    def __init__(self, db: psycopg.Connection[Any]) -> None:
        self.db = db

    def texts(self, name: str) -> frozenset[str]:
        rows = self.db.execute("SELECT text FROM sim.zone WHERE name = %s", (name,)).fetchall()
        return frozenset(text for (text,) in rows)

    def sync(self, entry: KeyEntry, *, ttl: int) -> str:
        with self.db.transaction():
            for text in entry.unwanted_texts:
                self.db.execute("DELETE FROM sim.zone WHERE name = %s AND text = %s", (entry.name, text))
            if entry.wanted_text is not None:
                self.db.execute(
                    "INSERT INTO sim.zone (name, text) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (entry.name, entry.wanted_text),
                )
        return "synced"

    def primary_texts(self, name: str) -> frozenset[str] | None:
        return self.texts(name)

    def view(self, name: str, publisher: object) -> DnsView:
        texts = self.texts(name)
        return DnsView(texts, {SERVER: texts})


class ClaimingStore(PgKeyStore):
    """The store, whose rotation lock also claims ``sim.leader`` (and checks nobody else holds it)."""

    def __init__(self, dsn: str, kek_file: Path, ticker: int, sim: psycopg.Connection[Any]) -> None:
        super().__init__(dsn, kek_file=kek_file)
        self.ticker = ticker
        self.sim = sim

    def backend(self) -> int:
        db = self._db
        assert db is not None
        return int(db.info.backend_pid)

    def violation(self, what: str) -> None:
        self.sim.execute("INSERT INTO sim.violations (what) VALUES (%s)", (f"ticker {self.ticker}: {what}",))

    def claim(self) -> None:
        """Take ``sim.leader``: free, ours, or left by a host that died (its backend is gone)."""
        mine = self.backend()
        deadline = time.monotonic() + 10.0  # generous: a loaded host is slow to reap a backend
        while True:
            row = self.sim.execute("SELECT ticker, backend FROM sim.leader").fetchone()
            if row is None or row[1] is None or row[1] == mine:
                break
            alive = self.sim.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (row[1],)).fetchone()
            if alive is None:
                break
            if time.monotonic() > deadline:  # a dead backend leaves pg_stat_activity within milliseconds
                self.violation(f"got the lock while ticker {row[0]} (backend {row[1]}) still leads")
                break
            time.sleep(0.01)
        self.sim.execute(
            "INSERT INTO sim.leader (one, ticker, backend) VALUES (true, %s, %s) "
            "ON CONFLICT (one) DO UPDATE SET ticker = EXCLUDED.ticker, backend = EXCLUDED.backend",
            (self.ticker, mine),
        )

    def check_claim(self) -> None:
        row = self.sim.execute("SELECT ticker, backend FROM sim.leader").fetchone()
        if row is None or row[1] != self.backend():
            self.violation(f"leading, but sim.leader says {row}")

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with super().exclusive():
            self.claim()
            try:
                yield
            finally:
                self.sim.execute(
                    "UPDATE sim.leader SET ticker = NULL, backend = NULL WHERE backend = %s",
                    (self.backend(),),
                )


def main(argv: list[str]) -> int:
    dsn, kek_file, ticker = argv[0], Path(argv[1]), int(argv[2])
    sim = psycopg.connect(dsn, autocommit=True)
    zone = SimZone(sim)
    store = ClaimingStore(dsn, kek_file, ticker, sim)
    steps = 0

    def clock() -> int:
        (now,) = sim.execute("SELECT now FROM sim.clock").fetchone() or (0,)
        return int(now)

    def hook(point: str, step: Step) -> None:
        nonlocal steps
        steps += 1
        store.check_claim()

    lifecycle = Lifecycle(
        store, publisher_for=lambda _d: zone, observer=zone, policies=Policies(POLICY), clock=clock, hook=hook
    )
    print("ready", flush=True)
    rng = random.Random(ticker)
    while True:
        steps = 0
        try:
            report = lifecycle.tick()
            led = True
            if report.errors:
                store.violation(f"tick errors: {report.errors}")
        except KeyStoreBusyError:
            led = False
        except KeyStoreError as exc:  # with one leader no compare-and-set can fail: record it
            store.violation(f"tick failed: {exc}")
            led = False
        if led and steps:
            sim.execute(
                "INSERT INTO sim.ticks (ticker, led, steps) VALUES (%s, %s, %s)", (ticker, led, steps)
            )
        time.sleep(rng.uniform(0.002, 0.01))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
