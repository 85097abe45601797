"""TOML configuration files: parsed once, every problem reported with its line and a did-you-mean.

The one reader the milter's configuration and the key lifecycle's ``[keys]``
table share (and the only importer of tomllib). tomllib gives lines only for
syntax errors, so :class:`LineIndex` records the line of every table and key
by scanning the text; a :class:`TableReader` then checks values and names
against a schema, *recording* problems instead of stopping at the first, so
one run shows every mistake. An unknown setting is a problem too, with the
closest known name: a typo must not silently leave a default in place.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

from mailseal.errors import ConfigError

__all__ = ["ConfigProblems", "LineIndex", "Path_", "TableReader", "did_you_mean", "dotted", "parse_toml"]

Path_ = tuple[str | int, ...]
"""A key's place in the document: table and key names, and element numbers inside arrays of tables."""

_T = TypeVar("_T")


class ConfigProblems(ConfigError):
    """Every problem found in one configuration file, each with its line when known."""

    def __init__(self, path: str | None, problems: Sequence[tuple[int | None, str]]) -> None:
        """``problems`` are ``(line or None, message)`` pairs, shown one per line as ``path:line: message``."""
        self.problems = tuple(problems)
        first_line = self.problems[0][0] if self.problems else None
        self.text = "\n".join(_where(path, line) + message for line, message in self.problems)
        super().__init__(self.text, path=None, line=first_line)
        self.path = path

    def __str__(self) -> str:
        return self.text


def _where(path: str | None, line: int | None) -> str:
    if path is None:
        return f"line {line}: " if line is not None else ""
    return f"{path}:{line}: " if line is not None else f"{path}: "


_SYNTAX_AT: Final = re.compile(r"\s*\(at line (\d+), column \d+\)|\s*\(at end of document\)")


def parse_toml(text: str, *, path: str | None = None) -> tuple[dict[str, Any], LineIndex]:
    """The document and the line of each key; a syntax error is a :class:`ConfigProblems` with its line.

    Python 3.11's ``TOMLDecodeError`` carries its position only in its text
    ("(at line 3, column 9)"), so the line is read from there, here only.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"\(at line (\d+), column \d+\)", message)
        line = int(found.group(1)) if found else None
        raise ConfigProblems(path, [(line, f"TOML syntax: {_SYNTAX_AT.sub('', message)}")]) from None
    return data, LineIndex(text)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, else ``; known: a, b, c``."""
    choices = sorted(known)
    hint = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else f"; known: {', '.join(choices)}"


def dotted(path: Path_) -> str:
    """``verify.require[1].domain``: a key path as the TOML author wrote it."""
    return ".".join(str(p) if isinstance(p, str) else f"[{p}]" for p in path).replace(".[", "[")


# -- where each key is --------------------------------------------------------------------

_BARE = r"[A-Za-z0-9_-]+"
_BASIC = r'"(?:[^"\\]|\\.)*"'
_LITERAL = r"'[^']*'"
_KEY_PART = rf"(?:{_BARE}|{_BASIC}|{_LITERAL})"
_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_ARRAY_TABLE = re.compile(rf"\s*\[\[\s*({_DOTTED})\s*\]\]")
_TABLE = re.compile(rf"\s*\[\s*({_DOTTED})\s*\]")
_KEY = re.compile(rf"\s*({_DOTTED})\s*=")
_PART = re.compile(_KEY_PART)


def _key_parts(text: str) -> tuple[str, ...]:
    parts = []
    for match in _PART.finditer(text):
        part = match.group(0)
        if part[0] in "\"'":
            part = tomllib.loads(f"k = {part}")["k"]
        parts.append(part)
    return tuple(parts)


class LineIndex:
    """The line (from 1) of each table header and key in a TOML text, by key path.

    Paths into arrays of tables carry the element number: the second
    ``[[verify.require]]`` table's ``domain`` is ``("verify", "require", 1, "domain")``.
    Keys inside inline tables and multi-line arrays are attributed to the line
    of the key that holds them.
    """

    def __init__(self, text: str) -> None:
        """Scan ``text`` once."""
        self._lines: dict[Path_, int] = {}
        counts: dict[tuple[str, ...], int] = {}
        current: Path_ = ()
        depth = 0
        in_string: str | None = None
        for number, line in enumerate(text.splitlines(), 1):
            if in_string is not None:
                end = line.find(in_string)
                if end >= 0:
                    depth, in_string = _scan(line[end + 3 :], depth)
                continue
            if depth > 0:
                depth, in_string = _scan(line, depth)
                continue
            if match := _ARRAY_TABLE.match(line):
                name = _key_parts(match.group(1))
                index = counts.get(name, 0)
                counts[name] = index + 1
                current = (*name, index)
                self._lines.setdefault(name, number)
                self._lines[current] = number
                continue
            if match := _TABLE.match(line):
                current = _key_parts(match.group(1))
                self._lines[current] = number
                continue
            if match := _KEY.match(line):
                self._lines.setdefault((*current, *_key_parts(match.group(1))), number)
                depth, in_string = _scan(line[match.end() :], 0)

    def line_of(self, path: Path_) -> int | None:
        """The line of ``path``, or of the nearest enclosing key or table that has one."""
        while path:
            line = self._lines.get(path)
            if line is not None:
                return line
            path = path[:-1]
        return None


