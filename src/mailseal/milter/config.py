"""The milter's TOML configuration: file -> typed :class:`Config`, every error with its line.

The shared reader (:mod:`mailseal.configfile`, also used for the key
lifecycle's ``[keys]`` table, which a milter configuration may share) gives
each semantic error ("workers must be a whole number") the line of the
offending key, all at once, so ``--check-config`` shows every mistake in one
run; unknown settings are errors too, with a suggestion. See
``docs/milter.md`` for the reference of every setting.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from mailseal.configfile import ConfigProblems as ConfigProblems
from mailseal.configfile import LineIndex as LineIndex
from mailseal.configfile import Path_, TableReader, dotted, parse_toml
from mailseal.core.algorithms import ALGORITHMS, Algorithm
from mailseal.core.canonicalization import Canon
from mailseal.core.identity import is_domain_name, is_selector
from mailseal.core.keypolicy import DEFAULT_MAX_RSA_BITS, MIN_RSA_BITS, RSA_BITS_LIMIT
from mailseal.core.options import DEFAULT_MAX_SIGNATURES, SignOptions, VerifyOptions
from mailseal.errors import UsageError
from mailseal.keys.backends import parse_location
from mailseal.keys.config import TABLE_SETTINGS as KEYS_SETTINGS
from mailseal.keys.source import SENDER_DOMAIN, KeyFileEntry, StoreKeyEntry
from mailseal.milter.actions import FAILURE_DEFAULTS, Failure, FailurePolicy, Requirement, Verdict
from mailseal.milter.routing import DEFAULT_INTERNAL_NETWORKS, RoutingPolicy, parse_networks
from mailseal.milter.runtime import SenderSource
from mailseal.milter.signing_table import PatternError, Rule, SigningTable, parse_rule

DEFAULT_SOCKET: Final = "inet:8891@127.0.0.1"

# -- typed values -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where the milter listens: ``inet:PORT@HOST``, ``inet6:PORT@HOST``, ``unix:/path`` (``local:``)."""

    family: str
    """``inet``, ``inet6`` or ``unix``."""
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.family == "unix":
            return f"unix:{self.path}"
        return f"{self.family}:{self.port}@{self.host}"

    def postfix(self) -> str:
        """The same address in Postfix's ``smtpd_milters`` syntax."""
        if self.family == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"inet:{host}:{self.port}"


def parse_listen(text: str) -> ListenAddress:
    """Parse a socket specification; raises ValueError saying what a good one looks like."""
    kind, colon, rest = text.strip().partition(":")
    kind = kind.lower()
    if not colon or not rest:
        raise ValueError(f"{text!r}: use inet:PORT@HOST (e.g. {DEFAULT_SOCKET}) or unix:/path/to/socket")
    if kind in ("unix", "local"):
        return ListenAddress("unix", path=rest)
    if kind not in ("inet", "inet6"):
        raise ValueError(f"{text!r}: the kind must be inet, inet6, unix or local")
    port_text, at, host = rest.partition("@")
    if not at or not host:
        raise ValueError(
            f"{text!r}: give the address to listen on, e.g. inet:{port_text}@127.0.0.1 "
            f"(this machine only) or inet:{port_text}@0.0.0.0 (every interface)"
        )
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535 (0: any free port)")
    host = host.removeprefix("[").removesuffix("]")
    return ListenAddress(kind, host=host, port=int(port_text))


