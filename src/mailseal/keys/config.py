"""The ``[keys]`` configuration (TOML): where the store is, how to rotate, how to publish.

One file, ``keys.toml``, or the ``[keys]`` table of a file shared with the
milter: only the ``[keys]`` table is read here, and the milter's own tables
(``[milter]``, ``[key_table.NAME]``, ``[signing_table]``, ...) sit beside it.
The milter reads ``store`` from this table too (see ``docs/milter.md``)::

    [keys]
    store = "/var/lib/mailseal/keys.db"
    rotate_every = "90d"        # durations: 45s, 30m, 12h, 7d, 2w, or seconds
    grace = "7d"
    [keys.publish]
    mode = "update"             # or "manual"
    primary = "192.0.2.53"      # IP[:PORT] of the primary
    zone = "example.com"
    tsig_name = "mailseal-example-com."
    tsig_secret_file = "/etc/mailseal/tsig.key"
    [keys.domains."example.org"]
    rotate_every = "30d"
    [keys.domains."example.org".publish]
    mode = "manual"

TSIG secrets are read from ``tsig_secret_file`` (a base64 line, or the
``key {...}`` block ``tsig-keygen``/``keymgr`` print) or from ``tsig_secret``
in this file; either file must not be readable by group or others.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal

from mailseal.core.algorithms import KeyType
from mailseal.dns.resolver import parse_nameserver
from mailseal.dns.update import TsigCredentials
from mailseal.errors import ConfigError, UsageError
from mailseal.keys.backends import parse_location
from mailseal.keys.rotation import Policies, RotationPolicy
from mailseal.keys.selectors import check_scheme

__all__ = [
    "TABLE_SETTINGS",
    "KeysConfig",
    "PublishConfig",
    "default_config_path",
    "default_store_path",
    "load_config",
    "parse_duration",
]

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION: Final = re.compile(r"\s*(\d+)\s*([smhdw]?)\s*\Z")
_POLICY_KEYS: Final = {
    "rotate_every",
    "grace",
    "propagation_delay",
    "revoked_for",
    "algorithm",
    "bits",
    "selector_scheme",
    "ttl",
}
_PUBLISH_KEYS: Final = {
    "mode",
    "primary",
    "zone",
    "tsig_name",
    "tsig_algorithm",
    "tsig_secret",
    "tsig_secret_file",
    "timeout",
}
_TOP_KEYS: Final = _POLICY_KEYS | {
    "store",
    "kek_file",
    "cache_file",  # the milter's (a PostgreSQL store's keys kept for outages); not used here
    "authoritative",
    "resolvers",
    "timeout",
    "publish",
    "domains",
}
TABLE_SETTINGS: Final = frozenset(_TOP_KEYS)
"""Every setting the ``[keys]`` table may hold (the milter checks names against it in a shared file)."""


@dataclass(frozen=True, slots=True)
class PublishConfig:
    """How a domain's records get into DNS."""

    mode: Literal["update", "manual"] = "manual"
    primary: str | None = None
    zone: str | None = None
    tsig: TsigCredentials | None = None
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class KeysConfig:
    """Everything ``mailseal keys`` needs besides its arguments."""

    store: Path | str
    """A SQLite file, or a PostgreSQL connection string (see :mod:`mailseal.keys.backends`)."""
    policies: Policies = field(default_factory=Policies)
    publish: PublishConfig = field(default_factory=PublishConfig)
    domain_publish: Mapping[str, PublishConfig] = field(default_factory=dict)
    authoritative: tuple[str, ...] | None = None  # None: find the zone's NS servers
    resolvers: tuple[str, ...] | None = None  # None: the system's resolv.conf
    timeout: float = 5.0
    source: Path | None = None
    kek_file: Path | None = None
    """This host's key-encryption key file (private keys in a PostgreSQL store are sealed with it)."""

    def publish_for(self, domain: str) -> PublishConfig:
        """The publishing settings for ``domain``."""
        return self.domain_publish.get(domain.lower().removesuffix("."), self.publish)


