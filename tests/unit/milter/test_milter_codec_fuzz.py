"""Fuzz the milter codec and the session behind it: any bytes give events or a ProtocolError, never a crash.

Size and nesting extremes (issue 8, "a fuzz or property test for every parser
that reads wire data"): frames up to and past the frame limit, huge length
words, long runs of tiny frames, deep header values made of parentheses, and
random well-formed frames in random orders fed to a real session.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailseal.keys.source import KeySet
from mailseal.milter import codec
from mailseal.milter.routing import RoutingPolicy, parse_networks
from mailseal.milter.runtime import Runtime
from mailseal.milter.session import Session
from mailseal.milter.signing_table import SigningTable

COMMANDS = b"ABCDEHKLMNOQRTU"  # every command the MTA may send


def frame(command: bytes, payload: bytes) -> bytes:
    return struct.pack("!I", len(payload) + 1) + command + payload


def drain(decoder: codec.Decoder, session: Session | None = None) -> int:
    """Events decoded (and fed to ``session``) until more bytes are needed or a ProtocolError."""
    count = 0
    try:
        while (event := decoder.next_event()) is not None:
            count += 1
            if session is not None:
                session.handle(event)
    except codec.ProtocolError:
        return -1
    return count


_payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda n: b"(" * n + b")" * (n // 2), st.integers(0, 50_000)),  # nesting extremes
    st.builds(lambda n: b"\0" * n, st.integers(0, 5_000)),
    st.builds(
        lambda name, value: name + b"\0" + value + b"\0",
        st.sampled_from([b"From", b"Authentication-Results", b"DKIM-Signature", b"X"]),
        st.binary(max_size=2_000),
    ),
)
_frames = st.builds(frame, st.sampled_from([bytes([c]) for c in COMMANDS]), _payloads)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=5_000))
def test_any_bytes_decode_to_events_or_a_protocol_error(data: bytes) -> None:
    decoder = codec.Decoder()
    decoder.receive(data)
    drain(decoder)


@settings(max_examples=50, deadline=None)
@given(length=st.integers(0, 2**32 - 1), command=st.sampled_from([bytes([c]) for c in COMMANDS]))
def test_any_length_word_is_bounded(length: int, command: bytes) -> None:
    decoder = codec.Decoder()
    decoder.receive(struct.pack("!I", length) + command + b"x" * 100)
    assert drain(decoder) in (-1, 0, 1)
    if length > codec.MAX_FRAME:
        assert drain(decoder) == -1  # refused from the length word alone, nothing buffered


def test_a_run_of_a_hundred_thousand_tiny_frames_decodes() -> None:
    decoder = codec.Decoder()
    decoder.receive(frame(b"D", b"C") * 100_000)
    assert drain(decoder) == 100_000


def _runtime() -> Runtime:
    return Runtime(
        routing=RoutingPolicy(internal_networks=parse_networks(["127.0.0.0/8"])),
        table=SigningTable(()),
        keyset=KeySet({}),
        authserv_id="mx.test",
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_frames, max_size=40))
def test_random_frames_in_random_orders_never_crash_a_session(frames: list[bytes]) -> None:
    runtime = _runtime()
    session = Session(lambda: runtime)
    decoder = codec.Decoder()
    decoder.receive(frame(b"O", struct.pack("!III", 6, 0x1FF, 0x1FFFFF)) + b"".join(frames))
    drain(decoder, session)