def parse_http_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``PORT`` (loopback) for the metrics endpoint."""
    text = text.strip()
    host, port_text = "127.0.0.1", text
    if text.startswith("["):
        host, _, port_text = text[1:].partition("]:")
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    if not port_text.isdigit() or not 0 <= int(port_text) < 65536:
        raise ValueError(f"{text!r}: use HOST:PORT, e.g. 127.0.0.1:9120")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class MilterSettings:
    """The ``[milter]`` table: the process, its socket and its privileges."""

    socket: ListenAddress = field(default_factory=lambda: parse_listen(DEFAULT_SOCKET))
    workers: int = 0
    """Worker processes; 0 means one per CPU core."""
    authserv_id: str = ""
    user: str = ""
    group: str = ""
    socket_mode: int = 0o660
    socket_group: str = ""
    metrics: tuple[str, int] | None = None
    log_level: str = "info"
    shutdown_grace: float = 30.0
    key_check_interval: float = 5.0
    """Seconds between checks for changed key files and key store changes; 0 = never."""

    def worker_count(self) -> int:
        """The number of worker processes to run."""
        return self.workers or os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """The ``[limits]`` that bound what one client can hold: connections, time, forged fields.

    Defaults and reasons are in docs/milter.md, "Security: limits and what fails closed".
    """

    max_connections: int = 1000
    """Connections per worker; a new one beyond it displaces the stalest idle one or is refused.
    Lowered at start to fit the descriptor limit."""
    negotiate_timeout: float = 10.0
    """Seconds from accept to a finished option negotiation (an MTA negotiates at once)."""
    message_timeout: float = 600.0
    """Seconds from the first event of a message to its end-of-message reply, however it trickles."""
    connection_lifetime: float = 3600.0
    """Seconds a connection may live; it is closed after that between messages."""
    max_forged_authres: int = 100
    """Received Authentication-Results claiming our authserv-id removed per message; more is a flood."""


@dataclass(frozen=True, slots=True)
class Config:
    """Everything in one configuration file, checked."""

    path: str | None
    milter: MilterSettings
    routing: RoutingPolicy
    sender_source: SenderSource
    sign_options: SignOptions
    keys: tuple[KeyFileEntry, ...]
    """The ``[key_table.NAME]`` entries that name a key file."""
    rules: tuple[Rule, ...]
    verify_options: VerifyOptions
    dns_timeout: float
    nameservers: tuple[str, ...]
    requirements: tuple[Requirement, ...]
    failure: FailurePolicy
    max_header_bytes: int
    idle_timeout: float
    edge: EdgeLimits = field(default_factory=EdgeLimits)
    """Connection, time and forged-field limits (``[limits]``)."""
    key_lines: Mapping[str, int | None] = field(default_factory=dict)
    """The line of each key's ``file =`` (or ``store =``), to point at a key that cannot be loaded."""
    store_keys: tuple[StoreKeyEntry, ...] = ()
    """The ``[key_table.NAME]`` entries with ``store = true``: the domain's keys from the key store."""
    key_store: Path | str | None = None
    """The key store (``[keys] store``): an absolute file path, or a PostgreSQL connection string."""
    key_store_kek: Path | None = None
    """``[keys] kek_file``: this host's key-encryption key file (a PostgreSQL store's keys are sealed)."""
    key_store_cache: Path | None = None
    """``[keys] cache_file``: where the milter keeps the last keys read from a PostgreSQL store."""

    @property
    def key_names(self) -> tuple[str, ...]:
        """Every key table name, file and store entries alike."""
        return (*(k.name for k in self.keys), *(k.name for k in self.store_keys))

    @property
    def authserv_id(self) -> str:
        """The configured authserv-id, or this host's name."""
        return self.milter.authserv_id or socket.getfqdn()

    def table(self) -> SigningTable:
        """The signing table (checked when the configuration was read)."""
        return SigningTable(self.rules)


# -- reading ----------------------------------------------------------------------------------


