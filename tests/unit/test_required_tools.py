"""The rule for tools the tests drive: skip with what to install, fail when CI requires them."""

from __future__ import annotations

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
