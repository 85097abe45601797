"""Reports from an IMAP mailbox over TLS: fetch, ingest, move (the only importer of imapclient).

Each message is ingested first and moved second (to ``done`` when every
report in it was stored or was a duplicate, to ``quarantine`` otherwise), so
a run killed between the two leaves the message where it was: the next run
reads it again and the store's duplicate detection keeps the report once.
When the store cannot take a report (``TemporaryFailure``) the message stays
in the inbox and the run stops, to be retried. Every network step has a
deadline (``timeout``); a message larger than the input cap is not
downloaded but moved to ``quarantine`` with the reason logged.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mailseal.reports.ingest import Ingestor, Outcome, Status
from mailseal.reports.unpack import Item

__all__ = ["FetchError", "FetchResult", "ImapSettings", "fetch_once"]

BATCH: Final = 20  # messages moved per round; downloaded in groups of about one input cap (bounded memory)


class FetchError(Exception):
    """The mailbox could not be read (connection, TLS, login, folder): try again later."""


@dataclass(frozen=True, slots=True)
class ImapSettings:
    """Where the reports arrive and where processed mail goes."""

    host: str
    user: str
    password: str = field(repr=False)
    port: int = 993
    mailbox: str = "INBOX"
    done: str = "dmarc-done"
    quarantine: str = "dmarc-quarantine"
    cafile: Path | None = None  # trust this CA (a private server); default: the system's
    timeout: float = 60.0


@dataclass(slots=True)
class FetchResult:
    """What one run did."""

    messages: int = 0
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def quarantined(self) -> int:
        """Reports that went to quarantine."""
        return sum(o.status is Status.QUARANTINED for o in self.outcomes)


def _context(settings: ImapSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(settings.cafile) if settings.cafile else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _move(client: IMAPClient, uids: list[int], folder: str) -> None:
    if not uids:
        return
    if client.has_capability("MOVE"):
        client.move(uids, folder)
        return
    client.copy(uids, folder)
    client.delete_messages(uids)
    if client.has_capability("UIDPLUS"):
        client.uid_expunge(uids)
    else:
        client.expunge()


def fetch_once(
    settings: ImapSettings,
    ingestor: Ingestor,
    *,
    on_outcome: Callable[[Outcome], None] = lambda _: None,
    limit: int | None = None,
) -> FetchResult:
    """Process every message in the mailbox (at most ``limit``); raises FetchError or TemporaryFailure."""
    result = FetchResult()
    try:
        client = IMAPClient(
            settings.host,
            port=settings.port,
            ssl=True,
            ssl_context=_context(settings),
            timeout=settings.timeout,
        )
    except (OSError, IMAPClientError) as exc:
        raise FetchError(f"cannot connect to {settings.host}:{settings.port}: {_words(exc)}") from None
    try:
        try:
            client.login(settings.user, settings.password)
            for folder in (settings.done, settings.quarantine):
                if not client.folder_exists(folder):
                    client.create_folder(folder)
            client.select_folder(settings.mailbox)
            uids: list[int] = sorted(client.search("ALL"))
        except (OSError, IMAPClientError) as exc:
            raise FetchError(f"{settings.host}: {_words(exc)}") from None
        if limit is not None:
            uids = uids[:limit]
        for start in range(0, len(uids), BATCH):
            _batch(client, settings, ingestor, uids[start : start + BATCH], result, on_outcome)
    finally:
        try:
            client.logout()
        except (OSError, IMAPClientError):
            client.shutdown()
    return result


def _batch(
    client: IMAPClient,
    settings: ImapSettings,
    ingestor: Ingestor,
    uids: list[int],
    result: FetchResult,
    on_outcome: Callable[[Outcome], None],
) -> None:
    cap = ingestor.limits.input_bytes
    try:
        sizes: dict[int, Any] = client.fetch(uids, ["RFC822.SIZE"])
    except (OSError, IMAPClientError) as exc:
        raise FetchError(f"{settings.host}: {_words(exc)}") from None
    done: list[int] = []
    bad: list[int] = []
    for group, download in _by_size(uids, sizes, cap):
        try:
            bodies: dict[int, Any] = client.fetch(group, ["BODY.PEEK[]"]) if download else {}
        except (OSError, IMAPClientError) as exc:
            raise FetchError(f"{settings.host}: {exc}") from None
        for uid in group:
            data = bodies.pop(uid, {}).get(b"BODY[]")
            _one(uid, data, sizes, settings, ingestor, result, on_outcome, done, bad)
    try:
        _move(client, done, settings.done)
        _move(client, bad, settings.quarantine)
    except (OSError, IMAPClientError) as exc:
        raise FetchError(f"{settings.host}: cannot move processed mail: {_words(exc)}") from None


def _size(sizes: dict[int, Any], uid: int) -> int:
    return int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0))


def _by_size(uids: list[int], sizes: dict[int, Any], cap: int) -> Iterator[tuple[list[int], bool]]:
    """``(uids, download)``: groups of at most one input cap of mail per FETCH, so memory holds
    about one cap, not a batch of them; a message over the cap alone, not downloaded (quarantine)."""
    group: list[int] = []
    total = 0
    for uid in uids:
        size = _size(sizes, uid)
        if size > cap:
            yield [uid], False
            continue
        if group and total + size > cap:
            yield group, True
            group, total = [], 0
        group.append(uid)
        total += size
    if group:
        yield group, True


def _one(
    uid: int,
    data: object,
    sizes: dict[int, Any],
    settings: ImapSettings,
    ingestor: Ingestor,
    result: FetchResult,
    on_outcome: Callable[[Outcome], None],
    done: list[int],
    bad: list[int],
) -> None:
    label = f"imap://{settings.host}/{settings.mailbox};UID={uid}"
    if not isinstance(data, bytes):
        outcome = Outcome(
            Status.QUARANTINED,
            label,
            f"{_size(sizes, uid)} bytes, larger than the input limit; left in {settings.quarantine}",
        )
        result.outcomes.append(outcome)
        on_outcome(outcome)
        bad.append(uid)
        return
    result.messages += 1
    outcomes = list(ingestor.ingest(_item(label, data)))  # TemporaryFailure: stop, the message stays
    for outcome in outcomes:
        result.outcomes.append(outcome)
        on_outcome(outcome)
    (bad if any(o.status is Status.QUARANTINED for o in outcomes) else done).append(uid)


def _item(label: str, data: bytes) -> Item:
    return Item(label, lambda: data)


def _words(exc: BaseException) -> str:
    """The error in plain words: an OSError's text without Python's ``[Errno N]`` prefix."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return re.sub(r"\[Errno -?\d+\] ", "", str(exc)) or type(exc).__name__
