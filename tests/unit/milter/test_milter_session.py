"""The session state machine without sockets: the transition table is the whole protocol."""

from __future__ import annotations

import struct

import pytest

from mailseal.keys.source import KeySet
from mailseal.milter import codec
from mailseal.milter.routing import RoutingPolicy, parse_networks
from mailseal.milter.runtime import Runtime
from mailseal.milter.session import TRANSITIONS, WANTED_PROTOCOL, Session, State
from mailseal.milter.signing_table import SigningTable
from support.clock import FIXED_NOW

RUNTIME = Runtime(RoutingPolicy(parse_networks(["127.0.0.0/8"])), SigningTable([]), KeySet({}), "mx.test")
EXAMPLES: dict[type[codec.Event], codec.Event] = {
    codec.OptionNegotiation: codec.OptionNegotiation(6, codec.Action(0x1FF), codec.Protocol(0x1FFFFF)),
    codec.Connect: codec.Connect("h", codec.Family.INET, 1, "127.0.0.1"),
    codec.Helo: codec.Helo("h"),
    codec.MailFrom: codec.MailFrom(("<a@example.com>",)),
    codec.RcptTo: codec.RcptTo(("<b@example.com>",)),
    codec.Data: codec.Data(),
    codec.Header: codec.Header(b"From", b" a@example.com"),
    codec.EndOfHeaders: codec.EndOfHeaders(),
    codec.BodyChunk: codec.BodyChunk(b"x\r\n"),
    codec.EndOfMessage: codec.EndOfMessage(b""),
    codec.Abort: codec.Abort(),
    codec.Quit: codec.Quit(),
    codec.QuitNewConnection: codec.QuitNewConnection(),
    codec.Unknown: codec.Unknown(b"X"),
}
PATH_TO: dict[State, list[type[codec.Event]]] = {
    State.NEGOTIATE: [],
    State.CONNECT: [codec.OptionNegotiation],
    State.ENVELOPE: [codec.OptionNegotiation, codec.Connect],
    State.MESSAGE: [codec.OptionNegotiation, codec.Connect, codec.MailFrom],
    State.HEADERS: [codec.OptionNegotiation, codec.Connect, codec.MailFrom, codec.Header],
    State.BODY: [codec.OptionNegotiation, codec.Connect, codec.MailFrom, codec.EndOfHeaders],
    State.CLOSED: [codec.OptionNegotiation, codec.Quit],
}


def session_in(state: State) -> Session:
    session = Session(lambda: RUNTIME, clock=lambda: FIXED_NOW)
    for kind in PATH_TO[state]:
        session.handle(EXAMPLES[kind])
    assert session.state is state
    return session


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("kind", list(EXAMPLES))
def test_every_pair_outside_the_table_is_a_protocol_error(state: State, kind: type[codec.Event]) -> None:
    session = session_in(state)
    if (state, kind) in TRANSITIONS:
        session.handle(EXAMPLES[kind])
        assert session.state is TRANSITIONS[(state, kind)]
    else:
        with pytest.raises(codec.ProtocolError):
            session.handle(EXAMPLES[kind])


def test_macros_are_accepted_in_every_state() -> None:
    for state in State:
        assert session_in(state).handle(codec.Macros(b"M", {"i": "Q"})) == b""


def negotiation_reply(version: int, actions: int, protocol: int) -> tuple[int, int, int, bytes]:
    reply = Session(lambda: RUNTIME).handle(
        codec.OptionNegotiation(version, codec.Action(actions), codec.Protocol(protocol))
    )
    assert reply[4:5] == b"O"
    got = struct.unpack("!III", reply[5:17])
    return (*got, reply[17:])


def test_negotiation_asks_only_for_what_is_offered() -> None:
    version, actions, protocol, macros = negotiation_reply(6, 0x1FF, 0x1FFFFF)
    assert version == 6
    assert actions == 0x1 | 0x10 | 0x20 | 0x100  # add/change headers, quarantine, macro lists
    assert protocol == int(WANTED_PROTOCOL)
    assert b"{auth_authen}" in macros and b"{mail_addr}" in macros
    version, actions, protocol, macros = negotiation_reply(2, 0x11, 0x7F)
    assert (version, actions, protocol & ~0x7F, macros) == (
        2,
        0x11,
        0,
        b"",
    )  # nothing unoffered, no macro list


def test_too_old_a_protocol_is_refused() -> None:
    with pytest.raises(codec.ProtocolError, match="too old"):
        negotiation_reply(1, 0x1FF, 0)


def test_events_without_no_reply_get_continue() -> None:
    session = Session(lambda: RUNTIME)
    session.handle(codec.OptionNegotiation(6, codec.Action(0x1FF), codec.Protocol(0)))  # no NR_* offered
    assert session.handle(EXAMPLES[codec.Connect]) == codec.CONTINUE
    assert session.handle(codec.Macros(b"M", {})) == b""  # macros never get a reply
    assert session.handle(EXAMPLES[codec.MailFrom]) == codec.CONTINUE
    assert session.handle(EXAMPLES[codec.Header]) == codec.CONTINUE


def test_unlisted_message_is_accepted_without_changes() -> None:
    session = session_in(State.MESSAGE)
    session.handle(EXAMPLES[codec.Header])
    session.handle(EXAMPLES[codec.EndOfHeaders])
    session.handle(EXAMPLES[codec.BodyChunk])
    assert session.handle(EXAMPLES[codec.EndOfMessage]) == codec.CONTINUE
    assert session.outcome is not None
    assert session.outcome.sign_note == "unlisted"
    assert session.state is State.ENVELOPE


def test_no_header_actions_when_the_mta_does_not_allow_them() -> None:
    session = Session(lambda: RUNTIME)
    session.handle(
        codec.OptionNegotiation(6, codec.Action(0x20), codec.Protocol(0x1FFFFF))
    )  # quarantine only
    session.handle(codec.Connect("h", codec.Family.INET, 1, "192.0.2.1"))  # external: verified
    session.handle(EXAMPLES[codec.MailFrom])
    session.handle(EXAMPLES[codec.Header])
    session.handle(EXAMPLES[codec.EndOfHeaders])
    assert session.handle(EXAMPLES[codec.EndOfMessage]) == codec.CONTINUE  # no A-R insert, just accept
