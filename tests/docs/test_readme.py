"""The README's code blocks, run as tests, so the README cannot drift from the code.

Each fenced block is treated by its language:

* ``sh``      the block runs with ``bash -e -o pipefail`` in a scratch folder;
* ``console`` each ``$ command`` line runs there and must exit 0 (the other lines
  are its output, not compared: they hold keys and times);
* ``python``  the block is executed there; if it leaves a ``report``, it must pass;
* ``toml``, ``yaml``, ``ini``, ``cron``  parsed; a ``[milter]`` TOML block also by
  the milter's own reader; cron and systemd ``ExecStart=`` commands as below;
* ``text`` and blocks without a language are output or pictures: not run.

The runnable blocks (sh, console, python) share one scratch folder and run in README
order, so a later block sees the files an earlier one made (the quickstart's key is
the library example's key). The world is stood in for by fixtures: ``message.eml``
(a sample message with LF line ends, as a Unix file), ``mailseal`` on PATH (this
checkout), and DNS: ``example.com.zone`` is rebuilt before each command from the
``*.txt`` records the blocks wrote (that is "publish it in DNS"), and
``mailseal verify`` without ``--dns-zone`` is answered from it.

Markers: an HTML comment on the line just before the opening fence (indented like it).

* ``<!-- doctest: skip REASON -->`` the block cannot run here (it needs root,
  Postfix, a real DNS primary, or runs until stopped). Only its syntax is checked:
  every ``mailseal ...`` command in it is parsed by the real argument parser (so
  option names cannot drift), and shell lines by ``bash -n``.
* ``<!-- doctest: usage -->`` a synopsis: every ``mailseal COMMAND`` line and each
  ``--option METAVAR`` after it must exist in that command's parser, with that metavar.

Adding a README section: give each block its language; if it cannot run, say why in
a skip marker. A new runnable block runs with the fixtures above.
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import mailseal
from mailseal.cli.main import COMMANDS, build_parser
from mailseal.errors import UsageError
from support.messages import SAMPLE

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SRC = Path(mailseal.__file__).resolve().parents[1]
RUNNABLE = ("sh", "console", "python")
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*doctest:\s*(?P<kind>skip|usage)\b(?P<why>.*?)-->\s*$")
_SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "2>", "2>&1", "&"}

ZONE_HEAD = (
    "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns.example.com. hostmaster.example.com. 1 3600 600 86400 300\n"
)

SHIM = """\
import sys
from pathlib import Path

sys.path.insert(0, {src!r})
zone = Path("example.com.zone")
records = "".join(p.read_text() for p in sorted(Path(".").glob("*.txt")))
zone.write_text({head!r} + records)
args = sys.argv[1:]
if args[:1] == ["verify"] and "--dns-zone" not in args:
    args[1:1] = ["--dns-zone", str(zone)]
from mailseal.cli.main import main

raise SystemExit(main(args))
"""


@dataclass(frozen=True)
class Block:
    """One fenced block: where it starts, its language, its marker, its text."""

    line: int
    lang: str
    marker: str  # "", "skip" or "usage"
    why: str
    text: str

    @property
    def name(self) -> str:
        return f"README.md:{self.line}:{self.lang or 'plain'}"


def blocks(text: str) -> list[Block]:
    """Every fenced block of ``text`` with the marker on the line before it."""
    found: list[Block] = []
    lines = text.splitlines()
    number = 0
    while number < len(lines):
        opening = _FENCE.match(lines[number])
        if not opening:
            number += 1
            continue
        indent = len(opening["indent"])
        marker = _MARKER.match(lines[number - 1]) if number else None
        body: list[str] = []
        end = number + 1
        while end < len(lines) and not re.match(r"^ *```\s*$", lines[end]):
            body.append(lines[end][indent:] if lines[end][:indent].strip() == "" else lines[end])
            end += 1
        found.append(
            Block(
                line=number + 1,
                lang=opening["lang"],
                marker=marker["kind"] if marker else "",
                why=marker["why"].strip() if marker else "",
                text="\n".join(body) + "\n",
            )
        )
        number = end + 1
    return found


BLOCKS = blocks(README.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- commands and their syntax


def shell_commands(block: Block) -> list[str]:
    """The commands of a block: ``$`` lines of a console block; lines of an sh block (continuations joined)."""
    if block.lang == "console":
        return [line[2:] for line in block.text.splitlines() if line.startswith("$ ")]
    commands: list[str] = []
    pending = ""
    for line in block.text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            commands.append(pending)
            pending = ""
    return commands


def mailseal_arguments(command: str) -> Iterator[list[str]]:
    """The argument lists given to ``mailseal`` in a shell command (after sudo, in pipes...)."""
    words = shlex.split(command, comments=True)
    for index, word in enumerate(words):
        if (word == "mailseal" or word.endswith("/mailseal")) and index + 1 < len(words):
            if words[index + 1] not in COMMANDS:
                continue  # e.g. "sudo -u mailseal": a user name, not the program
            args: list[str] = []
            for arg in words[index + 1 :]:
                if arg in _SHELL_OPERATORS or arg.startswith((">", "<", "2>")):
                    break
                args.append(arg)
            yield args


def check_parses(args: list[str]) -> None:
    """The real parser accepts ``args`` (it raises UsageError for an unknown option)."""
    parser = build_parser(args[0])
    try:
        parser.parse_args(args)
    except UsageError as exc:
        pytest.fail(f"mailseal {shlex.join(args)}: {exc}")


def check_command_syntax(command: str) -> None:
    checked = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, f"{command}: {checked.stderr}"
    for args in mailseal_arguments(command):
        check_parses(args)


# ---------------------------------------------------------------- running blocks in order


class Scratch:
    """The shared folder where runnable blocks run in README order, with the fixtures."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()
        self.done: set[int] = set()
        bin_dir = folder.parent / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "mailseal"
        shim.write_text(f"#!{sys.executable}\n" + SHIM.format(src=str(SRC), head=ZONE_HEAD))
        shim.chmod(0o755)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(SRC),
        }
        (folder / "message.eml").write_bytes(SAMPLE.replace(b"\r\n", b"\n"))

    def run_through(self, target: Block) -> None:
        """Run every runnable block before ``target`` that has not run yet, then ``target``."""
        for block in BLOCKS:
            if block.lang in RUNNABLE and block.marker != "skip" and block.line not in self.done:
                self.done.add(block.line)
                self._run(block)
            if block is target:
                return

    def _run(self, block: Block) -> None:
        if block.lang == "python":
            self._python(block)
            return
        scripts = [block.text] if block.lang == "sh" else shell_commands(block)
        for script in scripts:
            done = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", script],
                cwd=self.folder,
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            assert done.returncode == 0, f"{block.name}: exit {done.returncode}\n{script}\n{done.stderr}"

    def _python(self, block: Block) -> None:
        namespace: dict[str, object] = {"__name__": "__readme__"}
        previous = Path.cwd()
        os.chdir(self.folder)
        try:
            exec(compile(block.text, block.name, "exec"), namespace)  # noqa: S102 - the README's own example
        finally:
            os.chdir(previous)
        report = namespace.get("report")
        if isinstance(report, mailseal.VerificationReport):
            assert report.passed, f"{block.name}: the example's report did not pass: {report}"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Scratch:
    return Scratch(tmp_path_factory.mktemp("readme") / "work")


