"""Which key store a ``store =`` setting names, and opening it: a SQLite file or a PostgreSQL database.

``store`` takes a path (the embedded SQLite store) or a PostgreSQL
connection: a ``postgresql://`` (or ``postgres://``) URL, or a libpq
``service=NAME`` (defined in pg_service.conf, so no password sits in mailseal's
files). The PostgreSQL backend, and with it psycopg, is imported only when a
database is named: a single host never needs the driver.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mailseal.errors import KeyStoreError, UsageError
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import KeyStore

__all__ = ["StoreLocation", "describe", "is_database", "open_store", "parse_location"]

StoreLocation = Path | str
"""A SQLite file (``Path``) or a PostgreSQL connection string (``str``)."""

# A libpq URL, or libpq keyword=value pairs ("service=mail", "host=db dbname=keys password=..."):
# a string that starts like a keyword pair is never taken for a file name (it may hold a password).
_DATABASE: Final = re.compile(r"\A(?:postgres(?:ql)?://|[A-Za-z_]+\s*=)", re.IGNORECASE)
_OTHER_URL: Final = re.compile(r"\A[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def is_database(text: str | Path) -> bool:
    """Whether a ``store`` value names a PostgreSQL database rather than a file."""
    return isinstance(text, str) and bool(_DATABASE.match(text.strip()))


def parse_location(text: str, base: Path | None = None) -> StoreLocation:
    """A ``store`` setting as a location: a database string kept as is, a path made absolute against ``base``."""
    if is_database(text):
        text = text.strip()
        if text.lower().startswith("postgres"):
            try:
                urlsplit(text).port  # noqa: B018 - parses host and port: a bad URL is said now, not as a traceback later
            except ValueError as exc:
                why = (
                    "the port must be a number from 0 to 65535"
                    if "port" in str(exc).lower()
                    else "its host part cannot be read"
                )
                raise UsageError(f"store {describe(text)} is not a valid PostgreSQL URL: {why}") from None
        return text
    if _OTHER_URL.match(text):
        raise UsageError(
            f"store {text.split(':', 1)[0]}://…: a key store is a file path, a postgresql:// URL"
            " or service=NAME"
        )
    path = Path(text).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return path


_SECRET_KEYS: Final = frozenset({"password", "sslpassword"})
_KEYWORD: Final = re.compile(r"([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'?|\S*)")


def describe(location: StoreLocation) -> str:
    """The location for messages: a path, or the connection without its password.

    Both secrets libpq takes inline go (``password`` and ``sslpassword``, in
    any letter case, quoted or not), and so does any word that is not a
    ``key=value`` pair; a URL that cannot be parsed is not shown.
    """
    if isinstance(location, Path):
        return str(location)
    text = location.strip()
    if not text.lower().startswith(
        "postgres"
    ):  # keyword=value pairs; stray words (a password's tail) are dropped
        return " ".join(
            f"{key}={'***' if key.lower() in _SECRET_KEYS else value}"
            for key, value in _KEYWORD.findall(text)
        )
    try:
        parts = urlsplit(text)
    except ValueError:
        return f"{text.split(':', 1)[0]}://(a URL that cannot be parsed)"
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query = urlencode([(k, "***" if k.lower() in _SECRET_KEYS else v) for k, v in parse_qsl(parts.query)])
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def open_store(
    location: StoreLocation,
    *,
    readonly: bool = False,
    timeout: float = 5.0,
    kek_file: Path | None = None,
) -> KeyStore:
    """Open the store ``location`` names; :class:`KeyStoreError` (with the fix) when it cannot be."""
    if isinstance(location, Path):
        return SqliteKeyStore(location, readonly=readonly, timeout=timeout)
    try:
        from mailseal.keys.pg_store import PgKeyStore
    except ImportError as exc:
        raise KeyStoreError(
            f"the key store {describe(location)} is a PostgreSQL database, and the PostgreSQL driver is "
            f"missing ({exc}); install it with: pip install 'mailseal[postgresql]'"
        ) from None
    return PgKeyStore(
        location, kek_file=kek_file, readonly=readonly, timeout=timeout, connect_timeout=timeout
    )
