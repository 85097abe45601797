"""Start-up: a command imports what it needs when it runs (timings live in benchmarks, not here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mailseal
from support.messages import SAMPLE

SRC = Path(mailseal.__file__).resolve().parents[1]
HEAVY = ("dns", "cryptography", "mailseal.milter", "mailseal.keys", "sqlite3", "prometheus_client", "httpx")


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        check=True,
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def _heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY)}


def test_importing_the_command_line_loads_no_library_dependency() -> None:
    assert _heavy(_modules_after("import mailseal.cli.main")) == set()


def test_verify_loads_neither_the_milter_nor_the_key_store_nor_doh(tmp_path: Path) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(SAMPLE)
    zone = tmp_path / "z.zone"
    zone.write_text("$ORIGIN example.com.\n@ 300 IN SOA ns hostmaster 1 3600 600 86400 300\n")
    loaded = _modules_after(
        "from mailseal.cli.main import main\n"
        f"assert main(['verify', '--dns-zone', {str(zone)!r}, {str(message)!r}]) == 1"
    )
    unwanted = {
        "mailseal.milter",
        "mailseal.keys",
        "sqlite3",
        "prometheus_client",
        "httpx",
        "httpcore",
        "trio",
    }
    assert {m for m in loaded if m.split(".")[0] in unwanted or m.startswith(tuple(unwanted))} == set()
    assert "mailseal.core.verifier" in loaded  # it did the work


def test_every_public_name_resolves_lazily() -> None:
    for name in mailseal.__all__:
        assert getattr(mailseal, name) is not None, name
    assert set(mailseal.__all__) == set(mailseal._HOME)
    assert set(mailseal.__all__) <= set(dir(mailseal))


def test_verify_through_dns_does_not_load_dns_over_https(tmp_path: Path) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(SAMPLE)
    loaded = _modules_after(
        "from mailseal.cli.main import main\n"
        f"main(['verify', '--nameserver', '127.0.0.1:9', '--timeout', '0.2', {str(message)!r}])"
    )
    assert "dns.asyncresolver" in loaded  # it did ask DNS
    assert not {m for m in loaded if m.startswith(("httpx", "httpcore", "trio", "h2"))}  # also httpx2 forks