def _scan(text: str, depth: int) -> tuple[int, str | None]:
    """Bracket depth after ``text`` and any multi-line string left open (strings and comments skipped)."""
    i = 0
    while i < len(text):
        for quote in ('"""', "'''"):
            if text.startswith(quote, i):
                end = text.find(quote, i + 3)
                if end < 0:
                    return depth, quote
                i = end + 3
                break
        else:
            char = text[i]
            if char == "#":
                break
            if char in "\"'":
                end = i + 1
                while end < len(text) and text[end] != char:
                    end += 2 if char == '"' and text[end] == "\\" else 1
                i = end + 1
                continue
            if char in "[{":
                depth += 1
            elif char in "]}":
                depth = max(depth - 1, 0)
            i += 1
    return depth, None


# -- typed access that records problems ---------------------------------------------------

_TYPE_NAMES: Final = {
    str: "text in quotes",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    list: "a list [...]",
    dict: "a table",
}


class TableReader:
    """Typed access to a parsed document that records problems (with lines) instead of stopping.

    ``schema`` names the settings each kind of table may hold; :meth:`table`
    checks a table's names against one kind.
    """

    def __init__(self, lines: LineIndex, schema: Mapping[str, frozenset[str]]) -> None:
        """Attribute problems to lines with ``lines``; check table names against ``schema``."""
        self.lines = lines
        self.schema = schema
        self.problems: list[tuple[int | None, str]] = []

    def problem(self, path: Path_, message: str) -> None:
        """Record ``message`` at the line of ``path``."""
        self.problems.append((self.lines.line_of(path), message))

    def raise_problems(self, path: str | None) -> None:
        """Raise every recorded problem at once, in line order (nothing when there is none)."""
        if self.problems:
            raise ConfigProblems(path, sorted(self.problems, key=lambda p: p[0] or 0))

    def table(self, data: Mapping[str, Any], path: Path_, schema: str) -> Mapping[str, Any]:
        """``data``, after recording each name that ``schema`` does not know."""
        allowed = self.schema[schema]
        for key in data:
            if key not in allowed:
                where = f"[{dotted(path)}]" if path else "the top level"
                self.problem((*path, key), f"unknown setting {key!r} in {where}{did_you_mean(key, allowed)}")
        return data

    def sub(self, data: Mapping[str, Any], path: Path_, key: str, schema: str) -> Mapping[str, Any]:
        """The table ``data[key]`` (empty when absent, or recorded when not a table), names checked."""
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.problem((*path, key), f"{dotted((*path, key))} must be a table")
            return {}
        return self.table(value, (*path, key), schema)

    def value(self, data: Mapping[str, Any], path: Path_, key: str, kind: type[_T], default: _T) -> _T:
        """``data[key]`` when it is a ``kind`` (an int is a float too), else ``default`` and a problem."""
        if key not in data:
            return default
        value = data[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)  # type: ignore[return-value]
        if not ok:
            self.problem((*path, key), f"{dotted((*path, key))} must be {_TYPE_NAMES[kind]}")
            return default
        return value  # type: ignore[no-any-return]

    def flag(self, data: Mapping[str, Any], path: Path_, key: str, *, default: bool) -> bool:
        """A true/false setting."""
        return self.value(data, path, key, bool, default)

    def strings(
        self, data: Mapping[str, Any], path: Path_, key: str, default: tuple[str, ...]
    ) -> tuple[str, ...]:
        """A list of strings (one string is a list of one)."""
        if key not in data:
            return default
        value = data[key]
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem((*path, key), f"{dotted((*path, key))} must be a list of quoted strings")
            return default
        return tuple(value)

    def number(
        self,
        data: Mapping[str, Any],
        path: Path_,
        key: str,
        default: float,
        *,
        minimum: float,
        maximum: float,
    ) -> float:
        """A number from ``minimum`` to ``maximum``."""
        value = self.value(data, path, key, float, default)
        if not minimum <= value <= maximum:
            self.problem((*path, key), f"{dotted((*path, key))} must be from {minimum:g} to {maximum:g}")
            return default
        return value

    def whole(
        self, data: Mapping[str, Any], path: Path_, key: str, default: int, *, minimum: int, maximum: int
    ) -> int:
        """A whole number from ``minimum`` to ``maximum``."""
        value = self.value(data, path, key, int, default)
        if not minimum <= value <= maximum:
            self.problem((*path, key), f"{dotted((*path, key))} must be from {minimum} to {maximum}")
            return default
        return value
