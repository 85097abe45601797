"""Milter configurations whose key table reads the key store, and a resolver serving an in-memory zone."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mailseal.dns.memory import InMemoryResolver
from support.memdns import MemoryZone
from support.milter_harness import toml_string


def store_tables(
    domain: str,
    *,
    name: str = "example",
    socket_spec: str = "inet:8891@127.0.0.1",
    key_check_interval: float = 0.05,
    milter_settings: str = "",
    extra: str = "",
) -> str:
    """The milter's tables: one store entry for ``domain`` signing everything at it (no ``[keys]`` table)."""
    return f"""
[milter]
socket = {toml_string(socket_spec)}
authserv_id = "mx.test"
key_check_interval = {key_check_interval}
{milter_settings}

[key_table.{name}]
domain = {toml_string(domain)}
store = true

[signing_table]
".{domain}" = [{toml_string(name)}]
{extra}
"""


def write_store_config(
    path: Path,
    store: Path | str,
    domain: str,
    *,
    milter_settings: str = "",
    extra: str = "",
    kek_file: Path | None = None,
    cache_file: Path | None = None,
) -> Path:
    """A milter configuration at ``path``: ``[keys] store`` (a file or a database) and :func:`store_tables`."""
    tables = store_tables(domain, milter_settings=milter_settings, extra=extra)
    keys = f"[keys]\nstore = {toml_string(str(store))}\n"
    if kek_file is not None:
        keys += f"kek_file = {toml_string(str(kek_file))}\n"
    if cache_file is not None:
        keys += f"cache_file = {toml_string(str(cache_file))}\n"
    path.write_text(keys + tables)
    return path


def zone_resolver(zone: MemoryZone) -> InMemoryResolver:
    """What a verifier's resolver would answer now: the primary's TXT records, strings joined."""
    return InMemoryResolver(
        {
            name: [b"".join(strings) for strings in records]
            for name, records in zone.records.items()
            if records
        }
    )


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` every 10 ms until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
