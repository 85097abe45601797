"""Shared fixtures: keys made once per session, a fixed clock, in-memory DNS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailseal import PrivateKey, generate_private_key
from mailseal.core.algorithms import KeyType

FIXED_NOW = 1_767_225_600  # 2026-01-01T00:00:00Z


@pytest.fixture(scope="session")
def rsa_key() -> PrivateKey:
    return generate_private_key(KeyType.RSA, 2048)


@pytest.fixture(scope="session")
def ed_key() -> PrivateKey:
    return generate_private_key(KeyType.ED25519)


@pytest.fixture(autouse=True)
def _fresh_log_throttle() -> Iterator[None]:
    """Each test starts with an unthrottled milter log (the throttle is per process)."""
    from mailseal.milter.logline import throttle

    throttle.reset()
    yield
    throttle.reset()


# The key store backends (SQLite, and a private PostgreSQL cluster started once per session).
from support.stores import kek, pg_cluster, store_backend  # noqa: E402, F401 - shared fixtures
