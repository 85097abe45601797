"""The signing table: which keys sign mail from which sender, most specific rule first.

Rule patterns, from most to least specific (the first kind that matches wins):

1. ``alice@example.com`` -- that address.
2. ``sales-*@example.com`` -- a local part with ``*`` wildcards at exactly
   that domain; among several matching, the one with the most literal
   characters wins, then the one listed first.
3. ``example.com`` (or ``*@example.com``, the same rule) -- any address at
   exactly that domain.
4. ``.example.com`` -- any address at example.com *or any subdomain of it*;
   the longest matching suffix wins, so ``.mail.example.com`` beats
   ``.example.com`` for ``x@a.mail.example.com``.
5. ``*`` -- the default, for every other sender.

Matching ignores case (addresses are lower-cased, as OpenDKIM does). A rule
names one or more keys; each key signs once (e.g. RSA and Ed25519).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from mailseal.core.address import author
from mailseal.core.identity import is_domain_name
from mailseal.core.message import HeaderField
from mailseal.keys.source import SENDER_DOMAIN, KeySet, SigningKey


class RuleKind(IntEnum):
    """How specific a rule is; lower values win."""

    ADDRESS = 1
    LOCAL_PATTERN = 2
    DOMAIN = 3
    SUBDOMAINS = 4
    DEFAULT = 5


@dataclass(frozen=True, slots=True)
class Rule:
    """One signing table row: the pattern as written, its kind, and the key names it uses."""

    pattern: str
    kind: RuleKind
    keys: tuple[str, ...]
    domain: str = ""
    """The domain part (for ADDRESS, LOCAL_PATTERN, DOMAIN and SUBDOMAINS rules), lower-cased."""
    local: str = ""
    """The local part or local-part pattern (ADDRESS and LOCAL_PATTERN rules), lower-cased."""


class PatternError(ValueError):
    """A signing table pattern that is not one of the five forms."""


def parse_rule(pattern: str, keys: Iterable[str]) -> Rule:
    """Classify ``pattern`` (see the module docstring); raises :class:`PatternError` with the fix."""
    text = pattern.strip().lower()
    names = tuple(keys)
    if not names:
        raise PatternError(f"rule {pattern!r} names no keys")
    if text == "*":
        return Rule(pattern, RuleKind.DEFAULT, names)
    if "@" in text:
        local, _, domain = text.rpartition("@")
        _check_domain(pattern, domain)
        if not local or "@" in local or any(c.isspace() for c in local):
            raise PatternError(f"rule {pattern!r}: the local part before @ must be one word, e.g. *@{domain}")
        if local == "*":
            return Rule(pattern, RuleKind.DOMAIN, names, domain)
        if "*" in local:
            return Rule(pattern, RuleKind.LOCAL_PATTERN, names, domain, local)
        return Rule(pattern, RuleKind.ADDRESS, names, domain, local)
    if text.startswith("."):
        _check_domain(pattern, text[1:])
        return Rule(pattern, RuleKind.SUBDOMAINS, names, text[1:])
    if "*" in text:
        raise PatternError(
            f"rule {pattern!r}: a wildcard is allowed only in the local part (*@example.com) "
            "or alone (*); for a domain and its subdomains write .example.com"
        )
    _check_domain(pattern, text)
    return Rule(pattern, RuleKind.DOMAIN, names, text)


def _check_domain(pattern: str, domain: str) -> None:
    if not is_domain_name(domain):
        raise PatternError(f"rule {pattern!r}: {domain!r} is not a domain name")


@dataclass(frozen=True, slots=True)
class _LocalPattern:
    regex: re.Pattern[str]
    literal: int
    order: int
    rule: Rule


class SigningTable:
    """Find the most specific rule for a sender address (see the module docstring)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        """Index ``rules``; raises :class:`PatternError` when two rules have the same meaning."""
        self.rules = tuple(rules)
        self._addresses: dict[str, Rule] = {}
        self._patterns: dict[str, list[_LocalPattern]] = {}
        self._domains: dict[str, Rule] = {}
        self._subdomains: dict[str, Rule] = {}
        self._default: Rule | None = None
        for order, rule in enumerate(rules):
            self._add(order, rule)
        for patterns in self._patterns.values():
            patterns.sort(key=lambda p: (-p.literal, p.order))

    def _add(self, order: int, rule: Rule) -> None:
        if rule.kind is RuleKind.DEFAULT:
            if self._default is not None:
                raise PatternError(
                    f"rule {rule.pattern!r} repeats the default rule {self._default.pattern!r}"
                )
            self._default = rule
            return
        if rule.kind is RuleKind.LOCAL_PATTERN:
            patterns = self._patterns.setdefault(rule.domain, [])
            if any(p.rule.local == rule.local for p in patterns):
                raise PatternError(f"rule {rule.pattern!r} appears twice")
            regex = re.compile(".*".join(re.escape(part) for part in rule.local.split("*")))
            patterns.append(_LocalPattern(regex, len(rule.local.replace("*", "")), order, rule))
            return
        table = {
            RuleKind.ADDRESS: self._addresses,
            RuleKind.DOMAIN: self._domains,
            RuleKind.SUBDOMAINS: self._subdomains,
        }[rule.kind]
        key = f"{rule.local}@{rule.domain}" if rule.kind is RuleKind.ADDRESS else rule.domain
        if key in table:
            raise PatternError(f"rule {rule.pattern!r} means the same as {table[key].pattern!r}")
        table[key] = rule

    def match(self, address: str) -> Rule | None:
        """The rule for ``address`` (``local@domain``), or None when no rule (not even ``*``) applies."""
        address = address.lower()
        local, at, domain = address.rpartition("@")
        if not at or not domain:
            return self._default
        domain = domain.removesuffix(".")
        found = self._addresses.get(f"{local}@{domain}")
        if found is not None:
            return found
        for pattern in self._patterns.get(domain, ()):
            if pattern.regex.fullmatch(local):
                return pattern.rule
        found = self._domains.get(domain)
        if found is not None:
            return found
        if self._subdomains:
            suffix = domain
            while True:
                found = self._subdomains.get(suffix)
                if found is not None:
                    return found
                dot = suffix.find(".")
                if dot < 0:
                    break
                suffix = suffix[dot + 1 :]
        return self._default