def parse_duration(value: object, what: str = "duration") -> int:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise UsageError(f"{what}: expected a duration such as 7d, not {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise UsageError(f"{what}: must not be negative")
        return value
    if isinstance(value, str):
        match = _DURATION.match(value.lower())
        if match:
            return int(match.group(1)) * _UNITS[match.group(2) or "s"]
    raise UsageError(f"{what}: expected a duration such as 45s, 30m, 12h, 7d or 2w, not {value!r}")


def default_store_path() -> Path:
    """``/var/lib/mailseal/keys.db`` for root, else ``$XDG_DATA_HOME/mailseal/keys.db`` (``~/.local/share``)."""
    if os.geteuid() == 0:
        return Path("/var/lib/mailseal/keys.db")
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "mailseal" / "keys.db"


def default_config_path() -> Path | None:
    """``$MAILSEAL_KEYS_CONFIG``, else the first of ``~/.config/mailseal/keys.toml`` and ``/etc/mailseal/keys.toml`` that exists."""
    named = os.environ.get("MAILSEAL_KEYS_CONFIG")
    if named:
        return Path(named)
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    for candidate in (Path(config_home) / "mailseal" / "keys.toml", Path("/etc/mailseal/keys.toml")):
        if candidate.is_file():
            return candidate
    return None


def load_config(path: Path | None) -> KeysConfig:
    """Read ``path`` (``None``: defaults only); :class:`ConfigError` names the file and the setting."""
    if path is None:
        return KeysConfig(store=default_store_path())
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        line = _line_of(str(exc))
        raise ConfigError(f"not valid TOML: {exc}", path=str(path), line=line) from None
    table = document.get("keys", {})
    if not isinstance(table, dict):
        raise ConfigError("[keys] must be a table", path=str(path))
    try:
        return _config(table, path)
    except UsageError as exc:
        raise ConfigError(str(exc), path=str(path)) from None


def _line_of(message: str) -> int | None:
    found = re.search(r"line (\d+)", message)
    return int(found.group(1)) if found else None


def _config(table: dict[str, Any], path: Path) -> KeysConfig:
    _unknown(table, _TOP_KEYS, "keys")
    default = _policy(table, RotationPolicy(), "keys")
    publish = _publish(table.get("publish", {}), PublishConfig(), "keys.publish", path)
    policies: dict[str, RotationPolicy] = {}
    publishers: dict[str, PublishConfig] = {}
    domains = table.get("domains", {})
    if not isinstance(domains, dict):
        raise UsageError("keys.domains must be a table of domain tables")
    for domain, settings in domains.items():
        where = f'keys.domains."{domain}"'
        if not isinstance(settings, dict):
            raise UsageError(f"{where} must be a table")
        _unknown(settings, _POLICY_KEYS | {"publish"}, where)
        name = domain.lower().removesuffix(".")
        policies[name] = _policy(settings, default, where)
        if "publish" in settings:
            publishers[name] = _publish(settings["publish"], publish, f"{where}.publish", path)
    store = table.get("store")
    if store is not None and not isinstance(store, str):
        raise UsageError("keys.store must be a path or a postgresql:// connection")
    store_path: Path | str = default_store_path()
    if store:  # relative paths like tsig_secret_file's, and as the milter reads them
        store_path = parse_location(store, path.parent)
    kek = table.get("kek_file")
    if kek is not None and not isinstance(kek, str):
        raise UsageError("keys.kek_file must be a path")
    return KeysConfig(
        store=store_path,
        kek_file=_kek_path(kek, path.parent),
        policies=Policies(default, policies),
        publish=publish,
        domain_publish=publishers,
        authoritative=_servers(table.get("authoritative"), "keys.authoritative"),
        resolvers=_servers(table.get("resolvers"), "keys.resolvers"),
        timeout=_seconds(table.get("timeout", 5.0), "keys.timeout"),
        source=path,
    )


def _kek_path(value: str | None, base: Path) -> Path | None:
    if not value:
        return None
    kek = Path(value).expanduser()
    return kek if kek.is_absolute() else base / kek


def _unknown(table: Mapping[str, object], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise UsageError(f"{where}: unknown setting {extra[0]!r} (known: {', '.join(sorted(allowed))})")


def _policy(table: Mapping[str, Any], base: RotationPolicy, where: str) -> RotationPolicy:
    changes: dict[str, Any] = {}
    if "rotate_every" in table:
        value = table["rotate_every"]
        changes["rotate_every"] = (
            None if value in ("never", 0) else parse_duration(value, f"{where}.rotate_every")
        )
    for name in ("grace", "propagation_delay", "revoked_for", "ttl"):
        if name in table:
            changes[name] = parse_duration(table[name], f"{where}.{name}")
    if "algorithm" in table:
        try:
            changes["key_type"] = KeyType(str(table["algorithm"]).lower())
        except ValueError:
            raise UsageError(f"{where}.algorithm: use rsa or ed25519, not {table['algorithm']!r}") from None
    if "bits" in table:
        if not isinstance(table["bits"], int) or isinstance(table["bits"], bool):
            raise UsageError(f"{where}.bits must be a number such as 2048")
        changes["bits"] = table["bits"]
    if "selector_scheme" in table:
        changes["selector_scheme"] = check_scheme(str(table["selector_scheme"]))
    return replace(base, **changes)


def _publish(table: object, base: PublishConfig, where: str, path: Path) -> PublishConfig:
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table")
    _unknown(table, _PUBLISH_KEYS, where)
    mode = table.get("mode", "update" if "primary" in table else base.mode)
    if mode not in ("update", "manual"):
        raise UsageError(f"{where}.mode: use update or manual, not {mode!r}")
    primary = table.get("primary", base.primary)
    if primary is not None:
        parse_nameserver(str(primary))
    tsig = base.tsig
    if "tsig_secret" in table or "tsig_secret_file" in table:
        tsig = _tsig(table, where, path)
    elif "tsig_name" in table or "tsig_algorithm" in table:
        raise UsageError(f"{where}: tsig_name needs tsig_secret_file (or tsig_secret)")
    config = PublishConfig(
        mode=mode,
        primary=None if primary is None else str(primary),
        zone=str(table["zone"]) if "zone" in table else base.zone,
        tsig=tsig,
        timeout=_seconds(table.get("timeout", base.timeout), f"{where}.timeout"),
    )
    if config.mode == "update" and config.primary is None:
        raise UsageError(f'{where}: mode update needs primary = "IP[:PORT]"')
    return config


def _tsig(table: Mapping[str, Any], where: str, path: Path) -> TsigCredentials:
    name = table.get("tsig_name")
    algorithm = table.get("tsig_algorithm")
    if "tsig_secret" in table:
        refuse_readable(path, "holds a TSIG secret")
        secret = str(table["tsig_secret"])
    else:
        secret_path = Path(str(table["tsig_secret_file"])).expanduser()
        if not secret_path.is_absolute():
            secret_path = path.parent / secret_path
        name_in_file, algorithm_in_file, secret = read_tsig_file(secret_path)
        name = name or name_in_file
        algorithm = algorithm or algorithm_in_file
    if not name:
        raise UsageError(f"{where}: tsig_name is missing")
    return TsigCredentials(str(name), secret, str(algorithm or "hmac-sha256"))


def refuse_readable(path: Path, what: str) -> None:
    """Raise :class:`ConfigError` with the chmod fix when group or others may read ``path``."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from None
    if mode & 0o077:
        raise ConfigError(
            f"{what} but others may read it (mode {mode:04o}); fix with: chmod 600 {path}", path=str(path)
        )


_KEY_NAME: Final = re.compile(r'key\s+"?([^"\s{]+)"?\s*\{')
_KEY_ALGORITHM: Final = re.compile(r"algorithm\s+\"?([A-Za-z0-9-]+)\"?\s*;")
_KEY_SECRET: Final = re.compile(r'secret\s+"([^"]+)"\s*;')


def read_tsig_file(path: Path) -> tuple[str | None, str | None, str]:
    """(name, algorithm, secret) from a base64 line or a ``key "name" { algorithm ...; secret "...";}`` block."""
    refuse_readable(path, "holds a TSIG secret")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:  # a folder, unreadable, gone since the check
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from None
    secret = _KEY_SECRET.search(text)
    if secret is None:
        line = text.strip()
        if not line or any(c.isspace() for c in line):
            raise ConfigError(
                'expected a base64 TSIG secret or a key { ... secret "..."; } block', path=str(path)
            )
        return None, None, line
    name = _KEY_NAME.search(text)
    algorithm = _KEY_ALGORITHM.search(text)
    return (name.group(1) if name else None, algorithm.group(1) if algorithm else None, secret.group(1))


def _servers(value: object, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
        raise UsageError(f'{where} must be a list of "IP[:PORT]" strings')
    for server in value:
        parse_nameserver(server)
    return tuple(value)


def _seconds(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise UsageError(f"{where} must be a positive number of seconds")
    return float(value)
