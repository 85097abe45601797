"""Shared fixtures: keys made once per session, a fixed clock, in-memory DNS."""

from __future__ import annotations

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


# The key store backends (SQLite, and a private PostgreSQL cluster started once per session).
from support.stores import pg_cluster, store_backend  # noqa: E402, F401 - shared fixtures
