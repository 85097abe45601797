"""Milter tests: each starts with an unthrottled log (the throttle is per process)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailseal.milter.logline import throttle


@pytest.fixture(autouse=True)
def _fresh_throttle() -> Iterator[None]:
    throttle.reset()
    yield
    throttle.reset()
