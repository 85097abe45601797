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

The file is read by :mod:`mailseal.configfile`, the milter's reader too:
every problem is reported at once, each with its line, and an unknown
setting with the closest known name.

TSIG secrets are read from ``tsig_secret_file`` (a base64 line, or the
``key {...}`` block ``tsig-keygen``/``keymgr`` print) or from ``tsig_secret``
in this file; either file must not be readable by group or others.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from mailseal.configfile import ConfigProblems, Path_, TableReader, parse_toml
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
    """Read ``path`` (``None``: defaults only); :class:`ConfigProblems` lists every problem with its line."""
    if path is None:
        return KeysConfig(store=default_store_path())
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigProblems(str(path), [(None, f"cannot read: {reason}")]) from None
    data, lines = parse_toml(text, path=str(path))
    r = TableReader(lines, _SCHEMA)
    table = data.get("keys", {})
    if not isinstance(table, dict):
        r.problem(("keys",), "[keys] must be a table")
        table = {}
    config = _config(r, table, path)
    r.raise_problems(str(path))
    return config


_SCHEMA: Final = {
    "keys": frozenset(_TOP_KEYS),
    "publish": frozenset(_PUBLISH_KEYS),
    "domain": frozenset(_POLICY_KEYS | {"publish"}),
}
_T = TypeVar("_T")


def _checked(r: TableReader, at: Path_, check: Callable[[], _T], default: _T) -> _T:
    """``check()``, or ``default`` with its error recorded at ``at`` (the checks raise on the first problem)."""
    try:
        return check()
    except (UsageError, ConfigError) as exc:
        r.problem(at, str(exc))
        return default


def _config(r: TableReader, table: dict[str, Any], path: Path) -> KeysConfig:
    at: Path_ = ("keys",)
    r.table(table, at, "keys")
    default = _policy(r, table, RotationPolicy(), at)
    publish = _publish(r, table.get("publish", {}), PublishConfig(), (*at, "publish"), path)
    policies: dict[str, RotationPolicy] = {}
    publishers: dict[str, PublishConfig] = {}
    domains = r.value(table, at, "domains", dict, {})
    for domain, settings in domains.items():
        where: Path_ = (*at, "domains", domain)
        if not isinstance(settings, dict):
            r.problem(where, f'keys.domains."{domain}" must be a table')
            continue
        r.table(settings, where, "domain")
        name = domain.lower().removesuffix(".")
        policies[name] = _policy(r, settings, default, where)
        if "publish" in settings:
            publishers[name] = _publish(r, settings["publish"], publish, (*where, "publish"), path)
    store = r.value(table, at, "store", str, "")
    store_path: Path | str = default_store_path()
    if store:  # relative paths like tsig_secret_file's, and as the milter reads them
        try:
            store_path = parse_location(store, path.parent)
        except UsageError as exc:  # a malformed URL or another database: a problem with its line
            r.problem((*at, "store"), str(exc))
    kek = r.value(table, at, "kek_file", str, "")
    return KeysConfig(
        store=store_path,
        kek_file=_kek_path(kek, path.parent),
        policies=Policies(default, policies),
        publish=publish,
        domain_publish=publishers,
        authoritative=_servers(r, table, at, "authoritative"),
        resolvers=_servers(r, table, at, "resolvers"),
        timeout=_seconds(r, table, at, "timeout", 5.0),
        source=path,
    )


def _kek_path(value: str | None, base: Path) -> Path | None:
    if not value:
        return None
    kek = Path(value).expanduser()
    return kek if kek.is_absolute() else base / kek


