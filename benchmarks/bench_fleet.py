"""The fleet key store: per-message key lookup (PostgreSQL vs SQLite), queries per host, time to a new key.

    python benchmarks/bench_fleet.py [--seconds 30] [--rounds 3] [--interval 5]

Starts a private PostgreSQL cluster (as tests/support/postgres.py does) and
measures, in one run so the numbers compare:

1. Per-message key lookup, cache hit: what a milter worker does for each
   message once its keys are loaded (the ``KeySet`` of a load from each
   backend), and, for scale, what one uncached ``signing_keys()`` query costs
   on each backend.
2. Database queries per host per minute in steady state: a real
   ``mailseal milter`` (2 workers, ``key_check_interval`` as given) on the
   PostgreSQL store for ``--seconds``; its statements are counted in the
   server's own statement log (``log_statement = all``, by application name).
3. Time from activation to every milter signing with the new key: two milter
   processes (two hosts, 2 workers each) on the store; a key is activated the
   way ``keys tick`` commits it; the clock stops when every worker has logged
   its reload to the new key.

Medians and ratios are what to quote (hosts differ several-fold in speed).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import generate_private_key
from mailseal.keys.fleet_source import DatabaseKeySource
from mailseal.keys.kek import add_kek
from mailseal.keys.lifecycle import records_for
from mailseal.keys.pg_store import PgKeyStore
from mailseal.keys.source import StoreKeyEntry, StoreKeySource
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import Change, KeyState, KeyStore, NewKey
from support.milter_process import MilterProcess
from support.milter_store import store_tables
from support.postgres import PostgresServer, postgres_bin

DOMAIN = "example.com"
T0 = 1_767_225_600


def add_active(store: KeyStore, selector: str, at: int) -> None:
    """Add a key and activate it, retiring the domain's active key, in the transaction a tick uses."""
    key = generate_private_key(KeyType.ED25519)
    record, revoked = records_for(key.key_type, key.public_key_b64())
    entry = store.add(NewKey(DOMAIN, selector, key.key_type, key.bits, key.to_pem(), record, revoked, at))
    changes = [
        Change.to(e, state=KeyState.RETIRING, retired_at=at)
        for e in store.entries(DOMAIN)
        if e.state is KeyState.ACTIVE
    ]
    changes.append(Change.to(entry, state=KeyState.ACTIVE, published_at=at, visible_at=at, activated_at=at))
    store.apply(changes)


def per_call(statement: object, number: int, repeat: int = 7) -> float:
    """Median seconds per call."""
    return statistics.median(t / number for t in timeit.repeat(statement, number=number, repeat=repeat))  # type: ignore[arg-type]


def lookups(folder: Path, dsn: str, kek: Path) -> None:
    sqlite_path = folder / "keys.db"
    sqlite = SqliteKeyStore(sqlite_path)
    pg = PgKeyStore(dsn, kek_file=kek)
    for store in (sqlite, pg):
        add_active(store, "s1", T0)
    entries = [StoreKeyEntry("example", DOMAIN)]
    sets = {
        "SQLite": StoreKeySource(sqlite_path, entries).load(),
        "PostgreSQL": DatabaseKeySource(dsn, entries, kek_file=kek).load(),
    }
    print("1. Key lookup per message")
    print(f"   {'':34} {'SQLite':>12} {'PostgreSQL':>12} {'PG/SQLite':>10}")
    hit: dict[str, list[float]] = {name: [] for name in sets}
    for _ in range(5):  # interleaved: the two are the same dictionary lookup, so noise shows as a ratio off 1
        for name, keyset in sets.items():
            hit[name].append(per_call(lambda keyset=keyset: keyset.lookup("example"), 200_000, repeat=3))
    hit = {name: [statistics.median(times)] for name, times in hit.items()}
    print(
        f"   {'cache hit (what each message does)':34} {hit['SQLite'][0] * 1e9:10.0f}ns "
        f"{hit['PostgreSQL'][0] * 1e9:10.0f}ns {hit['PostgreSQL'][0] / hit['SQLite'][0]:10.2f}"
    )
    query = {
        "SQLite": per_call(lambda: sqlite.signing_keys(DOMAIN), 2000),
        "PostgreSQL": per_call(lambda: pg.signing_keys(DOMAIN), 2000),
    }
    print(
        f"   {'uncached signing_keys() query':34} {query['SQLite'] * 1e6:10.1f}us {query['PostgreSQL'] * 1e6:10.1f}us"
        f" {query['PostgreSQL'] / query['SQLite']:10.2f}"
    )
    sqlite_source = StoreKeySource(sqlite_path, entries)
    pg_source = DatabaseKeySource(dsn, entries, kek_file=kek)
    poll = {"SQLite": per_call(sqlite_source.version, 500), "PostgreSQL": per_call(pg_source.version, 500)}
    print(
        f"   {'change check (every interval)':34} {poll['SQLite'] * 1e6:10.1f}us {poll['PostgreSQL'] * 1e6:10.1f}us"
        f" {poll['PostgreSQL'] / poll['SQLite']:10.2f}"
    )
    sqlite.close()
    pg.close()