# ---------------------------------------------------------------- the tests


def test_the_readme_has_the_blocks_this_test_expects() -> None:
    langs = {block.lang for block in BLOCKS}
    assert {"sh", "console", "python", "toml"} <= langs
    assert any(block.marker == "usage" for block in BLOCKS)
    unknown = langs - {*RUNNABLE, "toml", "yaml", "ini", "cron", "text", ""}
    assert not unknown, (
        f"README blocks in languages this test does not know: {unknown} (teach it, or use text)"
    )


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in RUNNABLE], ids=lambda b: b.name)
def test_runnable_block(block: Block, scratch: Scratch) -> None:
    if block.lang == "python":
        compile(block.text, block.name, "exec")
    else:
        for command in shell_commands(block):
            check_command_syntax(command)
    if block.marker == "skip":
        assert block.why, f"{block.name}: a skip marker must say why the block cannot run"
        return
    scratch.run_through(block)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "toml"], ids=lambda b: b.name)
def test_toml_block(block: Block) -> None:
    data = tomllib.loads(block.text)
    if "milter" in data:
        from mailseal.milter.config import parse_config

        parse_config(block.text, path=block.name)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "yaml"], ids=lambda b: b.name)
def test_yaml_block(block: Block) -> None:
    yaml = pytest.importorskip("yaml", reason="pip install pyyaml to check the README's YAML blocks")
    assert yaml.safe_load(block.text) is not None


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "ini"], ids=lambda b: b.name)
def test_ini_block(block: Block) -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(block.text)
    for section in parser.sections():
        command = parser[section].get("ExecStart")
        if command:
            check_command_syntax(command)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "cron"], ids=lambda b: b.name)
def test_cron_block(block: Block) -> None:
    entries = [
        line
        for line in block.text.splitlines()
        if line.strip() and not line.startswith("#") and not re.match(r"^\w+=", line)
    ]
    assert entries
    for entry in entries:
        fields = entry.split(None, 6)
        assert len(fields) == 7, f"{entry!r}: five time fields, a user, a command (/etc/cron.d form)"
        assert all(re.fullmatch(r"[\d*/,-]+", field) for field in fields[:5]), entry
        check_command_syntax(fields[6])


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.marker == "usage"], ids=lambda b: b.name)
def test_usage_synopsis_matches_the_parsers(block: Block) -> None:
    metavars: dict[str, dict[str, str | None]] = {}
    for command in COMMANDS:
        parser = build_parser(command)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        options: dict[str, str | None] = {}
        for action in sub.choices[command]._actions:
            for flag in action.option_strings:
                options[flag] = action.metavar if isinstance(action.metavar, str) else None
        metavars[command] = options
    command = ""
    seen = 0
    for line in block.text.splitlines():
        head = re.match(r"^mailseal ([\w-]+)", line)
        if head:
            command = head[1]
            assert command in COMMANDS, f"{block.name}: no command {command!r}"
        elif not line.startswith(" " * 8) or not command:
            continue
        if line.startswith("    ") and not line.startswith(" " * 8) and not head:
            continue  # a description line
        for flag, word in re.findall(r"(--[\w-]+)(?: ([^\s\[-]\S*))?", line):
            while word.count("]") > word.count("["):
                word = word[:-1]
            options = metavars[command]
            assert flag in options, f"{block.name}: mailseal {command} has no option {flag}"
            want = options[flag]
            if word and (word.upper() == word or "|" in word or ":" in word):
                assert word == want, f"mailseal {command} {flag}: README says {word}, --help says {want}"
            seen += 1
    assert seen > 30
