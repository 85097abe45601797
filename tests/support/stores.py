"""Key store backends for parameterized tests: the same suite runs against SQLite and PostgreSQL.

Use ``store_backend`` (a fixture parameterized over both) and ask it for
stores: ``store_backend.open()`` opens a writer, ``open(readonly=True)`` the
milter's view, each on the same store. The PostgreSQL cluster is started once
per test session (:func:`pg_cluster`); each test gets a fresh ``mailseal``
schema and its own key-encryption key file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailseal.keys.backends import StoreLocation, open_store
from mailseal.keys.kek import add_kek
from mailseal.keys.store import KeyStore
from support.postgres import PostgresServer, require_postgres

BACKENDS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class StoreBackend:
    """One backend's store for one test: where it is, and the KEK file its hosts use."""

    name: str
    location: StoreLocation
    kek_file: Path

    def open(self, *, readonly: bool = False, timeout: float = 5.0) -> KeyStore:
        """Open another handle on the same store (another process would do the same)."""
        return open_store(self.location, readonly=readonly, timeout=timeout, kek_file=self.kek_file)

    @property
    def toml(self) -> str:
        """The ``[keys]`` lines naming this store (for configuration files written by tests)."""
        return f"store = {str(self.location)!r}\nkek_file = {str(self.kek_file)!r}\n".replace("'", '"')


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster for the whole session (skipped when PostgreSQL or psycopg is missing)."""
    with PostgresServer(require_postgres()) as server:
        server.create_database("keys")
        yield server


def fresh_pg_dsn(cluster: PostgresServer) -> str:
    """The session database with no ``mailseal`` schema left by an earlier test."""
    import psycopg

    dsn = cluster.dsn("keys")
    with psycopg.connect(dsn, autocommit=True) as db:
        # Sessions a killed test process left behind must not keep holding the rotation lock.
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'keys' AND pid <> pg_backend_pid()"
        )
        db.execute("DROP SCHEMA IF EXISTS mailseal CASCADE")
    return dsn


@pytest.fixture
def kek(tmp_path: Path) -> Path:
    """A fresh key-encryption key file, ``tmp_path/kek`` (mode 0600), for stores that seal private keys."""
    path = tmp_path / "kek"
    add_kek(path)
    return path


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest, tmp_path: Path, kek: Path) -> StoreBackend:
    """The SQLite store in ``tmp_path``, or the session cluster's database (with a KEK file in ``tmp_path``)."""
    if request.param == "sqlite":
        return StoreBackend("sqlite", tmp_path / "state" / "keys.db", kek)
    cluster: PostgresServer = request.getfixturevalue("pg_cluster")
    return StoreBackend("postgresql", fresh_pg_dsn(cluster), kek)
