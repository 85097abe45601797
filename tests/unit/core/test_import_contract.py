"""The "core does no I/O" import contract is real: it names os, time, pathlib and io, and it fails when broken.

The contract is read from pyproject.toml (so this tests the one CI runs) and
run by import-linter on a temporary copy of the package, once as it is and
once with ``import os, time`` added to ``core/message.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
CONTRACT_PREFIX = "the core does no I/O"
IO_MODULES = ("os", "time", "pathlib", "io")


def _contract() -> dict[str, Any]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["name"].startswith(CONTRACT_PREFIX)]
    return {"root": config, "contract": contract}


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def _lint(tmp_path: Path, *, violation: str | None) -> subprocess.CompletedProcess[str]:
    lint = shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed: pip install -e '.[test]'")
    found = _contract()
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "mailseal", src / "mailseal", ignore=shutil.ignore_patterns("*.so", "__pycache__")
    )
    if violation is not None:
        target = src / "mailseal" / "core" / "message.py"
        text = target.read_text()
        target.write_text(text.replace("import re\n", f"import re\n{violation}\n", 1))
    contract = found["contract"]
    (tmp_path / "importlinter.toml").write_text(
        "[tool.importlinter]\n"
        f'root_package = "{found["root"]["root_package"]}"\n'
        f"include_external_packages = {str(found['root'].get('include_external_packages', False)).lower()}\n\n"
        "[[tool.importlinter.contracts]]\n"
        f'name = "{contract["name"]}"\n'
        f'type = "{contract["type"]}"\n'
        f"source_modules = {_toml_list(contract['source_modules'])}\n"
        f"forbidden_modules = {_toml_list(contract['forbidden_modules'])}\n"
    )
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [lint, "--no-cache", "--config", str(tmp_path / "importlinter.toml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_contract_names_the_io_modules() -> None:
    forbidden = set(_contract()["contract"]["forbidden_modules"])
    assert set(IO_MODULES) <= forbidden


def test_the_contract_holds_on_the_core_as_it_is(tmp_path: Path) -> None:
    done = _lint(tmp_path, violation=None)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_contract_fails_when_the_core_imports_io(tmp_path: Path) -> None:
    done = _lint(tmp_path, violation="import io, os, pathlib, time")
    assert done.returncode != 0, done.stdout
    assert "BROKEN" in done.stdout
    for module in IO_MODULES:
        assert f"mailseal.core.message -> {module}" in done.stdout, done.stdout
