"""Making DNS serve what a key's state publishes: by DNS UPDATE to the primary, or by telling the operator.

Mailseal's own records are recognised by their exact text, which the store
keeps for every key. Nothing else at a name is ever deleted or replaced: a
key is not published at a name that holds a TXT record mailseal did not
create (:class:`~mailseal.errors.PublishError` says what is there), and
revoking or removing deletes only the exact records mailseal published.
Every UPDATE carries the RRset just read as its prerequisite (see
:mod:`mailseal.dns.update`), so a concurrent change makes it fail rather than
clobber; it is then read and decided again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol, TextIO

from mailseal.core.keyrecord import split_txt, zone_file_record
from mailseal.dns.update import TxtStrings
from mailseal.errors import PublishError
from mailseal.keys.store import KeyEntry

__all__ = ["DnsUpdatePublisher", "ManualPublisher", "Publisher", "TxtUpdater"]

_ATTEMPTS: Final = 3


class Publisher(Protocol):
    """Carries out the DNS side of a key's state."""

    def sync(self, entry: KeyEntry, *, ttl: int) -> str:
        """Make DNS serve ``entry.wanted_text`` and none of ``entry.unwanted_texts``; say what was done.

        Idempotent: calling it again when DNS is already right changes
        nothing. Raises :class:`PublishError` when it cannot.
        """
        ...

    def primary_texts(self, name: str) -> frozenset[str] | None:
        """What the primary serves at ``name`` now (``None`` when there is no primary to ask)."""
        ...


class TxtUpdater(Protocol):
    """Reads and conditionally changes TXT records at the primary (:class:`mailseal.dns.update.DnsUpdater`)."""

    @property
    def primary(self) -> str:
        """The primary's address, for messages."""
        ...

    def read_txt(self, name: str) -> tuple[TxtStrings, ...]:
        """The TXT records at ``name``; raises :class:`PublishError` when the primary cannot be asked."""
        ...

    def change_txt(
        self,
        name: str,
        *,
        expect: Sequence[TxtStrings],
        delete: Sequence[TxtStrings] = (),
        add: Sequence[TxtStrings] = (),
        ttl: int,
    ) -> bool:
        """Apply the change if the RRset is exactly ``expect``; ``False`` if it was not."""
        ...


def _text(strings: TxtStrings) -> str:
    return b"".join(strings).decode("ascii", errors="backslashreplace")


def _strings(text: str) -> TxtStrings:
    return tuple(s.encode("ascii") for s in split_txt(text))


def _preview(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


class DnsUpdatePublisher:
    """Publish with RFC 2136 UPDATEs (TSIG-signed) to the zone's primary server."""

    def __init__(self, updater: TxtUpdater) -> None:
        """Send UPDATEs with ``updater`` (its zone must contain the keys' names)."""
        self.updater = updater

    def __repr__(self) -> str:
        return f"DnsUpdatePublisher({self.updater!r})"

    def primary_texts(self, name: str) -> frozenset[str] | None:
        """The TXT texts at ``name`` on the primary; ``None`` when it cannot be asked."""
        try:
            return frozenset(_text(r) for r in self.updater.read_txt(name))
        except PublishError:
            return None

    def sync(self, entry: KeyEntry, *, ttl: int) -> str:
        """Read the name at the primary, then add/delete our exact records under that prerequisite."""
        name = entry.name
        wanted = entry.wanted_text
        unwanted = set(entry.unwanted_texts)
        for _ in range(_ATTEMPTS):
            current = self.updater.read_txt(name)
            texts = [_text(r) for r in current]
            foreign = [t for t in texts if t != wanted and t not in unwanted]
            delete = [r for r in current if _text(r) in unwanted]
            add = [] if wanted is None or wanted in texts else [_strings(wanted)]
            blocked = bool(add and foreign)
            if blocked:
                add = []  # never add ours beside a record we did not create; still delete ours
            if (delete or add) and not self.updater.change_txt(
                name, expect=current, delete=delete, add=add, ttl=ttl
            ):
                continue  # the name changed since we read it: read and decide again
            if blocked:
                raise PublishError(
                    f"{name} holds a TXT record mailseal did not create ({_preview(foreign[0])!r}); "
                    f"mailseal never overwrites it. Delete it at the DNS provider, or retire this key "
                    f"and generate one with another selector"
                    + ("; our old record there was deleted" if delete else "")
                )
            if not delete and not add:
                return f"the primary {self.updater.primary} already serves it"
            if delete and add:
                return f"replaced our record at the primary {self.updater.primary}"
            if add:
                return f"added the record at the primary {self.updater.primary}"
            return f"deleted our record at the primary {self.updater.primary}"
        raise PublishError(f"{name} kept changing at the primary while mailseal updated it; try again")


class ManualPublisher:
    """Print what to change at the DNS provider; the tick then waits until the servers serve it."""

    def __init__(self, out: TextIO) -> None:
        """Write instructions to ``out`` (the CLI passes standard output)."""
        self.out = out

    def __repr__(self) -> str:
        return "ManualPublisher()"

    def primary_texts(self, name: str) -> frozenset[str] | None:
        """There is no primary to ask in manual mode."""
        return None

    def sync(self, entry: KeyEntry, *, ttl: int) -> str:
        """Print the zone-file lines to add and the exact records to delete."""
        owner = entry.name + "."
        lines = [f"; action needed at the DNS provider for {entry.name} ({entry.state}):"]
        for text in entry.unwanted_texts:
            lines.append("; delete this TXT record if it is there (only this one; leave others alone):")
            lines.append(zone_file_record(owner, split_txt(text), ttl=ttl))
        if entry.wanted_text is not None:
            lines.append(
                "; publish this TXT record (one record; the quoted strings are joined without spaces):"
            )
            lines.append(zone_file_record(owner, split_txt(entry.wanted_text), ttl=ttl))
        self.out.write("\n".join(lines) + "\n")
        return (
            "printed what to change at the DNS provider; waiting until every authoritative server serves it"
        )
