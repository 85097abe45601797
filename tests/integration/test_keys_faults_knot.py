"""Key lifecycle under faults against a real knotd: ticks killed mid-commit, records changed behind
mailseal's back, and an UPDATE the server's ACL refuses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import mailseal
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import KeyState
from support.clock import FIXED_NOW
from support.dnsserver import knot_available
from support.keyflow import DOMAIN, assert_signing_is_safe, rotation_scenario
from support.knotkeys import KeysSetup, keys_setup
from support.required import needs

pytestmark = [
    pytest.mark.integration,
    needs(knot_available(), "knotd", "apt-get install knot knot-dnsutils"),
]

SRC = Path(mailseal.__file__).parents[1]
TESTS = Path(__file__).parents[1]
FOREIGN = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="


def signing_is_safe(setup: KeysSetup, *, must_sign: bool) -> bool:
    """Open the store read-only, as a (re)starting milter does, and check what it would sign with."""
    store = SqliteKeyStore(setup.store, readonly=True)
    try:
        assert_signing_is_safe(store, lambda name: [setup.served(name)], must_sign=must_sign)
        return bool(store.signing_keys(DOMAIN))
    finally:
        store.close()


def tick_killed_before_commit(setup: KeysSetup, now: int, kill_at: int) -> bool:
    """Run a tick in a child that dies right before its ``kill_at``-th COMMIT; False if it finished first."""
    child = subprocess.run(
        [sys.executable, "-m", "support.crashtick", str(setup.config), str(now), str(kill_at), "commit"],
        env={**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "completed" in child.stdout:
        assert child.returncode == 0, (child.stdout, child.stderr)
        return False
    assert child.returncode == -signal.SIGKILL, (child.stdout, child.stderr)
    assert setup.store.with_name("keys.db-journal").stat().st_size > 0  # a hot journal was left
    return True


def test_a_tick_killed_before_each_commit_leaves_a_store_readers_can_open(tmp_path: Path) -> None:
    """Every commit of a whole rotation is interrupted once; a read-only open right after each must work."""
    with keys_setup(tmp_path) as setup:
        setup.cli("generate", DOMAIN, "--selector", "first", now=FIXED_NOW)
        now = FIXED_NOW
        signing = False
        kills = 0
        for moment in rotation_scenario():
            now += moment.advance
            # The first commit of the tick, then each later one: a resumed tick commits once and dies.
            kill_at = 1
            while tick_killed_before_commit(setup, now, kill_at):
                kills += 1
                signing = signing_is_safe(setup, must_sign=signing) or signing
                kill_at = 2
            signing = signing_is_safe(setup, must_sign=signing) or signing
        assert kills >= 10  # every commit of the rotation (generate, publish, confirm, activate, ...)
        store = SqliteKeyStore(setup.store, readonly=True)
        final = {e.selector: e.state for e in store.entries(DOMAIN)}
        store.close()
        assert final == {"first": KeyState.REMOVED, "ms2026q2": KeyState.ACTIVE}
        assert setup.served(f"first._domainkey.{DOMAIN}") == set()


def active_first_key(setup: KeysSetup) -> str:
    setup.cli("generate", DOMAIN, "--selector", "first", now=FIXED_NOW)
    assert setup.cli("tick", now=FIXED_NOW)[0] == 0
    assert setup.cli("tick", now=FIXED_NOW + 3600)[0] == 0
    return f"first._domainkey.{DOMAIN}"


def test_tick_publishes_again_an_active_record_deleted_behind_its_back(tmp_path: Path) -> None:
    with keys_setup(tmp_path) as setup:
        name = active_first_key(setup)
        record = setup.served(name)
        setup.delete_raw(name)  # at the DNS provider, by hand
        assert setup.served(name) == set()
        status, out, err = setup.cli("tick", now=FIXED_NOW + 7200)
        assert status == 0, err
        assert "missing or changed at the primary" in out and "added the record" in out
        assert err == ""  # said once, on standard output
        assert setup.served(name) == record
        status, out, _ = setup.cli("check", DOMAIN, "first", now=FIXED_NOW + 7200)
        assert status == 0, out


def test_tick_reports_a_replaced_record_and_moves_signing_to_a_new_key(tmp_path: Path) -> None:
    with keys_setup(tmp_path) as setup:
        name = active_first_key(setup)
        setup.delete_raw(name)
        setup.add_raw(name, FOREIGN)
        status, out, err = setup.cli("tick", now=FIXED_NOW + 7200)
        assert status == 1  # cron mails the operator
        assert f"error: {name}: {name} holds a TXT record mailseal did not create" in err
        assert setup.served(name) == {FOREIGN}  # never overwritten
        assert "generated ms2026q1._domainkey" in out
        status, out, err = setup.cli("tick", now=FIXED_NOW + 3 * 3600)
        store = SqliteKeyStore(setup.store, readonly=True)
        states = {e.selector: e.state for e in store.entries(DOMAIN)}
        signing = [k.selector for k in store.signing_keys(DOMAIN)]
        store.close()
        assert states == {"first": KeyState.RETIRING, "ms2026q1": KeyState.ACTIVE}
        assert signing == ["ms2026q1"]


def test_an_update_the_acl_refuses_is_explained_and_printed_once(tmp_path: Path) -> None:
    with keys_setup(tmp_path, update_limits=("update-type: A",)) as setup:  # the key may not touch TXT
        setup.cli("generate", DOMAIN, "--selector", "sel", now=FIXED_NOW)
        # A real process: under pytest, logging has handlers and a second copy would not show.
        tick = subprocess.run(
            [
                sys.executable,
                "-m",
                "mailseal",
                "keys",
                "tick",
                "--config",
                str(setup.config),
                "--now",
                str(FIXED_NOW),
            ],
            env={**os.environ, "PYTHONPATH": str(SRC)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert tick.returncode == 1
        lines = [line for line in tick.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, tick.stderr  # once, not once per channel
        assert f"rejected TSIG key {setup.tsig.name}: BADKEY" in lines[0]
        assert "does not know this key name, or knows it but does not allow it to update" in lines[0]
        assert setup.served(f"sel._domainkey.{DOMAIN}") == set()
