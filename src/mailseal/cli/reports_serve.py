"""``mailseal reports serve``: the read-only web page and Prometheus metrics."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``reports serve`` (not yet built on this branch)."""
    del sub, common