_SCHEMA: Final[Mapping[str, frozenset[str]]] = {
    "": frozenset(
        {
            "milter",
            "routing",
            "signing",
            "key_table",
            "signing_table",
            "verify",
            "on_failure",
            "limits",
            "keys",  # the key lifecycle's table (mailseal keys); the milter reads its store
        }
    ),
    "milter": frozenset(
        {
            "socket",
            "workers",
            "authserv_id",
            "user",
            "group",
            "socket_mode",
            "socket_group",
            "metrics",
            "log_level",
            "shutdown_grace",
            "key_check_interval",
        }
    ),
    "routing": frozenset({"internal_networks", "sign", "verify", "verify_internal", "sender"}),
    "signing": frozenset({"canonicalization", "headers", "oversign", "expire_after"}),
    "key": frozenset({"domain", "selector", "file", "algorithm", "store"}),
    "keys": KEYS_SETTINGS,
    "verify": frozenset(
        {"dns_timeout", "nameservers", "allow_rsa_sha1", "min_rsa_bits", "max_rsa_bits", "require"}
    ),
    "require": frozenset({"domain", "action"}),
    "on_failure": frozenset(f.value for f in Failure),
    "limits": frozenset(
        {
            "max_header_bytes",
            "max_signatures",
            "idle_timeout",
            "max_connections",
            "negotiate_timeout",
            "message_timeout",
            "connection_lifetime",
            "max_forged_authres",
        }
    ),
}
_LOG_LEVELS: Final = ("debug", "info", "warning", "error")
_Reader = TableReader
_dotted = dotted


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and check a configuration file; raises :class:`ConfigProblems` listing every problem."""
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigProblems(name, [(None, f"cannot read the configuration: {reason}")]) from None
    return parse_config(text, path=name, base=Path(name).resolve().parent)


def parse_config(text: str, *, path: str | None = None, base: Path | None = None) -> Config:
    """Check a configuration text; relative key file paths are taken from ``base``."""
    data, lines = parse_toml(text, path=path)
    reader = TableReader(lines, _SCHEMA)
    config = _build(reader, data, path, base or Path.cwd())
    reader.raise_problems(path)
    return config


def _build(r: _Reader, data: Mapping[str, Any], path: str | None, base: Path) -> Config:
    r.table(data, (), "")
    milter = _milter(r, r.sub(data, (), "milter", "milter"))
    routing, sender = _routing(r, r.sub(data, (), "routing", "routing"))
    sign_options = _signing(r, r.sub(data, (), "signing", "signing"))
    key_store = _lifecycle(r, data.get("keys", {}), base)
    keys, store_keys, key_lines = _key_table(r, data.get("key_table", {}), base, key_store)
    names = {k.name for k in keys} | {k.name for k in store_keys}
    rules = _signing_table(r, data.get("signing_table", {}), names)
    verify = r.sub(data, (), "verify", "verify")
    limits = r.sub(data, (), "limits", "limits")
    max_signatures = r.whole(
        limits, ("limits",), "max_signatures", DEFAULT_MAX_SIGNATURES, minimum=1, maximum=100
    )
    requirements = _requirements(r, verify.get("require", []))
    verify_options = VerifyOptions(
        max_signatures=max_signatures,
        allow_rsa_sha1=r.flag(verify, ("verify",), "allow_rsa_sha1", default=False),
        min_rsa_bits=r.whole(
            verify, ("verify",), "min_rsa_bits", MIN_RSA_BITS, minimum=512, maximum=RSA_BITS_LIMIT
        ),
        max_rsa_bits=r.whole(
            verify,
            ("verify",),
            "max_rsa_bits",
            DEFAULT_MAX_RSA_BITS,
            minimum=MIN_RSA_BITS,
            maximum=RSA_BITS_LIMIT,
        ),
        preferred_domains=tuple(requirement.domain for requirement in requirements),  # checked first
    )
    nameservers = r.strings(verify, ("verify",), "nameservers", ())
    return Config(
        path=path,
        milter=milter,
        routing=routing,
        sender_source=sender,
        sign_options=sign_options,
        keys=keys,
        rules=rules,
        verify_options=verify_options,
        dns_timeout=r.number(verify, ("verify",), "dns_timeout", 5.0, minimum=0.1, maximum=60),
        nameservers=nameservers,
        requirements=requirements,
        failure=_failure(r, r.sub(data, (), "on_failure", "on_failure")),
        max_header_bytes=r.whole(
            limits, ("limits",), "max_header_bytes", 256 * 1024, minimum=1024, maximum=64 * 1024 * 1024
        ),
        idle_timeout=r.number(limits, ("limits",), "idle_timeout", 600.0, minimum=1, maximum=86400),
        edge=_edge_limits(r, limits),
        key_lines=key_lines,
        store_keys=store_keys,
        key_store=key_store,
        key_store_kek=_keys_file(r, data.get("keys", {}), "kek_file", base),
        key_store_cache=_keys_file(r, data.get("keys", {}), "cache_file", base),
    )


def _milter(r: _Reader, table: Mapping[str, Any]) -> MilterSettings:
    at = ("milter",)
    defaults = MilterSettings()
    listen = defaults.socket
    socket_text = r.value(table, at, "socket", str, "")
    if socket_text:
        try:
            listen = parse_listen(socket_text)
        except ValueError as exc:
            r.problem((*at, "socket"), f"milter.socket {exc}")
    metrics = None
    metrics_text = r.value(table, at, "metrics", str, "")
    if metrics_text:
        try:
            metrics = parse_http_address(metrics_text)
        except ValueError as exc:
            r.problem((*at, "metrics"), f"milter.metrics {exc}")
    mode_text = r.value(table, at, "socket_mode", str, "0660")
    mode = 0o660
    if not re.fullmatch(r"0?[0-7]{3}", mode_text):
        r.problem((*at, "socket_mode"), 'milter.socket_mode must be an octal mode in quotes, e.g. "0660"')
    else:
        mode = int(mode_text, 8)
    level = r.value(table, at, "log_level", str, "info").lower()
    if level not in _LOG_LEVELS:
        r.problem((*at, "log_level"), f"milter.log_level must be one of {', '.join(_LOG_LEVELS)}")
        level = "info"
    authserv_id = r.value(table, at, "authserv_id", str, "")
    if authserv_id and not re.fullmatch(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+", authserv_id):
        r.problem((*at, "authserv_id"), "milter.authserv_id must be one word, usually this host's name")
    return MilterSettings(
        socket=listen,
        workers=r.whole(table, at, "workers", 0, minimum=0, maximum=256),
        authserv_id=authserv_id,
        user=r.value(table, at, "user", str, ""),
        group=r.value(table, at, "group", str, ""),
        socket_mode=mode,
        socket_group=r.value(table, at, "socket_group", str, ""),
        metrics=metrics,
        log_level=level,
        shutdown_grace=r.number(table, at, "shutdown_grace", 30.0, minimum=0, maximum=3600),
        key_check_interval=r.number(
            table, at, "key_check_interval", defaults.key_check_interval, minimum=0, maximum=86400
        ),
    )


def _routing(r: _Reader, table: Mapping[str, Any]) -> tuple[RoutingPolicy, SenderSource]:
    at = ("routing",)
    specs = r.strings(table, at, "internal_networks", DEFAULT_INTERNAL_NETWORKS)
    networks: tuple[Any, ...] = ()
    try:
        networks = parse_networks(specs)
    except ValueError as exc:
        r.problem((*at, "internal_networks"), f"routing.internal_networks: {exc}")
    sender_text = r.value(table, at, "sender", str, "from")
    try:
        sender = SenderSource(sender_text)
    except ValueError:
        r.problem(
            (*at, "sender"), 'routing.sender must be "from" (the From header) or "envelope" (MAIL FROM)'
        )
        sender = SenderSource.FROM
    policy = RoutingPolicy(
        networks,
        sign=r.flag(table, at, "sign", default=True),
        verify=r.flag(table, at, "verify", default=True),
        verify_internal=r.flag(table, at, "verify_internal", default=False),
    )
    return policy, sender


def _signing(r: _Reader, table: Mapping[str, Any]) -> SignOptions:
    at = ("signing",)
    canon_text = r.value(table, at, "canonicalization", str, "relaxed/relaxed")
    header, _, body = canon_text.lower().partition("/")
    try:
        header_canon, body_canon = Canon(header), Canon(body or "simple")
    except ValueError:
        r.problem(
            (*at, "canonicalization"),
            "signing.canonicalization must be HEADER/BODY with simple or relaxed, e.g. relaxed/relaxed",
        )
        header_canon = body_canon = Canon.RELAXED
    headers = r.strings(table, at, "headers", ())
    if "headers" in table and not any(h.lower() == "from" for h in headers):
        headers = ("from", *headers)  # RFC 6376 5.4: From must be signed; we add it rather than refuse
    expire = r.whole(table, at, "expire_after", 0, minimum=0, maximum=10 * 365 * 86400)
    return SignOptions(
        header_canon=header_canon,
        body_canon=body_canon,
        headers=headers or None,
        oversign=r.strings(table, at, "oversign", ("from",)),
        expire_after=expire or None,
    )


_KEY_ENTRY_SETTINGS: Final = frozenset({"domain", "selector", "file", "algorithm", "store"})


def _keys_file(r: _Reader, table: object, name: str, base: Path) -> Path | None:
    """A file setting of ``[keys]`` (``kek_file``, ``cache_file``), absolute; None when unset."""
    if not isinstance(table, dict):
        return None
    value = r.value(table, ("keys",), name, str, "")
    if not value:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _lifecycle(r: _Reader, table: object, base: Path) -> Path | str | None:
    """The ``[keys]`` table: the key lifecycle's settings; the milter uses only ``store``.

    The rest belongs to ``mailseal keys`` (which checks it when it reads the
    file); here only the names are checked, so a typo is caught either way.
    A ``[keys.NAME]`` table that looks like a key table entry is the old
    spelling of ``[key_table.NAME]``: say so.
    """
    if not isinstance(table, dict):
        r.problem(("keys",), "keys must be a table: the key lifecycle's settings (see docs/keys.md)")
        return None
    for name, value in table.items():
        if isinstance(value, dict) and name not in KEYS_SETTINGS and _KEY_ENTRY_SETTINGS & set(value):
            r.problem(
                ("keys", name),
                f"[keys.{name}] looks like a key table entry: those are [key_table.{name}] "
                "([keys] holds the key lifecycle's settings); rename the table",
            )
        elif name not in KEYS_SETTINGS:
            r.table({name: value}, ("keys",), "keys")
    store = r.value(table, ("keys",), "store", str, "")
    if not store:
        return None
    try:
        return parse_location(store, base)
    except UsageError as exc:  # a malformed URL or another database: a problem with its line, like the rest
        r.problem(("keys", "store"), str(exc))
        return None


def _key_table(
    r: _Reader, table: object, base: Path, key_store: Path | str | None
) -> tuple[tuple[KeyFileEntry, ...], tuple[StoreKeyEntry, ...], dict[str, int | None]]:
    """``[key_table.NAME]`` entries: a key file (domain, selector, file), or the store's keys (domain, store)."""
    if not isinstance(table, dict):
        r.problem(("key_table",), "key_table must be a table of [key_table.NAME] tables")
        return (), (), {}
    entries = []
    store_entries = []
    lines: dict[str, int | None] = {}
    for name, raw in table.items():
        at = ("key_table", name)
        if not isinstance(raw, dict):
            r.problem(at, f"key_table.{name} must be a table with domain and file (or store = true)")
            continue
        entry = r.table(raw, at, "key")
        if r.flag(entry, at, "store", default=False):
            store_entry = _store_entry(r, entry, name, key_store)
            if store_entry is not None:
                lines[name] = r.lines.line_of((*at, "store"))
                store_entries.append(store_entry)
            continue
        missing = [k for k in ("domain", "selector", "file") if k not in entry]
        if missing:
            r.problem(
                at, f"[key_table.{name}] needs {', '.join(missing)} (or store = true: the key store's keys)"
            )
            continue
        domain = r.value(entry, at, "domain", str, "").lower().removesuffix(".")
        selector = r.value(entry, at, "selector", str, "")
        file_text = r.value(entry, at, "file", str, "")
        if domain != SENDER_DOMAIN and not is_domain_name(domain, min_labels=2):
            r.problem(
                (*at, "domain"),
                f'key_table.{name}.domain {domain!r} is not a domain name (or "%": the sender\'s)',
            )
        if not is_selector(selector):
            r.problem((*at, "selector"), f"key_table.{name}.selector {selector!r} is not a valid selector")
        algorithm: Algorithm | None = None
        algorithm_text = r.value(entry, at, "algorithm", str, "")
        if algorithm_text:
            algorithm = ALGORITHMS.get(algorithm_text.lower())
            if algorithm is None or algorithm.legacy:
                r.problem(
                    (*at, "algorithm"), f"key_table.{name}.algorithm must be rsa-sha256 or ed25519-sha256"
                )
                algorithm = None
        path = Path(file_text)
        if not path.is_absolute():
            path = base / path
        lines[name] = r.lines.line_of((*at, "file"))
        entries.append(KeyFileEntry(name, domain, selector, path, algorithm))
    return tuple(entries), tuple(store_entries), lines