def _policy(r: TableReader, table: Mapping[str, Any], base: RotationPolicy, at: Path_) -> RotationPolicy:
    """``base`` with what ``table`` sets; a bad value is a problem and keeps ``base``'s."""
    where = _name(at)

    def seconds(name: str, current: int) -> int:
        if name not in table:
            return current
        value = _checked(r, (*at, name), partial(parse_duration, table[name], f"{where}.{name}"), -1)
        return value if value >= 0 else current

    rotate_every = base.rotate_every
    if "rotate_every" in table:
        if table["rotate_every"] in ("never", 0):
            rotate_every = None
        else:
            rotate_every = seconds("rotate_every", -1)
            if rotate_every < 0:
                rotate_every = base.rotate_every
    grace = seconds("grace", base.grace)
    propagation_delay = seconds("propagation_delay", base.propagation_delay)
    revoked_for = seconds("revoked_for", base.revoked_for)
    ttl = seconds("ttl", base.ttl)
    key_type = base.key_type
    if "algorithm" in table:
        try:
            key_type = KeyType(str(table["algorithm"]).lower())
        except ValueError:
            r.problem(
                (*at, "algorithm"), f"{where}.algorithm: use rsa or ed25519, not {table['algorithm']!r}"
            )
    bits = base.bits
    if "bits" in table:
        if not isinstance(table["bits"], int) or isinstance(table["bits"], bool):
            r.problem((*at, "bits"), f"{where}.bits must be a number such as 2048")
        else:
            bits = table["bits"]
    selector_scheme = base.selector_scheme
    if "selector_scheme" in table:
        scheme = _checked(
            r, (*at, "selector_scheme"), lambda: check_scheme(str(table["selector_scheme"])), ""
        )
        if scheme:
            selector_scheme = scheme
    return _checked(
        r,
        at,
        lambda: replace(
            base,
            rotate_every=rotate_every,
            grace=grace,
            propagation_delay=propagation_delay,
            revoked_for=revoked_for,
            key_type=key_type,
            bits=bits,
            selector_scheme=selector_scheme,
            ttl=ttl,
        ),
        base,
    )


def _publish(r: TableReader, table: object, base: PublishConfig, at: Path_, path: Path) -> PublishConfig:
    where = _name(at)
    if not isinstance(table, dict):
        r.problem(at, f"{where} must be a table")
        return base
    r.table(table, at, "publish")
    mode = table.get("mode", "update" if "primary" in table else base.mode)
    if mode not in ("update", "manual"):
        r.problem((*at, "mode"), f"{where}.mode: use update or manual, not {mode!r}")
        mode = base.mode
    primary = table.get("primary", base.primary)
    if primary is not None and not _checked(
        r, (*at, "primary"), lambda: parse_nameserver(str(primary)), None
    ):
        primary = None
    tsig = base.tsig
    if "tsig_secret" in table or "tsig_secret_file" in table:
        secret_at = (*at, "tsig_secret" if "tsig_secret" in table else "tsig_secret_file")
        tsig = _checked(r, secret_at, lambda: _tsig(table, where, path), None)
    elif "tsig_name" in table or "tsig_algorithm" in table:
        r.problem((*at, "tsig_name"), f"{where}: tsig_name needs tsig_secret_file (or tsig_secret)")
    config = PublishConfig(
        mode=mode,
        primary=None if primary is None else str(primary),
        zone=str(table["zone"]) if "zone" in table else base.zone,
        tsig=tsig,
        timeout=_seconds(r, table, at, "timeout", base.timeout),
    )
    if config.mode == "update" and config.primary is None and "primary" not in table:
        r.problem(at, f'{where}: mode update needs primary = "IP[:PORT]"')
    return config


def _name(at: Path_) -> str:
    """``keys.domains."example.org".publish``: a table's name as written in the file."""
    return ".".join(f'"{p}"' if "." in str(p) else str(p) for p in at)


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


def _servers(r: TableReader, table: Mapping[str, Any], at: Path_, key: str) -> tuple[str, ...] | None:
    if key not in table:
        return None
    value = table[key]
    where = f"{_name(at)}.{key}"
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
        r.problem((*at, key), f'{where} must be a list of "IP[:PORT]" strings')
        return None
    for server in value:
        if _checked(r, (*at, key), partial(parse_nameserver, server), None) is None:
            return None
    return tuple(value)


def _seconds(r: TableReader, table: Mapping[str, Any], at: Path_, key: str, default: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        r.problem((*at, key), f"{_name(at)}.{key} must be a positive number of seconds")
        return default
    return float(value)
