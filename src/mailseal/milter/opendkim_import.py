"""OpenDKIM's KeyTable and SigningTable -> a mailseal TOML configuration.

KeyTable lines are ``NAME DOMAIN:SELECTOR:KEYFILE``; SigningTable lines are
``PATTERN NAME``. With ``refile:`` tables (``--refile``) patterns may hold
``*`` wildcards; without, they are addresses, domains or ``*``. Lines with the
same pattern are merged into one rule with several keys (OpenDKIM's
MultipleSignatures). What cannot be expressed is left out with a warning,
never guessed: the output must be reviewed, not trusted blindly.

OpenDKIM checks refile patterns in file order; mailseal picks the most
specific rule, so a converted table can choose differently only where
OpenDKIM's order contradicted specificity -- a warning says so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailseal.core.identity import is_domain_name, is_selector
from mailseal.milter.config import DEFAULT_SOCKET
from mailseal.milter.signing_table import PatternError, parse_rule


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One KeyTable line."""

    name: str
    domain: str
    selector: str
    path: str
    line: int


@dataclass(slots=True)
class Conversion:
    """The TOML text and what the reader must know about it."""

    toml: str = ""
    warnings: list[str] = field(default_factory=list)


def _rows(text: str) -> list[tuple[int, list[str]]]:
    rows = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            rows.append((number, line.split()))
    return rows


def parse_key_table(text: str, label: str, warnings: list[str]) -> list[KeyRow]:
    """KeyTable rows; malformed or inline-key rows become warnings."""
    keys = []
    for number, fields in _rows(text):
        where = f"{label}:{number}"
        if len(fields) != 2 or fields[1].count(":") < 2:
            warnings.append(f"{where}: expected 'NAME DOMAIN:SELECTOR:KEYFILE'; line skipped")
            continue
        name, value = fields
        domain, selector, path = value.split(":", 2)
        if not path.startswith("/"):
            warnings.append(
                f"{where}: key {name!r} holds the key data inline; write it to a file (mode 0600) "
                "and set file = ...; line skipped"
            )
            continue
        if domain != "%" and not is_domain_name(domain, min_labels=2):
            warnings.append(f"{where}: {domain!r} is not a domain name; line skipped")
            continue
        if not is_selector(selector):
            warnings.append(f"{where}: {selector!r} is not a selector; line skipped")
            continue
        keys.append(KeyRow(name, domain.lower(), selector, path, number))
    return keys


def _pattern(raw: str, *, refile: bool) -> tuple[str | None, str | None]:
    """(mailseal pattern, warning) for one SigningTable pattern."""
    text = raw.lower()
    if text == "*":
        return "*", None
    if not refile:
        if "*" in text:
            return None, f"{raw!r} has a wildcard but --refile was not given"
        if text.endswith("@"):
            return None, f"{raw!r} (a local part at any domain) has no mailseal equivalent"
        return text, None
    if "@" not in text:
        if text.startswith("*."):
            return "." + text[2:], f"{raw!r} becomes .{text[2:]}, which also matches {text[2:]} itself"
        return (text, None) if "*" not in text else (None, f"{raw!r} cannot be converted")
    local, _, domain = text.rpartition("@")
    if domain.startswith("*.") and "*" not in domain[2:] and local == "*":
        return "." + domain[2:], f"{raw!r} becomes .{domain[2:]}, which also matches {domain[2:]} itself"
    if "*" in domain:
        return None, f"{raw!r}: a wildcard inside the domain cannot be converted"
    return f"{local}@{domain}", None


def convert(
    key_table: str,
    signing_table: str,
    *,
    refile: bool,
    key_table_label: str = "KeyTable",
    signing_table_label: str = "SigningTable",
) -> Conversion:
    """Convert the two tables; see the module docstring."""
    result = Conversion()
    warnings = result.warnings
    keys = parse_key_table(key_table, key_table_label, warnings)
    known = {k.name for k in keys}
    rules: dict[str, list[str]] = {}
    order: list[tuple[str, int]] = []
    for number, fields in _rows(signing_table):
        where = f"{signing_table_label}:{number}"
        if len(fields) != 2:
            warnings.append(f"{where}: expected 'PATTERN KEYNAME'; line skipped")
            continue
        raw, name = fields
        if name not in known:
            warnings.append(f"{where}: key {name!r} is not in the KeyTable; line skipped")
            continue
        pattern, warning = _pattern(raw, refile=refile)
        if warning:
            warnings.append(f"{where}: {warning}" + ("" if pattern else "; line skipped"))
        if pattern is None:
            continue
        try:
            rule = parse_rule(pattern, [name])
        except PatternError as exc:
            warnings.append(f"{where}: {exc}; line skipped")
            continue
        if pattern not in rules:
            rules[pattern] = []
            order.append((pattern, rule.kind))
        if name not in rules[pattern]:
            rules[pattern].append(name)
    if refile:
        kinds = [kind for _, kind in order]
        if kinds != sorted(kinds, key=int):
            warnings.append(
                f"{signing_table_label}: OpenDKIM used the first matching line; mailseal uses the most "
                "specific rule -- check that this is what you meant"
            )
    used = {name for names in rules.values() for name in names}
    for row in keys:
        if row.name not in used:
            warnings.append(f"{key_table_label}:{row.line}: key {row.name!r} is not used by any signing rule")
    result.toml = _render(keys, rules, key_table_label, signing_table_label)
    return result


def _render(keys: Sequence[KeyRow], rules: dict[str, list[str]], key_label: str, signing_label: str) -> str:
    q = json.dumps
    lines = [
        f"# Converted by mailseal import-opendkim from {key_label} and {signing_label}.",
        "# Review it, then check it: mailseal milter --check-config FILE",
        "",
        "[milter]",
        f"socket = {q(DEFAULT_SOCKET)}",
        "",
    ]
    for row in keys:
        lines += [
            f"[key_table.{q(row.name)}]",
            f"domain = {q(row.domain)}",
            f"selector = {q(row.selector)}",
            f"file = {q(row.path)}",
            "",
        ]
    lines.append("[signing_table]")
    for pattern, names in sorted(rules.items(), key=lambda item: int(parse_rule(item[0], item[1]).kind)):
        lines.append(f"{q(pattern)} = [{', '.join(q(n) for n in names)}]")
    if not rules:
        lines.append("# (no usable signing rules were found)")
    return "\n".join(lines) + "\n"
