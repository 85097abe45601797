"""The rule for tools the tests drive: skip with what to install, fail when CI requires them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from support.required import MISSING_MARK, need, needs


def test_a_missing_tool_skips_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAILSEAL_REQUIRE_PEERS", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"knotd is not available \(apt-get install knot\)"):
        need(False, "knotd", "apt-get install knot")
    assert needs(False, "knotd", "apt-get install knot").name == "skip"


def test_a_missing_tool_fails_when_peers_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSEAL_REQUIRE_PEERS", "1")
    with pytest.raises(pytest.fail.Exception, match="MAILSEAL_REQUIRE_PEERS is set"):
        need(False, "knotd", "apt-get install knot")
    assert needs(False, "knotd", "apt-get install knot").name == MISSING_MARK


def test_a_present_tool_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILSEAL_REQUIRE_PEERS", "1")
    need(True, "knotd", "apt-get install knot")
    mark = needs(True, "knotd", "apt-get install knot")
    assert mark.name == "skipif" and mark.args == (False,)


def test_every_skip_for_a_missing_tool_goes_through_the_helper() -> None:
    """A copied skip rule drifts (one skipped a missing peer even when CI required it):
    only support/required.py reads MAILSEAL_REQUIRE_PEERS, and no integration module
    writes its own skipif."""
    tests = Path(__file__).resolve().parents[1]
    reads_switch = re.compile(r"environ(?:\.get\(|\[)\s*['\"]MAILSEAL_REQUIRE_PEERS")
    readers = sorted(
        str(path.relative_to(tests))
        for path in tests.rglob("*.py")
        if path.name != "required.py" and reads_switch.search(path.read_text(encoding="utf-8"))
    )
    assert readers == []
    inline = sorted(
        path.name
        for path in (tests / "integration").glob("test_*.py")
        if "pytest.mark.skipif(" in path.read_text(encoding="utf-8")
    )
    assert inline == []
