"""Message builders and chunkers shared by the unit, property and interop tests."""

from __future__ import annotations

from collections.abc import Iterator

SAMPLE = (
    b"From: Alice Example <alice@example.com>\r\n"
    b"To: Bob <bob@example.net>\r\n"
    b"Subject: Lunch  on\r\n\tThursday?\r\n"
    b"Date: Thu, 1 Jan 2026 10:00:00 +0000\r\n"
    b"Message-ID: <lunch-1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hi Bob,\r\n"
    b"\r\n"
    b"Shall we meet at  noon?\t \r\n"
    b"  -- Alice\r\n"
    b"\r\n"
    b"\r\n"
)


def list_post(to: str = "list", opening: str = "") -> bytes:
    """Alice's meeting notes to a mailing list at lists.example.org: what lists and forwarders change.

    8bit UTF-8 text (a re-encoding target), a Subject a list can tag; ``opening``
    goes before the body's second line.
    """
    return (
        b"From: Alice <alice@example.com>\r\n"
        + f"To: {to}@lists.example.org\r\n".encode()
        + b"Subject: Meeting notes for Thursday\r\n"
        b"Date: Thu, 1 Jan 2026 10:00:00 +0000\r\n"
        b"Message-ID: <notes-1@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"Hello all,\r\n"
        b"\r\n" + f"{opening}Zoë will chair — see you at 10.\r\n".encode() + b"\r\n"
        b"Alice\r\n"
    )


def chunkings(data: bytes) -> Iterator[list[bytes]]:
    """The same bytes whole, byte by byte, in threes, and split inside every CRLF."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    yield [data[i : i + 3] for i in range(0, len(data), 3)]
    cuts = [i + 1 for i in range(len(data) - 1) if data[i : i + 2] == b"\r\n"]
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    yield pieces


def _long_header() -> bytes:
    words = b" ".join(b"recipient%d@example.org," % i for i in range(14))
    return b"Cc: " + words.replace(b", ", b",\r\n\t") + b"\r\n"


# Named message shapes the interop matrix runs in every direction.
VARIANTS: dict[str, bytes] = {
    "plain": SAMPLE,
    "utf8": (
        "From: Zoë Ümlaut <zoe@example.com>\r\nTo: Ĳsbrand <ij@example.net>\r\n"
        "Subject: Grüße — ünïcödé ✓\r\nDate: Thu, 1 Jan 2026 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nHéllo wörld — ✓ ok\r\n日本語のテキスト\r\n"
    ).encode(),
    "empty-body": b"From: a@example.com\r\nTo: b@example.net\r\nSubject: empty\r\n\r\n",
    "no-final-crlf": b"From: a@example.com\r\nTo: b@example.net\r\nSubject: no crlf\r\n\r\nlast line without end",
    "trailing-blank-lines": b"From: a@example.com\r\nSubject: blanks\r\n\r\nbody\r\n\r\n\r\n \r\n\t\r\n\r\n",
    "long-folded-headers": b"From: a@example.com\r\n"
    + _long_header()
    + b"Subject: "
    + b"long " * 40
    + b"\r\n\r\nx\r\n",
    "many-headers": (  # every recommended field present, so h= folds across several lines
        b"From: a@example.com\r\nReply-To: r@example.com\r\nTo: b@example.net\r\nCc: c@example.net\r\n"
        b"Subject: many\r\nDate: Thu, 1 Jan 2026 10:00:00 +0000\r\nMessage-ID: <m@example.com>\r\n"
        b"In-Reply-To: <p@example.com>\r\nReferences: <p@example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: 7bit\r\nList-Id: <list.example.com>\r\n"
        b"List-Unsubscribe: <mailto:u@example.com>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        b"List-Post: <mailto:l@example.com>\r\nSender: s@example.com\r\n\r\nbody\r\n"
    ),
    "whitespace": b"From: a@example.com\r\nSubject: spaced   out\t here\r\n\r\n a  b\t\tc \r\n\t\r\nend  \r\n",
}
