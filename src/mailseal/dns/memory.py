"""A resolver answering from a dict, for tests and for callers that fetch keys themselves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mailseal.core.txtanswer import TxtAnswer, TxtStatus
from mailseal.dns.cache import name_key
from mailseal.errors import UsageError

__all__ = ["InMemoryResolver", "RecordSpec"]

RecordSpec = TxtAnswer | bytes | str | Sequence[bytes | str]
"""One name's answer: a record (str is UTF-8 encoded), several records, or a full TxtAnswer."""


class InMemoryResolver:
    """Serve fixed answers by name (ASCII case-insensitive, trailing dot optional).

    Names not in the mapping are NXDOMAIN. A :class:`TxtAnswer` value is returned
    as given, which is how tests simulate timeouts, SERVFAIL or DNSSEC-validated
    answers. Every lookup is appended to :attr:`queries` as passed, so tests can
    assert how often a cache in front of it asked.
    """

    def __init__(self, records: Mapping[str, RecordSpec] | None = None, *, ttl: int = 300) -> None:
        """Store ``records``; ``ttl`` is given to answers built from plain strings or bytes."""
        self.queries: list[str] = []
        self._ttl = ttl
        self._answers: dict[str, TxtAnswer] = {}
        for name, spec in (records or {}).items():
            self.set(name, spec)

    def set(self, name: str, spec: RecordSpec) -> None:
        """Replace what ``name`` answers (e.g. to publish a rotated key mid-test)."""
        self._answers[name_key(name)] = self._answer(name, spec)

    def remove(self, name: str) -> None:
        """Make ``name`` NXDOMAIN again."""
        self._answers.pop(name_key(name), None)

    async def lookup_txt(self, name: str) -> TxtAnswer:
        """Return the stored answer for ``name``."""
        return self.lookup_txt_sync(name)

    def lookup_txt_sync(self, name: str) -> TxtAnswer:
        """Return the stored answer for ``name``."""
        self.queries.append(name)
        answer = self._answers.get(name_key(name))
        if answer is None:
            return TxtAnswer.failure(TxtStatus.NXDOMAIN, f"{name} is not in the in-memory records")
        return answer

    def _answer(self, name: str, spec: RecordSpec) -> TxtAnswer:
        if isinstance(spec, TxtAnswer):
            return spec
        # Typed as object: callers outside mypy may pass anything, and get a clear error.
        items: Sequence[object] = [spec] if isinstance(spec, bytes | str) else spec
        records: list[bytes] = []
        for item in items:
            if isinstance(item, str):
                records.append(item.encode())
            elif isinstance(item, bytes):
                records.append(item)
            else:
                raise UsageError(f"record for {name!r} must be str or bytes, not {type(item).__name__}")
        return TxtAnswer.found(tuple(records), ttl=self._ttl)
