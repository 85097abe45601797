"""``mailseal reports fetch``: read reports from an IMAP mailbox over TLS (see mailseal.reports.fetch)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``reports fetch`` (not yet built on this branch)."""
    del sub, common
