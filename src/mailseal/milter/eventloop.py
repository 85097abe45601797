"""The event loop a milter process runs on: uvloop when it is installed, else asyncio's own.

uvloop (libuv, written in C) does the per-read and per-write work of a
connection with less Python in between; the milter only uses the portable
``asyncio.Protocol`` interface, so either loop runs the same code. uvloop is an
optional dependency (``pip install 'mailseal[uvloop]'``); docs/benchmarks.md
gives the CPU per message measured with each.

``MAILSEAL_EVENT_LOOP`` chooses: ``auto`` (the default: uvloop if importable),
``uvloop`` (refuse to start without it) or ``asyncio`` (never uvloop, e.g. to
measure both ways or to rule the loop out when chasing a problem).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any

from mailseal.errors import UsageError

ENV = "MAILSEAL_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")

_log = logging.getLogger("mailseal.milter")


def loop_factory(choice: str | None = None) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """The loop's name and a factory for it (None: asyncio's default), from ``choice`` or the environment."""
    wanted = (choice if choice is not None else os.environ.get(ENV, "auto")).strip().lower() or "auto"
    if wanted not in CHOICES:
        raise UsageError(f"{ENV}={wanted!r} is not one of: {', '.join(CHOICES)}")
    if wanted == "asyncio":
        return "asyncio", None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        if wanted == "uvloop":
            raise UsageError(f"{ENV}=uvloop, but uvloop is not installed (pip install uvloop)") from None
        return "asyncio", None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return "uvloop", factory


def run(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(main)`` on the chosen loop (see the module docstring)."""
    try:
        name, factory = loop_factory()
    except UsageError:
        main.close()  # never awaited: say nothing about it, only about the setting
        raise
    _log.debug("event loop: %s", name)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)