def milter_config(folder: Path, dsn: str, kek: Path, interval: float, workers: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "milter.toml"
    tables = store_tables(
        DOMAIN,
        socket_spec="inet:0@127.0.0.1",
        key_check_interval=interval,
        milter_settings=f"workers = {workers}",
    )
    path.write_text(f'[keys]\nstore = "{dsn}"\nkek_file = "{kek}"\n' + tables)
    return path


def queries_per_minute(
    folder: Path, server: PostgresServer, kek: Path, seconds: float, interval: float
) -> None:
    dsn = server.create_database("steady")
    store = PgKeyStore(dsn, kek_file=kek)
    add_active(store, "s1", T0)
    store.close()
    config = milter_config(folder / "steady", dsn, kek, interval, 2)
    with MilterProcess(["--config", str(config)]) as milter:
        time.sleep(interval + 1.5)  # started, workers forked and connected (at their first check)
        mark = server.log_path.stat().st_size
        time.sleep(seconds)
        text = server.log_path.read_bytes()[mark:].decode(errors="replace")
        milter.stop()
    logged = re.findall(r"(?m)^db=steady app=mailseal .*(?:statement|execute [^:]*): (.*)$", text)
    statements = sum(1 for sql in logged if sql.startswith("SELECT domain, id"))
    other = len(logged) - statements
    per_minute = (statements + other) * 60 / seconds
    print(f"2. Queries per host per minute, steady state (2 workers, key_check_interval = {interval:g}s)")
    print(f"   measured over {seconds:g}s: {statements} change checks + {other} other statements")
    print(
        f"   = {per_minute:.1f} per minute (one indexed SELECT per worker per interval: {2 * 60 / interval:.0f})"
    )


def activation_latency(folder: Path, server: PostgresServer, kek: Path, rounds: int, interval: float) -> None:
    dsn = server.create_database("latency")
    store = PgKeyStore(dsn, kek_file=kek)
    add_active(store, "s0", T0)
    hosts = [
        MilterProcess(["--config", str(milter_config(folder / f"host{i}", dsn, kek, interval, 2))])
        for i in range(2)
    ]
    times = []
    try:
        time.sleep(1.0)
        for n in range(1, rounds + 1):
            marks = [h.mark() for h in hosts]
            started = time.monotonic()
            add_active(store, f"s{n}", T0 + n)
            for host, mark in zip(hosts, marks, strict=True):
                seen: set[str] = set()
                position = mark
                while len(seen) < 2:
                    line = host.wait_for(rf"signing with {DOMAIN}/s{n}\b", 3 * interval + 5, start=position)
                    if line is None:
                        raise RuntimeError(f"a worker did not pick up s{n}:\n{host.log}")
                    position = host.lines.index(line, position) + 1
                    pid = re.search(r"mailseal\[(\d+)\]", line)
                    seen.add(pid.group(1) if pid else line)
            times.append(time.monotonic() - started)
            time.sleep(interval * 0.37)  # do not always activate at the same phase of the check timer
    finally:
        for host in hosts:
            host.stop()
        store.close()
    print(
        f"3. Activation -> every milter signing with the new key (2 hosts x 2 workers, interval {interval:g}s)"
    )
    print(
        f"   {rounds} rounds: median {statistics.median(times):.2f}s, max {max(times):.2f}s "
        f"(bound: key_check_interval = {interval:g}s plus one reload)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="steady-state window (default 30)")
    parser.add_argument("--rounds", type=int, default=3, help="activations timed (default 3)")
    parser.add_argument(
        "--interval", type=float, default=5.0, help="key_check_interval (default 5, as shipped)"
    )
    args = parser.parse_args()
    bindir = postgres_bin()
    if bindir is None:
        print("PostgreSQL is not installed (apt-get install postgresql)", file=sys.stderr)
        return 1
    settings = {"log_statement": "all", "log_line_prefix": "db=%d app=%a "}
    with (
        tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp,
        PostgresServer(bindir, settings) as server,
    ):
        folder = Path(tmp)
        kek = folder / "kek"
        add_kek(kek)
        lookups(folder, server.create_database("lookups"), kek)
        queries_per_minute(folder, server, kek, args.seconds, args.interval)
        activation_latency(folder, server, kek, args.rounds, args.interval)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
