"""One rule for tools the tests drive (knotd, Postfix, OpenDKIM, Mail::DKIM, dkimpy...).

A missing tool skips the tests that need it, with a one-line reason that says what
to install; when MAILSEAL_REQUIRE_PEERS is set (CI sets it, see .ci/run) the same
tests fail instead, so a broken CI image can never pass by skipping.

* ``needs(available, what, install)``: a mark for a module's ``pytestmark`` or a test;
* ``need(available, what, install)``: the same decision inside a test or fixture.
"""

from __future__ import annotations

import os

import pytest

MISSING_MARK = "required_tool_missing"  # tests/conftest.py fails items carrying it


def peers_required() -> bool:
    """True when CI asks for every peer: a missing one is a failure."""
    return bool(os.environ.get("MAILSEAL_REQUIRE_PEERS"))


def _reason(what: str, install: str) -> str:
    return f"{what} is not available ({install})"


def needs(available: bool, what: str, install: str) -> pytest.MarkDecorator:
    """Skip (or, with MAILSEAL_REQUIRE_PEERS, fail) the marked tests when ``available`` is false."""
    reason = _reason(what, install)
    if available:
        return pytest.mark.skipif(False, reason=reason)
    if peers_required():
        missing: pytest.MarkDecorator = getattr(pytest.mark, MISSING_MARK)
        return missing(f"{reason}, and MAILSEAL_REQUIRE_PEERS is set")
    return pytest.mark.skip(reason=reason)


def need(available: bool, what: str, install: str) -> None:
    """Inside a test or fixture: return if ``available``, else skip (or fail when peers are required)."""
    if available:
        return
    reason = _reason(what, install)
    if peers_required():
        pytest.fail(f"{reason}, and MAILSEAL_REQUIRE_PEERS is set")
    pytest.skip(reason)
