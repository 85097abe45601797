"""One milter connection as a state machine: events in, reply bytes out, no sockets.

The driver (``server.py``) feeds decoded events to :meth:`Session.handle` and
writes whatever bytes come back, joined, in one write. DNS is the driver's
job too: after end-of-headers :meth:`Session.take_key_queries` names the key
records to look up -- the lookups then overlap the body transfer -- and the
answers go back through :meth:`Session.add_key_answer` before end-of-message.

The body is never buffered: each chunk goes straight into the staged signer
and verifier, which hash it as it streams. Only the header block is kept
(bounded by ``max_header_bytes``), because signing and verifying need it.

Legal event orders are one table (``TRANSITIONS``); anything else is a
:class:`~mailseal.milter.codec.ProtocolError` and the driver closes the
connection (the MTA then applies its ``milter_default_action``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, TypeVar

from mailseal.core.address import AuthorStatus, author
from mailseal.core.authres import authentication_results, claims_authserv_id
from mailseal.core.message import HeaderField
from mailseal.core.results import DKIMResult, VerificationReport
from mailseal.core.signer import Signing, SigningRequest
from mailseal.core.txtanswer import TxtAnswer
from mailseal.core.verifier import Verification
from mailseal.errors import UsageError
from mailseal.milter import codec
from mailseal.milter.actions import (
    Decision,
    Failure,
    Verdict,
    check_requirements,
    most_severe,
    smtp_reply,
    unchecked_requirements,
)
from mailseal.milter.logline import escape, throttle
from mailseal.milter.routing import Origin, Route, classify, client_address, route
from mailseal.milter.runtime import Runtime, SenderSource
from mailseal.milter.signing_table import choose_keys, envelope_sender

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

AUTHRES: Final = "Authentication-Results"
_AUTHRES_NAME: Final = b"authentication-results"
SIGNATURE: Final = "DKIM-Signature"
FIELD_OVERHEAD: Final = 128
"""Bytes each kept header field counts against ``limits.max_header_bytes`` beyond its own size:
what Python holds per field. Without it, 40,000 tiny fields under the byte limit cost ~10 MB."""


class State(Enum):
    """Where a connection is in the protocol."""

    NEGOTIATE = "negotiate"
    CONNECT = "connect"
    ENVELOPE = "envelope"
    MESSAGE = "message"
    HEADERS = "headers"
    BODY = "body"
    CLOSED = "closed"

    # Identity hash, in C: Enum's own __hash__ is Python code, and TRANSITIONS is looked up
    # with a (state, kind) key for every packet. Members are singletons, so this is safe.
    __hash__ = object.__hash__


_S = State
TRANSITIONS: Final[Mapping[tuple[State, type[codec.Event]], State]] = {
    (_S.NEGOTIATE, codec.OptionNegotiation): _S.CONNECT,
    (_S.CONNECT, codec.Connect): _S.ENVELOPE,
    (_S.CONNECT, codec.Helo): _S.ENVELOPE,
    (_S.CONNECT, codec.MailFrom): _S.MESSAGE,
    (_S.CONNECT, codec.Abort): _S.CONNECT,
    (_S.CONNECT, codec.Unknown): _S.CONNECT,
    (_S.ENVELOPE, codec.Helo): _S.ENVELOPE,
    (_S.ENVELOPE, codec.MailFrom): _S.MESSAGE,
    (_S.ENVELOPE, codec.Abort): _S.ENVELOPE,
    (_S.ENVELOPE, codec.Unknown): _S.ENVELOPE,
    (_S.MESSAGE, codec.RcptTo): _S.MESSAGE,
    (_S.MESSAGE, codec.Data): _S.MESSAGE,
    (_S.MESSAGE, codec.Unknown): _S.MESSAGE,
    (_S.MESSAGE, codec.Helo): _S.ENVELOPE,  # HELO after MAIL starts over (an Abort follows)
    (_S.MESSAGE, codec.Header): _S.HEADERS,
    (_S.MESSAGE, codec.EndOfHeaders): _S.BODY,
    (_S.MESSAGE, codec.Abort): _S.ENVELOPE,
    (_S.HEADERS, codec.Header): _S.HEADERS,
    (_S.HEADERS, codec.EndOfHeaders): _S.BODY,
    (_S.HEADERS, codec.Abort): _S.ENVELOPE,
    (_S.BODY, codec.BodyChunk): _S.BODY,
    (_S.BODY, codec.EndOfMessage): _S.ENVELOPE,
    (_S.BODY, codec.Abort): _S.ENVELOPE,
    **{(state, codec.Quit): _S.CLOSED for state in State if state is not _S.CLOSED},
    **{
        (state, codec.QuitNewConnection): _S.CONNECT
        for state in (_S.CONNECT, _S.ENVELOPE, _S.MESSAGE, _S.HEADERS, _S.BODY)
    },
}

# What we ask the MTA for: header edits and quarantine; no HELO/RCPT/DATA/unknown
# events; no replies except at end of message (each reply is a round trip);
# header values exactly as after the colon.
WANTED_ACTIONS: Final = (
    codec.Action.ADD_HEADERS
    | codec.Action.CHANGE_HEADERS
    | codec.Action.QUARANTINE
    | codec.Action.SET_MACRO_LIST
)
WANTED_PROTOCOL: Final = (
    codec.Protocol.NO_HELO
    | codec.Protocol.NO_RCPT
    | codec.Protocol.NO_DATA
    | codec.Protocol.NO_UNKNOWN
    | codec.Protocol.NR_CONNECT
    | codec.Protocol.NR_HELO
    | codec.Protocol.NR_MAIL
    | codec.Protocol.NR_RCPT
    | codec.Protocol.NR_DATA
    | codec.Protocol.NR_UNKNOWN
    | codec.Protocol.NR_HEADER
    | codec.Protocol.NR_EOH
    | codec.Protocol.NR_BODY
    | codec.Protocol.HEADER_LEADING_SPACE
)
# Sending any macro list makes Postfix drop its configured lists for every stage,
# so this names everything we use: SASL login, envelope sender, queue id.
WANTED_MACROS: Final = {
    codec.MacroStage.MAIL: ("{auth_authen}", "{mail_addr}", "i"),
    codec.MacroStage.DATA: ("i",),
    codec.MacroStage.END_OF_MESSAGE: ("i",),
}
NO_REPLY_FLAGS: Final[Mapping[type[codec.Event], codec.Protocol]] = {
    codec.Connect: codec.Protocol.NR_CONNECT,
    codec.Helo: codec.Protocol.NR_HELO,
    codec.MailFrom: codec.Protocol.NR_MAIL,
    codec.RcptTo: codec.Protocol.NR_RCPT,
    codec.Data: codec.Protocol.NR_DATA,
    codec.Unknown: codec.Protocol.NR_UNKNOWN,
    codec.Header: codec.Protocol.NR_HEADER,
    codec.EndOfHeaders: codec.Protocol.NR_EOH,
    codec.BodyChunk: codec.Protocol.NR_BODY,
}
_CONNECTION_STAGES: Final = frozenset({b"C", b"H"})
# Plain-int copies of the flags used per connection and per message.
_WANTED_ACTIONS: Final = int(WANTED_ACTIONS)
_WANTED_PROTOCOL: Final = int(WANTED_PROTOCOL)
_LEADING_SPACE: Final = int(codec.Protocol.HEADER_LEADING_SPACE)
_ADD_HEADERS: Final = int(codec.Action.ADD_HEADERS)
_CHANGE_HEADERS: Final = int(codec.Action.CHANGE_HEADERS)
_QUARANTINE: Final = int(codec.Action.QUARANTINE)
_SET_MACRO_LIST: Final = int(codec.Action.SET_MACRO_LIST)
_NO_REPLY_MASK: Final = sum(int(flag) for flag in NO_REPLY_FLAGS.values())


class _NoReplySets(dict[int, frozenset[type[codec.Event]]]):
    """Negotiated NR_* bits -> the events we do not answer, computed once per distinct MTA offer."""

    def __missing__(self, bits: int) -> frozenset[type[codec.Event]]:
        value = self[bits] = frozenset(kind for kind, flag in NO_REPLY_FLAGS.items() if bits & flag)
        return value


_NO_REPLY_SETS: Final = _NoReplySets()


class _NegotiateReplies(dict[tuple[int, int, int], bytes]):
    """(version, actions, protocol) -> our option-negotiation reply; an MTA sends the same offer every time."""

    def __missing__(self, key: tuple[int, int, int]) -> bytes:
        if len(self) >= 64:  # distinct offers come from distinct MTA builds: a handful at most
            self.clear()
        version, actions, protocol = key
        macros = WANTED_MACROS if actions & _SET_MACRO_LIST else {}
        reply = codec.negotiate_reply(version, codec.Action(actions), codec.Protocol(protocol), macros)
        self[key] = reply
        return reply


_NEGOTIATE_REPLIES: Final = _NegotiateReplies()


@dataclass(frozen=True, slots=True)
class MessageOutcome:
    """What happened to one message: the log line and the metrics are made from this."""

    queue_id: str
    client: str
    origin: Origin | None
    mode: str
    sender_domain: str | None
    decision: Decision
    signed: tuple[tuple[str, str, str], ...]
    """(domain, selector, algorithm) of each signature added."""
    sign_note: str
    """Why a message to be signed was not: ``unlisted``, ``no-sender``, ``unreadable-from``, ``unsignable`` or empty."""
    report: VerificationReport | None
    removed_authres: int
    seconds: float


@dataclass(slots=True)
class _Message:
    """The message in progress on a connection."""

    runtime: Runtime
    sender_args: tuple[str, ...] = ()
    headers: list[HeaderField] = field(default_factory=list)
    header_bytes: int = 0
    oversize: bool = False
    started: float = 0.0
    route: Route | None = None
    sender_domain: str | None = None
    sign_note: str = ""
    signing: Signing | None = None
    signed: tuple[tuple[str, str, str], ...] = ()
    verification: Verification | None = None
    queries: tuple[str, ...] = ()
    decisions: list[Decision] = field(default_factory=list)
    authres_seen: int = 0
    """Received Authentication-Results fields so far (counted even when oversize)."""
    forged_authres: list[int] = field(default_factory=list)
    """1-based positions (among the received A-R fields) of those that could be read as ours; at
    most ``runtime.max_forged_authres`` + 1 are kept, and past that nothing more is parsed."""
    broken: bool = False
    """An internal error happened: no more work on this message, the failure policy decides."""


class Session:
    """The state of one MTA connection; see the module docstring."""

    def __init__(
        self,
        runtime: Callable[[], Runtime],
        *,
        clock: Callable[[], float] = time.time,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        """``runtime`` returns the current configuration (read at each message start)."""
        self._runtime = runtime
        self._clock = clock
        self._timer = timer
        self.state = State.NEGOTIATE
        self._no_reply: frozenset[type[codec.Event]] = frozenset()
        self._actions = 0  # the negotiated SMFIF_* bits, as a plain int (IntFlag operations are slow)
        self._leading_space = False
        self._family: codec.Family | None = None
        self._address = ""
        # The latest macro packet per stage; parsed only when a value is read.
        self._connection_macros: dict[bytes, codec.Macros] = {}
        self._message_macros: dict[bytes, codec.Macros] = {}
        self._message: _Message | None = None
        self.outcome: MessageOutcome | None = None
        """Set at each end of message; the driver logs it and clears it."""

    # -- the entry point ----------------------------------------------------------------

    def handle(self, event: codec.Event) -> bytes:
        """Advance the state machine; return the reply bytes (often none)."""
        kind = type(event)
        if kind is codec.Macros:  # the most frequent packet: no state change, no reply
            return self._on_macros(event)  # type: ignore[arg-type]
        following = TRANSITIONS.get((self.state, kind))
        if following is None:
            raise codec.ProtocolError(f"{kind.__name__} is not allowed in state {self.state.value}")
        self.state = following
        handler = _HANDLERS.get(kind)
        reply = handler(self, event) if handler is not None else b""
        if kind in NO_REPLY_FLAGS and kind not in self._no_reply:
            reply += codec.CONTINUE
        return reply

    @property
    def in_message(self) -> bool:
        """True from MAIL FROM until the end-of-message reply: shutting down now would lose work."""
        return self.state in (State.MESSAGE, State.HEADERS, State.BODY)

    @property
    def closed(self) -> bool:
        """True once the MTA said QUIT."""
        return self.state is State.CLOSED

    def take_key_queries(self) -> tuple[str, ...]:
        """The DNS names to look up for the current message (once, after end-of-headers)."""
        message = self._message
        if message is None or not message.queries:
            return ()
        queries, message.queries = message.queries, ()
        return queries

    def add_key_answer(self, name: str, answer: TxtAnswer) -> None:
        """Give the answer for a name from ``take_key_queries()``."""
        message = self._message
        verification = message.verification if message is not None else None
        if message is None or verification is None or message.broken:
            return
        self._guard(message, lambda: verification.add_key_answer(name, answer))

    # -- connection events ----------------------------------------------------------------

    def _on_negotiate(self, event: codec.OptionNegotiation) -> bytes:
        if event.version < 2:
            raise codec.ProtocolError(f"milter protocol version {event.version} is too old")
        actions = _WANTED_ACTIONS & int(event.actions)  # plain ints: IntFlag operations are slow
        protocol = _WANTED_PROTOCOL & int(event.protocol)
        self._actions = actions
        self._leading_space = bool(protocol & _LEADING_SPACE)
        self._no_reply = _NO_REPLY_SETS[protocol & _NO_REPLY_MASK]
        if not actions & _ADD_HEADERS:
            throttle.warning(
                "no-add-headers",
                "the MTA does not let filters add header fields: mail cannot be signed or marked",
            )
        return _NEGOTIATE_REPLIES[min(event.version, codec.PROTOCOL_VERSION), actions, protocol]

    def _on_macros(self, event: codec.Macros) -> bytes:
        target = self._connection_macros if event.command in _CONNECTION_STAGES else self._message_macros
        target.pop(event.command, None)  # keep the latest last
        target[event.command] = event
        return b""

    def _macro(self, name: str, stage: bytes = b"") -> str | None:
        """The most recently sent value of macro ``name``; only ``stage``'s packet when one was sent."""
        packet = self._message_macros.get(stage)
        if packet is not None:
            return packet.values.get(name)
        for stages in (self._message_macros, self._connection_macros):
            for event in reversed(stages.values()):
                value = event.values.get(name)
                if value is not None:
                    return value
        return None

    def _on_connect(self, event: codec.Connect) -> bytes:
        self._family = event.family
        self._address = event.address
        return b""

    def _on_quit_new_connection(self, _event: codec.Event) -> bytes:
        self._end_message()
        self._connection_macros.clear()
        self._family = None
        self._address = ""
        return b""

    def _on_abort(self, _event: codec.Event) -> bytes:
        if self._message is not None and self._message.started:
            _log.debug("message %s aborted by the MTA", escape(self._macro("i") or "-"))
        self._end_message()
        return b""

    def _end_message(self) -> None:
        self._message = None
        self._message_macros.clear()

    # -- message events -----------------------------------------------------------------

    def _on_mail(self, event: codec.MailFrom) -> bytes:
        self._message = _Message(self._runtime(), event.args)
        return b""

    def _current(self) -> _Message:
        message = self._message
        if message is None:  # MAIL was not sent to us: start at the first header
            message = self._message = _Message(self._runtime())
        if not message.started:
            message.started = self._timer()
        return message

    def _on_header(self, event: codec.Header) -> bytes:
        message = self._current()
        name = event.name
        if len(name) == len(_AUTHRES_NAME) and name.lower() == _AUTHRES_NAME:
            self._on_authres(message, event.value)
        if message.oversize:
            return b""
        raw = codec.field_bytes(name, event.value, leading_space=self._leading_space)
        message.header_bytes += len(raw) + FIELD_OVERHEAD
        if message.header_bytes > message.runtime.max_header_bytes:
            message.oversize = True
            message.headers.clear()
            return b""
        message.headers.append(HeaderField(event.name.decode("utf-8", "replace"), raw))
        return b""

    def _on_end_of_headers(self, _event: codec.Event) -> bytes:
        message = self._current()
        self._guard(message, lambda: self._start(message))
        return b""

    def _on_body(self, event: codec.BodyChunk) -> bytes:
        message = self._message
        if message is not None and not message.broken and (message.signing or message.verification):
            self._guard(message, lambda: self._feed(message, event.data))
        return b""

    def _on_end_of_message(self, event: codec.EndOfMessage) -> bytes:
        message = self._current()
        if event.data and not message.broken:
            self._guard(message, lambda: self._feed(message, event.data))
        reply = b""
        if not message.broken:
            reply = self._guard(message, lambda: self._finish(message)) or b""
        if message.broken:
            message.signed = ()  # whatever was planned, nothing was signed
            deletions = self._authres_deletions(message)
            decision = most_severe(message.decisions)
            reply = self._reply(decision, deletions)
            self._record(message, decision, None, _delivered(decision, deletions))
        self._end_message()
        return reply

    def _on_authres(self, message: _Message, value: bytes) -> None:
        """Note a received Authentication-Results field that could be read as ours (a forgery).

        The work is bounded: each field is scanned at most ``AUTHRES_SCAN_BYTES``,
        and once more than ``max_forged_authres`` forgeries are seen the rest
        are only counted (the message gets ``on_failure.authres_flood``).
        """
        message.authres_seen += 1
        forged = message.forged_authres
        if len(forged) > message.runtime.max_forged_authres:
            return
        if claims_authserv_id(value, message.runtime.authserv_id):
            forged.append(message.authres_seen)

    # -- the work -------------------------------------------------------------------------

    def _guard(self, message: _Message, work: Callable[[], _T]) -> _T | None:
        """Run message work; an unexpected exception follows the failure policy instead of losing mail.

        A message that was to be signed follows the signing policy (the
        stricter one, tempfail by default) even when verifying it failed.
        A message that was to be verified meets every require rule, failed:
        an exception must not be a way around them (issue 8 item 1).
        """
        try:
            return work()
        except Exception:  # noqa: BLE001 - the failure-policy boundary: a bug must not lose a message
            signing = message.route is None or message.route.sign
            failure = Failure.SIGN_INTERNAL_ERROR if signing else Failure.VERIFY_INTERNAL_ERROR
            throttle.log(  # a hostile message can repeat it: one traceback per interval
                logging.ERROR,
                f"internal:{failure}",
                "internal error on message %s; following %s",
                escape(self._macro("i") or "-"),
                failure,
                exc_info=True,
            )
            message.broken = True
            message.signing = None
            message.verification = None
            message.decisions.append(
                message.runtime.failure.decide(failure, "mailseal had an internal error, try again later")
            )
            if message.route is None or message.route.verify:  # a bug must not switch the require rules off
                message.decisions.extend(
                    unchecked_requirements(message.runtime.requirements, "mailseal had an internal error")
                )
            return None

    def _start(self, message: _Message) -> None:
        """End of headers: decide sign/verify, choose keys, and start the staged core."""
        runtime = message.runtime
        authenticated = bool(self._macro("auth_authen", b"M"))
        origin = classify(
            runtime.routing,
            self._family,
            client_address(self._family, self._address),
            authenticated=authenticated,
        )
        decided = message.route = route(runtime.routing, origin)
        if message.oversize:
            why = f"the header is larger than {runtime.max_header_bytes} bytes"
            message.decisions.append(runtime.failure.decide(Failure.HEADER_TOO_LARGE, why))
            if decided.verify:  # the From was not read and nothing was verified: every rule applies
                message.decisions.extend(unchecked_requirements(runtime.requirements, why))
            return
        now = int(self._clock())
        if decided.sign:
            self._start_signing(message, now)
        if decided.verify:
            message.verification = Verification(message.headers, runtime.verify_options, now=now)
            message.queries = message.verification.key_queries()

    def _start_signing(self, message: _Message, now: int) -> None:
        runtime = message.runtime
        if runtime.sender_source is SenderSource.FROM:
            who = author(message.headers)
            if who.status is AuthorStatus.UNREADABLE:  # no key can be chosen: the configured policy decides
                message.sign_note = "unreadable-from"
                message.decisions.append(
                    runtime.failure.decide(
                        Failure.SIGN_FROM_UNREADABLE,
                        "the From field cannot be read, so the message cannot be signed",
                    )
                )
                return
            sender = who.mailbox.address if who.mailbox is not None else None
        else:
            sender = envelope_sender(message.sender_args, self._macro("mail_addr", b"M"))
        if sender is None:
            message.sign_note = "no-sender"
            return
        domain = sender.rpartition("@")[2].lower()
        message.sender_domain = domain
        rule = runtime.table.match(sender)
        if rule is None:
            message.sign_note = "unlisted"
            return
        choice = choose_keys(rule, runtime.keyset, domain)
        if choice.missing:
            for name, problem in choice.missing:
                throttle.log(
                    logging.ERROR,
                    f"key-unavailable:{name}",
                    "signing key %r for %s is unavailable: %s",
                    name,
                    escape(domain),
                    problem,
                )
            message.decisions.append(
                runtime.failure.decide(
                    Failure.SIGN_KEY_UNAVAILABLE,
                    f"the signing key for {domain} is unavailable, try again later",
                )
            )
        if not choice.keys:
            return
        if not self._actions & _ADD_HEADERS:
            message.decisions.append(
                runtime.failure.decide(Failure.SIGN_INTERNAL_ERROR, "the MTA does not allow adding headers")
            )
            return
        requests = [
            SigningRequest(key.key, key.domain, key.selector, key.algorithm, runtime.sign_options)
            for key in choice.keys
        ]
        try:
            message.signing = Signing(message.headers, requests, now=now)
        except UsageError as exc:  # no From field, or a key table entry the core refuses
            message.sign_note = "unsignable"
            throttle.warning(
                "cannot-sign",
                "cannot sign message %s from %s: %s",
                escape(self._macro("i") or "-"),
                escape(domain),
                exc,
            )
            return
        message.signed = tuple((r.domain, r.selector, r.checked_algorithm().name) for r in requests)

    def _feed(self, message: _Message, data: bytes) -> None:
        if message.signing is not None:
            message.signing.feed_body(data)
        if message.verification is not None:
            message.verification.feed_body(data)

    def _finish(self, message: _Message) -> bytes:
        """End of message: the signatures, the Authentication-Results, the verdict."""
        runtime = message.runtime
        # Forgeries of our Authentication-Results go whatever the route (sign-only, oversize too).
        edits = self._authres_deletions(message)
        deletions = len(edits)
        report: VerificationReport | None = None
        if message.verification is not None:
            report = message.verification.finish()
            self._add_authres(message, report, edits)
            message.decisions.extend(
                check_requirements(runtime.requirements, report, runtime.failure, tuple(message.headers))
            )
            if not report.passed and any(s.result is DKIMResult.TEMPERROR for s in report.signatures):
                message.decisions.append(
                    runtime.failure.decide(
                        Failure.VERIFY_DNS_ERROR, "a DKIM key could not be looked up, try again later"
                    )
                )
        if message.signing is not None:
            fields = message.signing.finish()
            for raw in reversed(fields):  # each insert at 0 goes on top: reverse keeps request order
                value = raw[len(SIGNATURE) + 1 :].removesuffix(b"\r\n").decode("ascii")
                edits.append(
                    codec.insert_header(
                        0, SIGNATURE, codec.header_value(value, leading_space=self._leading_space)
                    )
                )
        decision = most_severe(message.decisions)
        if decision.verdict in (Verdict.TEMPFAIL, Verdict.REJECT):
            message.signed = ()
        self._record(message, decision, report, _delivered(decision, edits[:deletions]))
        return self._reply(decision, edits)

    def _authres_deletions(self, message: _Message) -> list[bytes]:
        """CHGHEADER deletions of the received Authentication-Results fields claiming to be ours (forgeries).

        More than ``max_forged_authres`` of them is a flood: removing them all
        would cost one reply frame and one header edit in the MTA each, so the
        message gets ``on_failure.authres_flood`` (reject by default) and none
        is removed; the verdict can only be reject, tempfail or quarantine
        (the configuration refuses accept), so no forgery is delivered.
        """
        forged = message.forged_authres
        if not forged:
            return []
        limit = message.runtime.max_forged_authres
        if len(forged) > limit:
            if not any(d.cause == Failure.AUTHRES_FLOOD for d in message.decisions):
                message.decisions.append(
                    message.runtime.failure.decide(
                        Failure.AUTHRES_FLOOD,
                        f"more than {limit} Authentication-Results fields claim to come from this host",
                    )
                )
            return []
        if not self._actions & _CHANGE_HEADERS:  # an action the MTA did not allow breaks the connection
            throttle.warning(
                "authres-forbidden",
                "cannot remove %d forged Authentication-Results: the MTA forbids it",
                len(forged),
            )
            return []
        # From the bottom up, so the indexes still to be used stay valid.
        return [codec.change_header(position, AUTHRES, b"") for position in reversed(forged)]

    def _add_authres(self, message: _Message, report: VerificationReport, edits: list[bytes]) -> None:
        """Add our Authentication-Results on top, when the MTA lets us add header fields."""
        if not self._actions & _ADD_HEADERS:  # an action the MTA did not allow breaks the connection
            return
        value = " " + authentication_results(message.runtime.authserv_id, report)
        edits.append(
            codec.insert_header(0, AUTHRES, codec.header_value(value, leading_space=self._leading_space))
        )

    def _reply(self, decision: Decision, edits: list[bytes]) -> bytes:
        verdict = decision.verdict
        if verdict is Verdict.ACCEPT:
            return b"".join(edits) + codec.CONTINUE
        if verdict is Verdict.QUARANTINE:
            if self._actions & _QUARANTINE:
                return b"".join(edits) + codec.quarantine(decision.text) + codec.CONTINUE
            throttle.warning("no-quarantine", "cannot quarantine: the MTA does not allow it; accepting")
            return b"".join(edits) + codec.CONTINUE
        code, status, text = smtp_reply(decision)
        return codec.reply_code(code, status, f"mailseal: {text}")

    def _record(
        self, message: _Message, decision: Decision, report: VerificationReport | None, removed: int
    ) -> None:
        decided = message.route
        self.outcome = MessageOutcome(
            queue_id=self._macro("i") or "-",
            client=self._address or "-",
            origin=decided.origin if decided else None,
            mode=decided.mode if decided else "none",
            sender_domain=message.sender_domain,
            decision=decision,
            signed=message.signed,
            sign_note=message.sign_note,
            report=report,
            removed_authres=removed,
            seconds=self._timer() - message.started if message.started else 0.0,
        )


def _delivered(decision: Decision, deletions: list[bytes]) -> int:
    """How many forged Authentication-Results the MTA removes: none when the message is refused."""
    return len(deletions) if decision.verdict in (Verdict.ACCEPT, Verdict.QUARANTINE) else 0


_HANDLERS: Final[Mapping[type[codec.Event], Callable[[Session, Any], bytes]]] = {
    codec.OptionNegotiation: Session._on_negotiate,
    codec.Macros: Session._on_macros,
    codec.Connect: Session._on_connect,
    codec.MailFrom: Session._on_mail,
    codec.Header: Session._on_header,
    codec.EndOfHeaders: Session._on_end_of_headers,
    codec.BodyChunk: Session._on_body,
    codec.EndOfMessage: Session._on_end_of_message,
    codec.Abort: Session._on_abort,
    codec.QuitNewConnection: Session._on_quit_new_connection,
}