def _store_entry(
    r: _Reader, entry: Mapping[str, Any], name: str, key_store: Path | str | None
) -> StoreKeyEntry | None:
    """``store = true``: the domain's active keys from the store; the store picks selectors and files."""
    at = ("key_table", name)
    ok = True
    for setting in ("selector", "file", "algorithm"):
        if setting in entry:
            r.problem(
                (*at, setting),
                f"key_table.{name}.{setting}: a store entry takes its keys (selectors, types) from the "
                f"key store; remove {setting} (or remove store = true to sign with a key file)",
            )
            ok = False
    if "domain" not in entry:
        r.problem(at, f"[key_table.{name}] needs domain: the store keeps keys per domain")
        return None
    domain = r.value(entry, at, "domain", str, "").lower().removesuffix(".")
    if domain == SENDER_DOMAIN:
        r.problem(
            (*at, "domain"),
            f'key_table.{name}.domain: "%" cannot name the store\'s keys; give the domain, one entry per domain',
        )
        ok = False
    elif not is_domain_name(domain, min_labels=2):
        r.problem((*at, "domain"), f"key_table.{name}.domain {domain!r} is not a domain name")
        ok = False
    if key_store is None:
        r.problem(
            (*at, "store"),
            f"key_table.{name} takes its keys from the key store, but this file does not say where "
            'it is: add [keys] store = "/var/lib/mailseal/keys.db" (the store mailseal keys uses)',
        )
        ok = False
    return StoreKeyEntry(name, domain) if ok else None


