"""The one fixed clock of the test suite: every test that needs "now" uses this instant."""

from __future__ import annotations

from typing import Final

FIXED_NOW: Final = 1_767_225_600  # 2026-01-01T00:00:00Z
