"""The milter codec: every packet kind, any read boundaries, limits, and agreement with kilter.protocol."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kilter.protocol import messages as kilter
from kilter.protocol.buffer import SimpleBuffer

from mailseal.milter import codec


def packet(command: bytes, payload: bytes = b"") -> bytes:
    return struct.pack("!I", len(payload) + 1) + command + payload


STREAM = b"".join(
    [
        packet(b"O", struct.pack("!III", 6, 0x1FF, 0x1FFFFF)),
        packet(b"D", b"Cj\0mx.example\0{daemon_name}\0smtpd\0"),
        packet(b"C", b"client.example\x004" + struct.pack("!H", 2525) + b"192.0.2.7\0"),
        packet(b"H", b"helo.example\0"),
        packet(b"D", b"M{auth_authen}\0al\xc3\xafce\0{mail_addr}\0j\xc3\xb6rg@example.com\0"),
        packet(b"M", b"<alice@example.com>\0SIZE=100\0"),
        packet(b"R", b"<bob@example.net>\0"),
        packet(b"T"),
        packet(b"L", b"Subject\0 hello\n\tworld\0"),
        packet(b"L", b"X-Empty\0\0"),
        packet(b"N"),
        packet(b"B", b"body line\r\n" * 300),
        packet(b"E"),
        packet(b"A"),
        packet(b"K"),
        packet(b"U", b"XYZZY\0"),
        packet(b"Q"),
    ]
)
EXPECTED: list[codec.Event] = [
    codec.OptionNegotiation(6, codec.Action(0x1FF), codec.Protocol(0x1FFFFF)),
    codec.Macros(b"C", {"j": "mx.example", "daemon_name": "smtpd"}),
    codec.Connect("client.example", codec.Family.INET, 2525, "192.0.2.7"),
    codec.Helo("helo.example"),
    codec.Macros(b"M", {"auth_authen": "alïce", "mail_addr": "jörg@example.com"}),
    codec.MailFrom(("<alice@example.com>", "SIZE=100")),
    codec.RcptTo(("<bob@example.net>",)),
    codec.Data(),
    codec.Header(b"Subject", b" hello\n\tworld"),
    codec.Header(b"X-Empty", b""),
    codec.EndOfHeaders(),
    codec.BodyChunk(b"body line\r\n" * 300),
    codec.EndOfMessage(b""),
    codec.Abort(),
    codec.QuitNewConnection(),
    codec.Unknown(b"XYZZY\0"),
    codec.Quit(),
]


def decode_in_pieces(data: bytes, cuts: list[int]) -> list[codec.Event]:
    decoder = codec.Decoder()
    events: list[codec.Event] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        decoder.receive(data[start:cut])
        start = cut
        while (event := decoder.next_event()) is not None:
            events.append(event)
    assert decoder.buffered == 0
    return events


def test_every_packet_kind_decodes() -> None:
    assert decode_in_pieces(STREAM, []) == EXPECTED


def test_byte_by_byte_gives_the_same_events() -> None:
    assert decode_in_pieces(STREAM, list(range(1, len(STREAM)))) == EXPECTED


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=40))
def test_any_read_boundaries_give_the_same_events(cuts: list[int]) -> None:
    assert decode_in_pieces(STREAM, cuts) == EXPECTED


def test_incomplete_packet_waits_for_more() -> None:
    decoder = codec.Decoder()
    decoder.receive(packet(b"B", b"x" * 100)[:50])
    assert decoder.next_event() is None
    assert decoder.buffered == 50


def test_unix_and_unknown_family_connects() -> None:
    unix = packet(b"C", b"localhost\0L" + struct.pack("!H", 0) + b"/var/run/sock\0")
    unknown = packet(b"C", b"unknown\0U")
    assert decode_in_pieces(unix + unknown, []) == [
        codec.Connect("localhost", codec.Family.UNIX, 0, "/var/run/sock"),
        codec.Connect("unknown", codec.Family.UNKNOWN, 0, ""),
    ]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (struct.pack("!I", 0), "outside"),
        (struct.pack("!I", codec.MAX_FRAME + 1) + b"B", "outside"),
        (packet(b"Z"), "unknown milter command"),
        (packet(b"O", b"\0\0"), "need 12"),
        (packet(b"C", b"host\0X"), "address family"),
        (packet(b"L", b"no-nul-at-all"), "NUL"),
    ],
)
def test_garbage_is_a_protocol_error(data: bytes, words: str) -> None:
    decoder = codec.Decoder()
    decoder.receive(data)
    with pytest.raises(codec.ProtocolError, match=words):
        decoder.next_event()


def test_reply_encodings() -> None:
    assert codec.CONTINUE == b"\0\0\0\x01c"
    assert codec.insert_header(0, "DKIM-Signature", b" v=1") == packet(
        b"i", b"\0\0\0\0DKIM-Signature\0 v=1\0"
    )
    assert codec.change_header(2, "Authentication-Results", b"") == packet(
        b"m", b"\0\0\0\x02Authentication-Results\0\0"
    )
    assert codec.reply_code(550, "5.7.20", "no\r\nbreak %s") == packet(b"y", b"550 5.7.20 no??break ?s\0")
    with pytest.raises(ValueError, match="4xx/5xx"):
        codec.reply_code(250, "2.0.0", "ok")
    with pytest.raises(ValueError, match="matching status"):
        codec.reply_code(451, "5.0.0", "mismatch")


def test_header_value_and_field_bytes() -> None:
    assert codec.header_value(" a\r\n\tb", leading_space=True) == b" a\n\tb"
    assert codec.header_value(" a\r\n\tb", leading_space=False) == b"a\n\tb"
    assert codec.field_bytes(b"Subject", b"\tx\n y", leading_space=True) == b"Subject:\tx\r\n y\r\n"
    assert codec.field_bytes(b"Subject", b"x", leading_space=False) == b"Subject: x\r\n"


# -- kilter.protocol as an independent reference -------------------------------------------


def kilter_pack(message: kilter.Message) -> bytes:
    buffer = SimpleBuffer(1 << 16)
    message.pack(buffer)
    return buffer[:].tobytes()


def test_our_decoder_reads_what_kilter_writes() -> None:
    data = b"".join(
        kilter_pack(m)
        for m in (
            kilter.Negotiate(6, kilter.ActionFlags(0x1FF), kilter.ProtocolFlags(0x1FFFFF)),
            kilter.Macro(ord("M"), {"i": "ABC", "{auth_authen}": "bob"}),
            kilter.Connect("c.example", IPv4Address("198.51.100.2"), 4242),
            kilter.EnvelopeFrom(b"<a@example.com>", [b"BODY=8BITMIME"]),
            kilter.Header("From", b" a@example.com"),
            kilter.EndOfHeaders(),
            kilter.Body(b"hello\r\n"),
            kilter.EndOfMessage(b""),
        )
    )
    events = decode_in_pieces(data, [])
    assert events[0] == codec.OptionNegotiation(6, codec.Action(0x1FF), codec.Protocol(0x1FFFFF))
    assert events[1] == codec.Macros(b"M", {"i": "ABC", "auth_authen": "bob"})
    assert events[2] == codec.Connect("c.example", codec.Family.INET, 4242, "198.51.100.2")
    assert events[3] == codec.MailFrom(("<a@example.com>", "BODY=8BITMIME"))
    assert events[4] == codec.Header(b"From", b" a@example.com")
    assert events[5:] == [codec.EndOfHeaders(), codec.BodyChunk(b"hello\r\n"), codec.EndOfMessage(b"")]


def kilter_unpack(data: bytes) -> list[kilter.Message]:
    buffer = SimpleBuffer(1 << 16)
    buffer[:] = data
    out = []
    while buffer.filled:
        message, size = kilter.Message.unpack(buffer)
        message.freeze()
        out.append(message)
        del buffer[:size]
    return out


def test_kilter_reads_what_we_write() -> None:
    data = (
        codec.negotiate_reply(
            6,
            codec.Action.ADD_HEADERS,
            codec.Protocol.NR_HEADER,
            {codec.MacroStage.MAIL: ("i", "{auth_authen}")},
        )
        + codec.insert_header(0, "DKIM-Signature", b" v=1;\n\tb=x")
        + codec.change_header(1, "Authentication-Results", b"")
        + codec.add_header("X-Test", b" yes")
        + codec.quarantine("held")
        + codec.CONTINUE
        + codec.TEMPFAIL
    )
    unpacked = kilter_unpack(data)
    assert [type(m) for m in unpacked[5:]] == [kilter.Continue, kilter.TemporaryFailure]  # no __eq__ there
    assert unpacked[:5] == [
        kilter.Negotiate(
            6,
            kilter.ActionFlags.ADD_HEADERS,
            kilter.ProtocolFlags.NR_HEADER,
            {kilter.Stage.ENVELOPE_FROM: ["i", "{auth_authen}"]},
        ),
        kilter.InsertHeader(0, "DKIM-Signature", b" v=1;\n\tb=x"),
        kilter.ChangeHeader(1, "Authentication-Results", b""),
        kilter.AddHeader("X-Test", b" yes"),
        kilter.Quarantine("held"),
    ]
