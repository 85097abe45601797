"""Issue 12 contract from the command line: a PostgreSQL database wherever a store path is accepted.

``--store postgresql://…`` and ``--store service=NAME`` on the keys commands, ``store =`` in
the keys configuration, ``--keys-store`` of the reports commands that join with keys, and
``keys migrate`` both ways; against the private cluster of tests/support/postgres.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailseal.keys.kek import add_kek
from support.clock import FIXED_NOW
from support.dmarc_reports import Row, Sig, Spec, report_xml
from support.inprocess_cli import Done, mailseal
from support.postgres import PostgresServer
from support.stores import fresh_pg_dsn


@pytest.fixture
def dsn(pg_cluster: PostgresServer) -> str:
    return fresh_pg_dsn(pg_cluster)


@pytest.fixture
def kek(tmp_path: Path) -> Path:
    path = tmp_path / "kek"
    add_kek(path)
    return path


@pytest.fixture(autouse=True)
def _no_keys_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILSEAL_KEYS_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    # root's default key store is /var/lib/mailseal/keys.db whatever XDG says: keep it out of reach
    for where in ("mailseal.keys.config", "mailseal.cli.reports"):
        monkeypatch.setattr(f"{where}.default_store_path", lambda: tmp_path / "data" / "keys.db")


def keys(*argv: str) -> Done:
    return mailseal("keys", *argv, "--now", str(FIXED_NOW))


def ingest_report(tmp_path: Path, selectors: tuple[str, ...]) -> Path:
    store = tmp_path / "reports.db"
    report = tmp_path / "r.xml"
    sigs = [Sig("example.com", s) for s in selectors]
    report.write_bytes(report_xml(Spec(rows=[Row(count=3, sigs=sigs)])))
    done = mailseal("reports", "ingest", "--store", str(store), "--now", str(FIXED_NOW), str(report))
    assert done.status == 0, done.stderr
    return store


def known(store: Path, *argv: str) -> dict[str | None, object]:
    done = mailseal("reports", "summary", "--store", str(store), "--now", str(FIXED_NOW), "--json", *argv)
    assert done.status == 0, done.stderr
    return {row["selector"]: row["known_selector"] for row in json.loads(done.out)["rows"]}


def test_keys_commands_take_a_postgresql_url_as_store(dsn: str, kek: Path) -> None:
    store = ("--store", dsn, "--kek-file", str(kek))
    done = keys("generate", "example.com", "--selector", "s1", "--algorithm", "ed25519", *store)
    assert done.status == 0, done.stderr
    listed = keys("list", *store)
    assert listed.status == 0
    assert "s1" in listed.out
    record = keys("record", "example.com", "s1", *store)
    assert record.status == 0
    assert "s1._domainkey.example.com" in record.out
    assert "v=DKIM1; k=ed25519; p=" in record.out.replace('" "', "")
    shown = keys("show", "example.com", "s1", "--json", *store)
    assert shown.status == 0
    assert json.loads(shown.out)["selector"] == "s1"
    assert keys("kek", "status", *store).status == 0


def test_a_libpq_service_name_works_as_store(
    dsn: str, kek: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pg_cluster: PostgresServer
) -> None:
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    services = tmp_path / "pg_service.conf"
    services.write_text("[mailkeys]\n" + "".join(f"{k}={v}\n" for k, v in params.items() if v is not None))
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    store = ("--store", "service=mailkeys", "--kek-file", str(kek))
    assert keys("generate", "example.com", "--selector", "svc", "--algorithm", "ed25519", *store).status == 0
    assert "svc" in keys("list", "--store", dsn, "--kek-file", str(kek)).out  # the same database


def test_store_in_the_keys_configuration_and_reports_join(
    dsn: str, kek: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "keys.toml"
    config.write_text(f'[keys]\nstore = "{dsn}"\nkek_file = "{kek}"\n')
    monkeypatch.setenv("MAILSEAL_KEYS_CONFIG", str(config))
    assert keys("generate", "example.com", "--selector", "s1", "--algorithm", "ed25519").status == 0
    assert "s1" in keys("list").out
    reports = ingest_report(tmp_path, ("s1", "stranger"))
    # The configured database is the key store the summary joins with ...
    assert known(reports) == {"s1": True, "stranger": False}
    # ... and --keys-store takes the URL too, also with no configuration at all.
    monkeypatch.delenv("MAILSEAL_KEYS_CONFIG")
    assert known(reports) == {"s1": None, "stranger": None}
    assert known(reports, "--keys-store", dsn) == {"s1": True, "stranger": False}


def test_migrate_to_postgresql_and_back(dsn: str, kek: Path, tmp_path: Path) -> None:
    sqlite = tmp_path / "keys.db"
    assert keys("generate", "example.com", "--selector", "m1", "--store", str(sqlite)).status == 0
    there = mailseal("keys", "migrate", "--from", str(sqlite), "--to", dsn, "--kek-file", str(kek))
    assert there.status == 0, there.stderr
    assert "1 added" in there.out
    again = mailseal("keys", "migrate", "--from", str(sqlite), "--to", dsn, "--kek-file", str(kek))
    assert "1 already the same" in again.out
    back = tmp_path / "back.db"
    home = mailseal("keys", "migrate", "--from", dsn, "--to", str(back), "--kek-file", str(kek))
    assert home.status == 0, home.stderr
    assert "m1" in keys("list", "--store", str(back)).out
