"""Fixtures the key lifecycle and milter tests share: a key store, a fake clock, a zone.

Loaded for every test by ``pytest_plugins`` in tests/conftest.py (a plugin module
rather than a second conftest.py, which mypy could not tell from the first). A test
module that needs a different one defines its own fixture of the same name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailseal.keys.sqlite_store import SqliteKeyStore
from support.clock import FIXED_NOW
from support.memdns import FakeClock, MemoryZone


@pytest.fixture
def clock() -> FakeClock:
    """A clock that stands at FIXED_NOW until a test advances it."""
    return FakeClock(FIXED_NOW)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    """Where the store lives: a folder that does not exist yet, as on a first run."""
    return tmp_path / "data" / "keys.db"


@pytest.fixture
def store(store_path: Path) -> Iterator[SqliteKeyStore]:
    opened = SqliteKeyStore(store_path)
    yield opened
    opened.close()


@pytest.fixture
def zone() -> MemoryZone:
    """An in-memory zone with a primary and two secondaries that copy it only when told."""
    return MemoryZone(secondaries=2)
