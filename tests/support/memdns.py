"""An in-memory zone for key-lifecycle unit tests: a primary with RFC 2136 prerequisite semantics, lagging secondaries.

It plays both sides the lifecycle needs: the updater a
:class:`~mailseal.keys.publish.DnsUpdatePublisher` sends UPDATEs to, and the
observer that reports what each authoritative server serves. Secondaries copy
the primary only when :meth:`MemoryZone.transfer` is called (or at once with
``auto_transfer``), so tests can hold a lagging secondary back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mailseal.dns.update import TxtStrings
from mailseal.errors import PublishError
from mailseal.keys.publish import Publisher
from mailseal.keys.rotation import DnsView

PRIMARY = "192.0.2.1:53"


def txt(text: str) -> TxtStrings:
    """One record's strings, split at 255 bytes as the publisher does."""
    data = text.encode()
    return tuple(data[i : i + 255] for i in range(0, len(data), 255)) or (b"",)


def joined(records: Sequence[TxtStrings]) -> set[str]:
    return {b"".join(r).decode() for r in records}


@dataclass
class MemoryZone:
    """A primary plus ``secondaries`` copies; ``down`` servers do not answer; UPDATEs are counted."""

    secondaries: int = 0
    auto_transfer: bool = True
    records: dict[str, list[TxtStrings]] = field(default_factory=dict)
    copies: list[dict[str, list[TxtStrings]]] = field(default_factory=list)
    down: set[str] = field(default_factory=set)
    updates: int = 0
    refuse: str | None = None  # raise PublishError with this text on the next UPDATEs

    def __post_init__(self) -> None:
        self.copies = [{} for _ in range(self.secondaries)]

    @property
    def primary(self) -> str:
        return PRIMARY

    @property
    def servers(self) -> list[str]:
        return [PRIMARY] + [f"192.0.2.{n + 2}:53" for n in range(self.secondaries)]

    def transfer(self) -> None:
        """The secondaries catch up with the primary (zone transfer)."""
        for copy in self.copies:
            copy.clear()
            copy.update({name: list(rrs) for name, rrs in self.records.items()})

    def put(self, name: str, *texts: str) -> None:
        """Set the records at ``name`` directly (as an operator or another tool would)."""
        self.records[name] = [txt(t) for t in texts]
        if self.auto_transfer:
            self.transfer()

    def texts(self, name: str) -> set[str]:
        return joined(self.records.get(name, []))

    # The updater side (TxtUpdater).

    def read_txt(self, name: str) -> tuple[TxtStrings, ...]:
        if PRIMARY in self.down:
            raise PublishError(f"the primary {PRIMARY} did not answer")
        return tuple(self.records.get(name, []))

    def change_txt(
        self,
        name: str,
        *,
        expect: Sequence[TxtStrings],
        delete: Sequence[TxtStrings] = (),
        add: Sequence[TxtStrings] = (),
        ttl: int,
    ) -> bool:
        if self.refuse is not None:
            raise PublishError(self.refuse)
        if PRIMARY in self.down:
            raise PublishError(f"the primary {PRIMARY} did not answer")
        current = self.records.get(name, [])
        if sorted(current) != sorted(expect):  # RFC 2136 §3.2: prerequisites compare the whole RRset
            return False
        updated = [r for r in current if r not in delete]
        updated += [r for r in add if r not in updated]
        self.records[name] = updated
        self.updates += 1
        if self.auto_transfer:
            self.transfer()
        return True

    # The observer side (Observer).

    def view(self, name: str, publisher: Publisher) -> DnsView:
        servers: dict[str, frozenset[str] | None] = {}
        for server, data in zip(self.servers, [self.records, *self.copies], strict=True):
            servers[server] = None if server in self.down else frozenset(joined(data.get(name, [])))
        return DnsView(publisher.primary_texts(name), servers)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: int) -> int:
        self.now += seconds
        return self.now