def _signing_table(r: _Reader, table: object, key_names: set[str]) -> tuple[Rule, ...]:
    if not isinstance(table, dict):
        r.problem(("signing_table",), 'signing_table must be a table of "pattern" = ["key", ...]')
        return ()
    rules = []
    for pattern, raw in table.items():
        at = ("signing_table", pattern)
        names = r.strings(table, ("signing_table",), pattern, ())
        if not names and raw:
            continue  # the type problem is recorded
        unknown = [n for n in names if n not in key_names]
        if unknown:
            hint = difflib.get_close_matches(unknown[0], sorted(key_names), n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else " (define it as [key_table.NAME])"
            r.problem(at, f"signing_table {pattern!r} names unknown key {unknown[0]!r}{suggestion}")
            continue
        try:
            rules.append(parse_rule(pattern, names))
        except PatternError as exc:
            r.problem(at, f"signing_table: {exc}")
    try:
        SigningTable(rules)
    except PatternError as exc:
        r.problem(("signing_table",), f"signing_table: {exc}")
    return tuple(rules)


def _requirements(r: _Reader, raw: object) -> tuple[Requirement, ...]:
    if not isinstance(raw, list):
        r.problem(("verify", "require"), "verify.require must be [[verify.require]] tables")
        return ()
    requirements = []
    for index, item in enumerate(raw):
        at: Path_ = ("verify", "require", index)
        if not isinstance(item, dict):
            r.problem(at, "each [[verify.require]] needs domain and action")
            continue
        r.table(item, at, "require")
        domain = r.value(item, at, "domain", str, "").lower().removesuffix(".")
        if not is_domain_name(domain, min_labels=2):
            r.problem((*at, "domain"), f"verify.require domain {domain!r} is not a domain name")
            continue
        action_text = r.value(item, at, "action", str, "reject")
        try:
            action = Verdict(action_text)
        except ValueError:
            r.problem((*at, "action"), "verify.require action must be reject, tempfail, quarantine or accept")
            continue
        requirements.append(Requirement(domain, action))
    return tuple(requirements)


def _edge_limits(r: _Reader, limits: Mapping[str, Any]) -> EdgeLimits:
    at = ("limits",)
    d = EdgeLimits()
    return EdgeLimits(
        max_connections=r.whole(
            limits, at, "max_connections", d.max_connections, minimum=1, maximum=1_000_000
        ),
        negotiate_timeout=r.number(
            limits, at, "negotiate_timeout", d.negotiate_timeout, minimum=0.1, maximum=3600
        ),
        message_timeout=r.number(limits, at, "message_timeout", d.message_timeout, minimum=1, maximum=86400),
        connection_lifetime=r.number(
            limits, at, "connection_lifetime", d.connection_lifetime, minimum=1, maximum=7 * 86400
        ),
        max_forged_authres=r.whole(
            limits, at, "max_forged_authres", d.max_forged_authres, minimum=1, maximum=10_000
        ),
    )


def _failure(r: _Reader, table: Mapping[str, Any]) -> FailurePolicy:
    actions = dict(FAILURE_DEFAULTS)
    for failure in Failure:
        text = r.value(table, ("on_failure",), failure.value, str, "")
        if not text:
            continue
        try:
            actions[failure] = Verdict(text)
            if failure is Failure.AUTHRES_FLOOD and actions[failure] is Verdict.ACCEPT:
                r.problem(
                    ("on_failure", failure.value),
                    "on_failure.authres_flood cannot be accept: the forged fields would be delivered;"
                    " use reject, tempfail or quarantine",
                )
        except ValueError:
            r.problem(
                ("on_failure", failure.value),
                f"on_failure.{failure.value} must be accept, tempfail, reject or quarantine",
            )
    return FailurePolicy(actions)


def starter_config(*, domain: str, selector: str, key_file: str, socket_spec: str = DEFAULT_SOCKET) -> str:
    """A commented configuration for one domain and one key (what ``mailseal milter`` writes first)."""
    return f"""\
# mailseal milter configuration (TOML). Check it with: mailseal milter --check-config FILE
# Reload it without dropping connections: kill -HUP <pid>. Every setting: mailseal milter --reference

[milter]
socket = {_toml(socket_spec)}      # or "unix:/run/mailseal/milter.sock"
# workers = 0                       # worker processes; 0 = one per CPU core
# authserv_id = "mx.{domain}"       # names us in Authentication-Results; default: host name
# user = "mailseal"                 # drop root privileges after binding the socket
# metrics = "127.0.0.1:9120"        # Prometheus endpoint (off unless set)

[routing]
internal_networks = ["127.0.0.0/8", "::1"]   # mail from here (or SMTP AUTH) is signed
# verify_internal = false                    # also verify mail we sign
# sender = "from"                            # "from" header or "envelope" (MAIL FROM) picks the key

[key_table.main]                    # or: domain = ...; store = true (keys from `mailseal keys`)
domain = {_toml(domain)}
selector = {_toml(selector)}
file = {_toml(key_file)}              # mode 0600: keys others can read are refused

[signing_table]
# Most specific wins: "alice@d" > "sales-*@d" > "d" (= "*@d") > ".d" (d and subdomains) > "*".
".{domain}" = ["main"]

[on_failure]
sign_key_unavailable = "tempfail"   # keep the mail queued rather than send it unsigned
verify_dns_error = "accept"

# [[verify.require]]                # reject mail from a domain unless its signature passes
# domain = "bank.example"
# action = "reject"                 # or "quarantine", "tempfail"
"""


def _toml(text: str) -> str:
    """A TOML basic string (JSON's escapes are valid TOML)."""
    return json.dumps(text, ensure_ascii=False)