@dataclass(frozen=True, slots=True)
class KeyChoice:
    """The keys to sign with for one sender; ``missing`` names keys that could not be loaded."""

    keys: tuple[SigningKey, ...]
    missing: tuple[tuple[str, str], ...]


def choose_keys(rule: Rule, keyset: KeySet, sender_domain: str) -> KeyChoice:
    """Resolve a rule's key names; a ``%`` key domain becomes the sender's domain."""
    keys: list[SigningKey] = []
    missing: list[tuple[str, str]] = []
    for name in rule.keys:
        found = keyset.lookup(name)
        if found is None:
            missing.append((name, keyset.reason(name)))
            continue
        for key in found:
            if key.domain == SENDER_DOMAIN:
                key = SigningKey(key.name, sender_domain, key.selector, key.key, key.algorithm, key.origin)
            keys.append(key)
    return KeyChoice(tuple(keys), tuple(missing))


def header_sender(headers: Sequence[HeaderField]) -> str | None:
    """The one address in the one From field; None when there is not exactly one readable one (RFC 5322 3.6.2).

    Read by :func:`mailseal.core.address.author`: bounded, never recursive,
    never raises (a hostile From is "unreadable", and has no sender).
    """
    mailbox = author(headers).mailbox
    return mailbox.address if mailbox is not None else None


def envelope_sender(mail_args: Sequence[str], mail_addr_macro: str | None) -> str | None:
    """The MAIL FROM address (``{mail_addr}`` or the first argument); None for the null sender."""
    address = mail_addr_macro if mail_addr_macro else (mail_args[0] if mail_args else "")
    address = address.strip().removeprefix("<").removesuffix(">")
    return address if "@" in address else None
