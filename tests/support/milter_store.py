"""Milter configurations whose key table reads the key store, a resolver serving an in-memory zone, and mail to sign."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from mailseal.dns.memory import InMemoryResolver
from support.memdns import MemoryZone
from support.milter_client import MilterClient, Result, apply_actions
from support.milter_harness import ServerThread, toml_string


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


MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: keys from the store\r\n"
    b"Date: Thu, 1 Jan 2026 10:00:00 +0000\r\n"
    b"Message-ID: <store@example.test>\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
)


def send(running: ServerThread) -> tuple[Result, bytes]:
    """One message from a local client (so: signed); the result and the message as delivered."""
    with MilterClient(running.address) as client:
        negotiated = client.negotiate()
        client.macros(b"C", {"j": "mx.test", "daemon_name": "smtpd"})
        client.connect(address="127.0.0.1")
        result = client.send_message(MESSAGE, sender="alice@example.test")
    return result, apply_actions(MESSAGE, result, leading_space=negotiated.leading_space)


def signatures(result: Result) -> set[tuple[str, str]]:
    """(s=, a=) of each DKIM-Signature the milter added."""
    found = set()
    for action in result.inserted("DKIM-Signature"):
        tags = dict(
            tag.split(b"=", 1) for tag in re.sub(rb"\s+", b"", action.value).split(b";") if b"=" in tag
        )
        found.add((tags[b"s"].decode(), tags[b"a"].decode()))
    return found


def loaded_selectors(running: ServerThread) -> set[str]:
    return {key.selector for keys in running.server.runtime.keyset.keys.values() for key in keys}
