"""Shared fixtures: keys made once per session; the rule for required tools.

The fixed clock is ``support.clock.FIXED_NOW``; fixtures for the key store, a
fake clock and an in-memory zone are in ``support/fixtures.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailseal import PrivateKey, generate_private_key
from mailseal.core.algorithms import KeyType
from support.required import MISSING_MARK

pytest_plugins = ["support.fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MISSING_MARK}(reason): a required tool is missing (support.required)"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Fail, never skip, a test whose tool is missing while MAILSEAL_REQUIRE_PEERS is set."""
    for mark in item.iter_markers(MISSING_MARK):
        pytest.fail(str(mark.args[0]), pytrace=False)


@pytest.fixture(scope="session")
def rsa_key() -> PrivateKey:
    return generate_private_key(KeyType.RSA, 2048)


@pytest.fixture(scope="session")
def ed_key() -> PrivateKey:
    return generate_private_key(KeyType.ED25519)


SYSTEM_STORE_FOLDER = Path("/var/lib/mailseal")


@pytest.fixture(autouse=True)
def _no_system_key_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that forgets --store must not touch root's default, /var/lib/mailseal/keys.db."""
    for where in ("mailseal.keys.config", "mailseal.cli.reports"):
        monkeypatch.setattr(f"{where}.default_store_path", lambda: tmp_path / "default-data" / "keys.db")


@pytest.fixture(autouse=True, scope="session")
def _system_key_store_untouched() -> Iterator[None]:
    """The suite leaves the machine as it found it (subprocesses included): fail if it made the folder."""
    existed = SYSTEM_STORE_FOLDER.exists()
    yield
    assert existed or not SYSTEM_STORE_FOLDER.exists(), f"a test created {SYSTEM_STORE_FOLDER}"


@pytest.fixture(autouse=True)
def _fresh_log_throttle() -> Iterator[None]:
    """Each test starts with an unthrottled milter log (the throttle is per process)."""
    from mailseal.milter.logline import throttle

    throttle.reset()
    yield
    throttle.reset()


# The key store backends (SQLite, and a private PostgreSQL cluster started once per session).
from support.stores import kek, pg_cluster, store_backend  # noqa: E402, F401 - shared fixtures
