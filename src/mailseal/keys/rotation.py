"""Key rotation as a table of legal moves plus a pure planner: snapshot + DNS observations + now -> steps.

Every legal ``(KeyState, Event)`` pair is in :data:`TRANSITIONS`; anything
absent is an error (:class:`InvalidTransitionError`). :func:`plan` reads the
store's entries, what the authoritative servers serve (:class:`DnsView`) and
the time, and returns the :class:`Step` objects to take; it does no I/O and
reads no clock. :mod:`mailseal.keys.lifecycle` executes the steps, committing
each step's state change to the store *before* its DNS work, so a crash at any
point leaves a state from which the next tick carries on.

The one rule everything else serves: a key becomes ``active`` (is used to
sign) only after every authoritative server was seen serving it, and it leaves
``active`` only in the same transaction that activates its successor (no
signing gap) or by an operator's explicit ``retire``/``revoke``.

Lineage-level step: when the newest active key of a (domain, key type) is
older than ``rotate_every``, or DNS serves someone else's record at its name
(:func:`replaced`: it cannot verify, and mailseal never overwrites), and no
successor is under way, :func:`plan` asks for a new key
(:attr:`Action.GENERATE`), named by the selector scheme.

Active and retiring keys are looked at on every tick too: a record deleted
behind mailseal's back is published again (``DNS_BEHIND`` -> ``SEND``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import DEFAULT_RSA_BITS
from mailseal.errors import UsageError
from mailseal.keys.selectors import DEFAULT_SCHEME, selector_for
from mailseal.keys.store import Change, KeyEntry, KeyState

__all__ = [
    "TRANSITIONS",
    "Action",
    "DnsView",
    "Event",
    "Generation",
    "InvalidTransitionError",
    "Policies",
    "RotationPolicy",
    "Step",
    "dns_event",
    "move",
    "outlook",
    "plan",
    "replaced",
    "state_diagram",
]

DAY: Final = 86400


class Event(StrEnum):
    """What happened to a key, or what someone asked of it."""

    PUBLISH = "publish"  # a generated key is to go into DNS (tick, or `keys publish`)
    DNS_BEHIND = "dns-behind"  # the primary does not serve what the state publishes (yet)
    DNS_LAGGING = "dns-lagging"  # the primary does; some authoritative server does not yet
    DNS_UNKNOWN = "dns-unknown"  # a server did not answer: try again next tick
    DNS_SYNCED = "dns-synced"  # every authoritative server serves what the state publishes
    PROPAGATED = "propagated"  # visible everywhere for `propagation_delay`: start signing with it
    SUPERSEDED = "superseded"  # a newer key of the same lineage was activated
    GRACE_OVER = "grace-over"  # retiring for `grace`: mail in flight has been verified
    REVOCATION_KNOWN = "revocation-known"  # revoked record served everywhere for `revoked_for`
    RETIRE = "retire"  # operator: stop signing with this key (`keys retire`)
    REVOKE = "revoke"  # operator: revoke now, no grace (a compromised key)
    ROTATION_DUE = "rotation-due"  # lineage-level (no key moves): make a successor key


class Action(StrEnum):
    """What executing a step does after its state change is recorded."""

    SEND = "send"  # make DNS serve what the new state publishes (DNS UPDATE, or tell the operator)
    WAIT = "wait"  # nothing now; look again next tick
    CONFIRM = "confirm"  # store only: DNS was seen serving it everywhere
    ACTIVATE = "activate"  # store only: sign with this key (its predecessors retire in the same commit)
    RETIRE = "retire"  # store only: stop signing; stays published for the grace period
    DISCARD = "discard"  # store only: a key that was never published is removed (key destroyed)
    GENERATE = "generate"  # lineage-level: make a successor key


G, P, A, R, V, X = (
    KeyState.GENERATED,
    KeyState.PUBLISHED,
    KeyState.ACTIVE,
    KeyState.RETIRING,
    KeyState.REVOKED,
    KeyState.REMOVED,
)

TRANSITIONS: Final[Mapping[tuple[KeyState, Event], tuple[Action, KeyState]]] = {
    (G, Event.PUBLISH): (Action.SEND, P),
    (G, Event.RETIRE): (Action.DISCARD, X),
    (G, Event.REVOKE): (Action.DISCARD, X),
    (P, Event.DNS_BEHIND): (Action.SEND, P),  # (re)send: the UPDATE is idempotent
    (P, Event.DNS_LAGGING): (Action.WAIT, P),
    (P, Event.DNS_UNKNOWN): (Action.WAIT, P),
    (P, Event.DNS_SYNCED): (Action.CONFIRM, P),
    (P, Event.PROPAGATED): (Action.ACTIVATE, A),  # the only way into ACTIVE
    (P, Event.RETIRE): (Action.SEND, X),  # it never signed anything: delete at once
    (P, Event.REVOKE): (Action.SEND, X),
    (A, Event.DNS_BEHIND): (Action.SEND, A),  # deleted or changed behind our back: publish it again
    (A, Event.DNS_LAGGING): (Action.WAIT, A),
    (A, Event.DNS_UNKNOWN): (Action.WAIT, A),
    (A, Event.SUPERSEDED): (Action.RETIRE, R),
    (A, Event.RETIRE): (Action.RETIRE, R),
    (A, Event.REVOKE): (Action.SEND, V),
    (R, Event.DNS_BEHIND): (Action.SEND, R),  # mail in flight still needs it
    (R, Event.DNS_LAGGING): (Action.WAIT, R),
    (R, Event.DNS_UNKNOWN): (Action.WAIT, R),
    (R, Event.GRACE_OVER): (Action.SEND, V),
    (R, Event.REVOKE): (Action.SEND, V),
    (V, Event.DNS_BEHIND): (Action.SEND, V),
    (V, Event.DNS_LAGGING): (Action.WAIT, V),
    (V, Event.DNS_UNKNOWN): (Action.WAIT, V),
    (V, Event.DNS_SYNCED): (Action.CONFIRM, V),
    (V, Event.REVOCATION_KNOWN): (Action.SEND, X),
    (X, Event.DNS_BEHIND): (Action.SEND, X),
    (X, Event.DNS_LAGGING): (Action.WAIT, X),
    (X, Event.DNS_UNKNOWN): (Action.WAIT, X),
    (X, Event.DNS_SYNCED): (Action.CONFIRM, X),
}
"""(state, event) -> (action, new state): every legal move of a key, and no other."""


class InvalidTransitionError(UsageError):
    """The event is not legal in the key's state (e.g. retiring a removed key)."""


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """How often to rotate and how long each phase lasts (seconds)."""

    rotate_every: int | None = 180 * DAY  # None: never rotate automatically
    grace: int = 7 * DAY  # retiring -> revoked: mail in flight still verifies
    propagation_delay: int = 3600  # visible everywhere -> active: caches that saw NXDOMAIN forget it
    revoked_for: int = 7 * DAY  # revoked (p= empty) record kept before removal
    key_type: KeyType = KeyType.RSA
    bits: int = DEFAULT_RSA_BITS
    selector_scheme: str = DEFAULT_SCHEME
    ttl: int = 3600  # TTL of the published records

    def __post_init__(self) -> None:
        for name in ("grace", "propagation_delay", "revoked_for"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must not be negative")
        if self.rotate_every is not None and self.rotate_every <= 0:
            raise UsageError("rotate_every must be positive (or None to rotate only by hand)")
        if not 0 < self.ttl <= 2**31 - 1:
            raise UsageError(f"ttl must be from 1 to 2147483647, not {self.ttl}")


@dataclass(frozen=True, slots=True)
class Policies:
    """The default policy and per-domain overrides."""

    default: RotationPolicy = field(default_factory=RotationPolicy)
    domains: Mapping[str, RotationPolicy] = field(default_factory=dict)

    def for_domain(self, domain: str) -> RotationPolicy:
        """The policy that applies to ``domain``."""
        return self.domains.get(domain.lower().removesuffix("."), self.default)


@dataclass(frozen=True, slots=True)
class DnsView:
    """The TXT texts at one name: at the primary (``None``: not asked or no answer) and at each authoritative server."""

    primary: frozenset[str] | None
    servers: Mapping[str, frozenset[str] | None]
    problem: str = ""  # why some answers are missing (e.g. the servers could not be found)


@dataclass(frozen=True, slots=True)
class Generation:
    """A key to generate: the executor makes the key pair (randomness is an input, not the planner's)."""

    domain: str
    key_type: KeyType
    bits: int
    selector: str


@dataclass(frozen=True, slots=True)
class Step:
    """One move: its store changes are committed together, then ``action``'s DNS work is done.

    ``subject`` is the key the event happened to (``None`` for a
    generation); ``changes[0]``, when there are changes, is that key after
    the move. An activation also carries the retirement of the keys it
    supersedes, so that signing never has a gap. A WAIT step changes nothing.
    """

    event: Event
    action: Action
    subject: KeyEntry | None = None
    changes: tuple[Change, ...] = ()
    generation: Generation | None = None

    @property
    def key(self) -> KeyEntry | None:
        """The key that moved, as it is after the step (the subject itself for WAIT)."""
        return self.changes[0].after if self.changes else self.subject

    def __str__(self) -> str:
        if self.generation is not None:
            g = self.generation
            return f"generate {g.selector}._domainkey.{g.domain} ({g.key_type})"
        if self.subject is None:  # pragma: no cover - every other step has a subject
            return str(self.action)
        after = self.key or self.subject
        moved = str(after.state)
        if self.subject.state is not after.state:
            moved = f"{self.subject.state} -> {after.state}"
        text = f"{self.action} {after.name} ({moved})"
        for change in self.changes[1:]:
            text += f"; {change.after.selector} {change.before.state} -> {change.after.state}"
        return text


def move(entry: KeyEntry, event: Event, now: int) -> Step:
    """The step ``event`` causes for ``entry`` (the table, plus the time stamps each state keeps).

    Raises :class:`InvalidTransitionError` for a pair the table does not list.
    """
    try:
        action, state = TRANSITIONS[(entry.state, event)]
    except KeyError:
        raise InvalidTransitionError(f"{entry.name} is {entry.state}: cannot {event}") from None
    if action is Action.WAIT:
        return Step(event, action, entry)
    stamps: dict[str, int | None] = {"last_error": None}
    if state is not entry.state:
        stamps[_STAMP[state]] = now
    after = dataclasses.replace(entry, state=state, **stamps)  # type: ignore[arg-type]
    if action is Action.CONFIRM:
        after = dataclasses.replace(after, confirmed_at=now)
        if state is P:
            after = dataclasses.replace(after, visible_at=now)
    elif action is Action.DISCARD:
        after = dataclasses.replace(after, confirmed_at=now)  # nothing of it was ever in DNS
    elif action is Action.SEND:
        after = dataclasses.replace(after, confirmed_at=None)
        if state is P:
            after = dataclasses.replace(after, visible_at=None)
    return Step(event, action, entry, (Change(entry, after),))


_STAMP: Final = {
    G: "created_at",
    P: "published_at",
    A: "activated_at",
    R: "retired_at",
    V: "revoked_at",
    X: "removed_at",
}


def served(entry: KeyEntry, texts: frozenset[str]) -> bool:
    """Whether ``texts`` (what one server has at the name) is what ``entry``'s state publishes."""
    wanted = entry.wanted_text
    if wanted is not None and wanted not in texts:
        return False
    return not any(text in texts for text in entry.unwanted_texts)


def dns_event(entry: KeyEntry, view: DnsView | None) -> Event:
    """Compare what the servers serve with what ``entry``'s state publishes."""
    if view is None:
        return Event.DNS_UNKNOWN
    answers = list(view.servers.values())
    if answers and all(a is not None and served(entry, a) for a in answers):
        return Event.DNS_SYNCED
    if view.primary is not None:
        if not served(entry, view.primary):
            return Event.DNS_BEHIND
    elif not any(a is not None and served(entry, a) for a in answers):
        return Event.DNS_BEHIND  # e.g. manual mode: nobody serves it yet, so say again what to publish
    return Event.DNS_UNKNOWN if None in answers or not answers else Event.DNS_LAGGING


def needs_dns_view(entry: KeyEntry) -> bool:
    """Whether :func:`plan` must see what DNS serves at ``entry.name`` to move ``entry``.

    Active and retiring keys are looked at on every tick: a record deleted or
    replaced behind mailseal's back would otherwise go unnoticed while mail
    is signed with a key nobody can verify.
    """
    if entry.state in (P, A, R):
        return True  # published: confirmed before activation; active, retiring: still served?
    return entry.state in (V, X) and entry.confirmed_at is None


def replaced(entry: KeyEntry, view: DnsView | None) -> bool:
    """Whether DNS serves, at ``entry``'s name, a record mailseal did not publish there instead of ours.

    mailseal never overwrites such a record, so it cannot fix this itself:
    judged at the primary when there is one, else when every server answers so.
    """
    if view is None or entry.wanted_text is None:
        return False
    ours = {entry.wanted_text, *entry.unwanted_texts}
    if view.primary is not None:
        answers: list[frozenset[str] | None] = [view.primary]
    else:
        answers = list(view.servers.values())
    return bool(answers) and all(
        a is not None and entry.wanted_text not in a and bool(a - ours) for a in answers
    )


def _event(entry: KeyEntry, view: DnsView | None, policy: RotationPolicy, now: int) -> Event | None:
    """The event the passage of time or DNS causes for ``entry`` now, if any."""
    match entry.state:
        case KeyState.GENERATED:
            return Event.PUBLISH
        case KeyState.PUBLISHED:
            seen = dns_event(entry, view)
            if seen is not Event.DNS_SYNCED or entry.visible_at is None:
                return seen
            if now >= entry.visible_at + policy.propagation_delay:
                return Event.PROPAGATED
            return None
        case KeyState.ACTIVE:
            # Leaves ACTIVE only when superseded (see plan) or by the operator; its record is re-checked.
            return _recheck(entry, view)
        case KeyState.RETIRING:
            retired = entry.retired_at if entry.retired_at is not None else now
            return Event.GRACE_OVER if now >= retired + policy.grace else _recheck(entry, view)
        case KeyState.REVOKED:
            if entry.confirmed_at is None:
                return dns_event(entry, view)
            return Event.REVOCATION_KNOWN if now >= entry.confirmed_at + policy.revoked_for else None
        case KeyState.REMOVED:
            return None if entry.confirmed_at is not None else dns_event(entry, view)


def _recheck(entry: KeyEntry, view: DnsView | None) -> Event | None:
    """A signing (or retiring) key's record: nothing to do while it is served, or nothing was looked at."""
    if view is None:
        return None
    seen = dns_event(entry, view)
    return None if seen is Event.DNS_SYNCED else seen


def plan(
    entries: Sequence[KeyEntry],
    views: Mapping[str, DnsView],
    now: int,
    policies: Policies,
    *,
    generate: bool = True,
) -> list[Step]:
    """The steps to take now, given every key in the store and what DNS serves.

    ``views`` maps key names (see :func:`needs_dns_view`) to observations; a
    missing name counts as "servers did not answer". With ``generate=False``
    no successor keys are made (``keys tick --no-rotate``). Pure: same inputs,
    same steps.
    """
    steps: list[Step] = []
    # Selectors this plan generates, per domain: RSA and Ed25519 keys fall due in the same tick.
    planned: dict[str, set[str]] = {}
    lineages: dict[tuple[str, KeyType], list[KeyEntry]] = {}
    for entry in entries:
        lineages.setdefault(entry.lineage, []).append(entry)
    for (domain, key_type), keys in lineages.items():
        policy = policies.for_domain(domain)
        keys = sorted(keys, key=_age)
        active = [k for k in keys if k.state is A]
        newest_active = max(active, key=_activation_order, default=None)
        activating: KeyEntry | None = None
        for entry in keys:
            if entry.state in (G, P) and newest_active is not None and _age(entry) < _age(newest_active):
                steps.append(move(entry, Event.RETIRE, now))  # overtaken by a newer active key
                continue
            event = _event(entry, views.get(entry.name), policy, now)
            if event is None:
                continue
            if event is Event.PROPAGATED:
                if activating is None or _age(entry) > _age(activating):
                    activating = entry
                continue
            steps.append(move(entry, event, now))
        if activating is not None:
            steps.append(_activate(activating, active, now))
        elif generate:
            reserved = planned.setdefault(domain, set())
            # An active key whose name now holds someone else's record cannot verify: move signing
            # to a new key (under a new name) rather than sign on with it until `rotate_every`.
            broken = newest_active is not None and replaced(newest_active, views.get(newest_active.name))
            successor = _successor(
                domain, key_type, keys, newest_active, policy, now, entries, reserved, broken=broken
            )
            if successor is not None and successor.generation is not None:
                reserved.add(successor.generation.selector)
                steps.append(successor)
    return steps


def _age(entry: KeyEntry) -> tuple[int, int]:
    """Creation order (the id breaks ties within one second)."""
    return (entry.created_at, entry.id)


def _activation_order(entry: KeyEntry) -> tuple[int, int]:
    return (entry.activated_at or 0, entry.id)


def _activate(entry: KeyEntry, active: Sequence[KeyEntry], now: int) -> Step:
    """Activate ``entry`` and retire the active keys it supersedes, in one commit: no signing gap."""
    step = move(entry, Event.PROPAGATED, now)
    superseded = tuple(
        move(old, Event.SUPERSEDED, now).changes[0] for old in active if _age(old) < _age(entry)
    )
    return dataclasses.replace(step, changes=step.changes + superseded)


def _successor(
    domain: str,
    key_type: KeyType,
    keys: Sequence[KeyEntry],
    newest_active: KeyEntry | None,
    policy: RotationPolicy,
    now: int,
    everything: Sequence[KeyEntry],
    reserved: Collection[str],
    *,
    broken: bool = False,
) -> Step | None:
    if newest_active is None or (policy.rotate_every is None and not broken):
        return None
    if any(k.state in (G, P) for k in keys):
        return None  # a successor is already under way
    activated = newest_active.activated_at if newest_active.activated_at is not None else now
    if not broken and policy.rotate_every is not None and now < activated + policy.rotate_every:
        return None
    return Step(
        Event.ROTATION_DUE,
        Action.GENERATE,
        generation=successor_of(domain, key_type, policy, now, everything, reserved=reserved),
    )


def successor_of(
    domain: str,
    key_type: KeyType,
    policy: RotationPolicy,
    now: int,
    entries: Sequence[KeyEntry],
    *,
    reserved: Collection[str] = (),
) -> Generation:
    """A new key for ``domain`` named by the policy's scheme, avoiding every selector the domain ever used.

    ``reserved`` holds selectors already chosen but not yet in the store (another
    lineage of the domain whose rotation falls due in the same tick).
    """
    taken = {e.selector for e in entries if e.domain == domain} | set(reserved)
    bits = policy.bits if key_type is KeyType.RSA else 256
    return Generation(
        domain, key_type, bits, selector_for(policy.selector_scheme, now, key_type=key_type, taken=taken)
    )


def outlook(entry: KeyEntry, entries: Sequence[KeyEntry], policy: RotationPolicy, now: int) -> str:
    """A short sentence on what happens next to ``entry`` (the "next action" column of ``keys list``)."""
    match entry.state:
        case KeyState.GENERATED:
            return "publish on the next tick"
        case KeyState.PUBLISHED:
            if entry.visible_at is None:
                return "wait until every authoritative server serves it"
            return f"start signing {_when(entry.visible_at + policy.propagation_delay, now)}"
        case KeyState.ACTIVE:
            pending = [e for e in entries if e.lineage == entry.lineage and e.state in (G, P)]
            if pending:
                return f"retire when {pending[-1].selector} is active"
            if policy.rotate_every is None:
                return "no automatic rotation"
            activated = entry.activated_at if entry.activated_at is not None else now
            return f"rotate {_when(activated + policy.rotate_every, now)}"
        case KeyState.RETIRING:
            retired = entry.retired_at if entry.retired_at is not None else now
            return f"revoke {_when(retired + policy.grace, now)}"
        case KeyState.REVOKED:
            if entry.confirmed_at is None:
                return "wait until every authoritative server serves the revocation"
            return f"remove {_when(entry.confirmed_at + policy.revoked_for, now)}"
        case KeyState.REMOVED:
            return "done" if entry.confirmed_at is not None else "wait until DNS drops the record"


def _when(at: int, now: int) -> str:
    if at <= now:
        return "on the next tick"
    return f"in {duration_text(at - now)}"


def duration_text(seconds: int) -> str:
    """``90d``, ``5h``, ``12m``, ``40s``: the largest unit that is whole or at least 2."""
    for unit, size in (("d", DAY), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size or (seconds >= size and seconds % size == 0):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def state_diagram() -> str:
    """The transition table as a Mermaid state diagram (docs/keys.md embeds it; a test keeps them equal)."""
    lines = ["stateDiagram-v2", "    [*] --> generated: generate"]
    for (state, event), (action, new_state) in TRANSITIONS.items():
        if state is not new_state:  # self-loops (send again, wait, confirm) would clutter the picture
            lines.append(f"    {state} --> {new_state}: {event} / {action}")
    lines.append("    removed --> [*]")
    return "\n".join(lines)
