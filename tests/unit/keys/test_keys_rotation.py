"""The rotation table and planner (h2-style: every pair of the table, and Hypothesis over states, events and DNS)."""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailseal.core.algorithms import KeyType
from mailseal.errors import UsageError
from mailseal.keys.rotation import (
    DAY,
    TRANSITIONS,
    Action,
    DnsView,
    Event,
    InvalidTransitionError,
    Policies,
    RotationPolicy,
    Step,
    dns_event,
    duration_text,
    move,
    needs_dns_view,
    outlook,
    plan,
    state_diagram,
)
from mailseal.keys.selectors import check_scheme, selector_for
from mailseal.keys.store import STATE_ORDER, KeyEntry, KeyState
from support.clock import FIXED_NOW

DOCS = Path(__file__).parents[3] / "docs" / "keys.md"
POLICY = RotationPolicy(rotate_every=90 * DAY, grace=7 * DAY, propagation_delay=3600, revoked_for=2 * DAY)
POLICIES = Policies(POLICY)


def entry(state: KeyState = KeyState.GENERATED, key_id: int = 1, **fields: object) -> KeyEntry:
    base = KeyEntry(
        id=key_id,
        domain="example.test",
        selector=f"s{key_id}",
        key_type=KeyType.ED25519,
        bits=256,
        state=state,
        record_text=f"v=DKIM1; k=ed25519; p=KEY{key_id}",
        revoked_text="v=DKIM1; k=ed25519; p=",
        created_at=FIXED_NOW - 1000,
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


# The table itself.


@pytest.mark.parametrize(("state", "event"), list(itertools.product(KeyState, Event)))
def test_every_pair_is_either_in_the_table_or_refused(state: KeyState, event: Event) -> None:
    key = entry(state)
    if (state, event) in TRANSITIONS:
        action, new_state = TRANSITIONS[(state, event)]
        step = move(key, event, FIXED_NOW)
        assert step.action is action
        after = step.key
        assert after is not None and after.state is new_state
        if action is Action.WAIT:
            assert step.changes == ()
    else:
        with pytest.raises(InvalidTransitionError, match=f"{key.name} is {state}"):
            move(key, event, FIXED_NOW)


def test_invalid_transition_is_a_usage_error() -> None:
    assert issubclass(InvalidTransitionError, UsageError)


@pytest.mark.parametrize(("pair", "result"), list(TRANSITIONS.items()))
def test_states_only_move_forward(pair: tuple[KeyState, Event], result: tuple[Action, KeyState]) -> None:
    assert STATE_ORDER.index(result[1]) >= STATE_ORDER.index(pair[0])


def test_active_is_entered_only_by_propagation_of_a_published_key() -> None:
    into_active = [
        (old, event)
        for (old, event), (_, new) in TRANSITIONS.items()
        if new is KeyState.ACTIVE and old is not KeyState.ACTIVE
    ]
    assert into_active == [(KeyState.PUBLISHED, Event.PROPAGATED)]
    # An active key's own moves keep it active only to publish its record again (or wait for DNS).
    loops = {
        event: action for (old, event), (action, new) in TRANSITIONS.items() if old is new is KeyState.ACTIVE
    }
    assert loops == {
        Event.DNS_BEHIND: Action.SEND,
        Event.DNS_LAGGING: Action.WAIT,
        Event.DNS_UNKNOWN: Action.WAIT,
    }


def test_removed_is_final_and_dns_facing_states_can_resend() -> None:
    assert all(
        new is KeyState.REMOVED for (old, _), (_, new) in TRANSITIONS.items() if old is KeyState.REMOVED
    )
    for state in (KeyState.PUBLISHED, KeyState.REVOKED, KeyState.REMOVED):
        assert TRANSITIONS[(state, Event.DNS_BEHIND)] == (Action.SEND, state)
        assert TRANSITIONS[(state, Event.DNS_SYNCED)] == (Action.CONFIRM, state)
    for state in (KeyState.ACTIVE, KeyState.RETIRING):  # re-checked on every tick, republished when gone
        assert TRANSITIONS[(state, Event.DNS_BEHIND)] == (Action.SEND, state)


def test_leaving_a_dns_state_clears_its_confirmation_and_stamps_the_time() -> None:
    published = entry(KeyState.PUBLISHED, confirmed_at=FIXED_NOW - 5, visible_at=FIXED_NOW - 5)
    resent = move(published, Event.DNS_BEHIND, FIXED_NOW).key
    assert resent is not None and (resent.confirmed_at, resent.visible_at) == (None, None)
    revoked = move(entry(KeyState.RETIRING, retired_at=FIXED_NOW - 9), Event.GRACE_OVER, FIXED_NOW).key
    assert revoked is not None and revoked.revoked_at == FIXED_NOW and revoked.confirmed_at is None
    confirmed = move(entry(KeyState.PUBLISHED), Event.DNS_SYNCED, FIXED_NOW).key
    assert confirmed is not None and confirmed.visible_at == FIXED_NOW == confirmed.confirmed_at


@given(st.lists(st.sampled_from(list(Event)), max_size=40))
def test_any_event_sequence_moves_forward_and_stamps_each_state(events: Sequence[Event]) -> None:
    key = entry()
    for number, event in enumerate(events):
        now = FIXED_NOW + number
        if (key.state, event) not in TRANSITIONS:
            with pytest.raises(InvalidTransitionError):
                move(key, event, now)
            continue
        step = move(key, event, now)
        after = step.key
        assert after is not None
        assert STATE_ORDER.index(after.state) >= STATE_ORDER.index(key.state)
        if after.state is not key.state:
            stamp = {
                KeyState.PUBLISHED: after.published_at,
                KeyState.ACTIVE: after.activated_at,
                KeyState.RETIRING: after.retired_at,
                KeyState.REVOKED: after.revoked_at,
                KeyState.REMOVED: after.removed_at,
            }[after.state]
            assert stamp == now
        key = after


# DNS observations.


def test_dns_event_cases() -> None:
    key = entry(KeyState.PUBLISHED)
    ours, foreign = frozenset({key.record_text}), frozenset({"v=spf1 -all"})
    empty: frozenset[str] = frozenset()
    assert dns_event(key, None) is Event.DNS_UNKNOWN
    assert dns_event(key, DnsView(ours, {"a": ours, "b": ours})) is Event.DNS_SYNCED
    assert dns_event(key, DnsView(ours, {"a": ours, "b": empty})) is Event.DNS_LAGGING
    assert dns_event(key, DnsView(ours, {"a": ours, "b": None})) is Event.DNS_UNKNOWN
    assert dns_event(key, DnsView(empty, {"a": ours, "b": empty})) is Event.DNS_BEHIND  # the primary lost it
    assert dns_event(key, DnsView(None, {"a": empty, "b": empty})) is Event.DNS_BEHIND  # manual: say it again
    assert dns_event(key, DnsView(None, {"a": ours, "b": empty})) is Event.DNS_LAGGING
    assert dns_event(key, DnsView(ours, {})) is Event.DNS_UNKNOWN  # no server known: never "synced"
    assert dns_event(key, DnsView(ours | foreign, {"a": ours | foreign})) is Event.DNS_SYNCED
    revoked = entry(KeyState.REVOKED)
    both = frozenset({revoked.record_text, revoked.revoked_text})
    assert dns_event(revoked, DnsView(both, {"a": both})) is Event.DNS_BEHIND  # the old key must go
    removed = entry(KeyState.REMOVED)
    assert dns_event(removed, DnsView(foreign, {"a": foreign})) is Event.DNS_SYNCED  # foreign ones stay


# The planner, with Hypothesis.

_STATES = list(KeyState)
_TIME = st.integers(min_value=FIXED_NOW - 400 * DAY, max_value=FIXED_NOW)
_MAYBE_TIME = st.none() | _TIME


@st.composite
def snapshots(draw: st.DrawFn) -> list[KeyEntry]:
    count = draw(st.integers(min_value=0, max_value=6))
    entries = []
    for key_id in range(1, count + 1):
        state = draw(st.sampled_from(_STATES))
        entries.append(
            entry(
                state,
                key_id,
                domain=draw(st.sampled_from(["a.test", "b.test"])),
                key_type=draw(st.sampled_from(list(KeyType))),
                created_at=draw(_TIME),
                published_at=draw(_MAYBE_TIME),
                visible_at=draw(_MAYBE_TIME),
                activated_at=draw(_TIME) if state is KeyState.ACTIVE else draw(_MAYBE_TIME),
                retired_at=draw(_MAYBE_TIME),
                confirmed_at=draw(_MAYBE_TIME),
            )
        )
    return entries


@st.composite
def views_for(draw: st.DrawFn, entries: list[KeyEntry]) -> dict[str, DnsView]:
    views = {}
    for e in entries:
        if draw(st.booleans()):
            continue  # servers did not answer
        choices = [e.record_text, e.revoked_text, "v=spf1 -all"]
        texts = st.frozensets(st.sampled_from(choices))
        servers = draw(st.lists(st.none() | texts, min_size=0, max_size=3))
        views[e.name] = DnsView(draw(st.none() | texts), {f"ns{i}": v for i, v in enumerate(servers)})
    return views


def _apply(entries: list[KeyEntry], steps: Sequence[Step]) -> list[KeyEntry]:
    by_id = {e.id: e for e in entries}
    for step in steps:
        for change in step.changes:
            by_id[change.after.id] = change.after
    return list(by_id.values())


@settings(max_examples=300)
@given(st.data())
def test_planner_obeys_the_table_and_never_leaves_a_signing_gap(data: st.DataObject) -> None:
    entries = data.draw(snapshots())
    views = data.draw(views_for(entries))
    now = FIXED_NOW + data.draw(st.integers(min_value=0, max_value=200 * DAY))
    steps = plan(entries, views, now, POLICIES)
    assert steps == plan(entries, views, now, POLICIES)  # pure
    moved = [s.subject.id for s in steps if s.subject is not None]
    assert len(moved) == len(set(moved)), "a key moved twice in one plan"
    for step in steps:
        if step.action is Action.GENERATE:
            assert step.generation is not None and not step.changes
            continue
        subject = step.subject
        assert subject is not None
        assert TRANSITIONS[(subject.state, step.event)][0] is step.action
        if step.action is Action.ACTIVATE:
            # The one rule: sign only with a key every authoritative server was seen serving.
            assert subject.visible_at is not None
            assert now >= subject.visible_at + POLICY.propagation_delay
            assert dns_event(subject, views.get(subject.name)) is Event.DNS_SYNCED
        for change in step.changes[1:]:
            assert change.before.state is KeyState.ACTIVE and change.after.state is KeyState.RETIRING
    after = _apply(entries, steps)
    for lineage in {e.lineage for e in entries}:
        had = any(e.state is KeyState.ACTIVE for e in entries if e.lineage == lineage)
        has = any(e.state is KeyState.ACTIVE for e in after if e.lineage == lineage)
        assert has or not had, f"signing gap in {lineage}"
        activations = [
            s for s in steps if s.action is Action.ACTIVATE and s.subject and s.subject.lineage == lineage
        ]
        assert len(activations) <= 1


@given(st.data())
def test_planner_asks_for_dns_only_where_it_needs_it(data: st.DataObject) -> None:
    entries = data.draw(snapshots())
    views = data.draw(views_for(entries))
    needed = {e.name: views[e.name] for e in entries if needs_dns_view(e) and e.name in views}
    assert plan(entries, views, FIXED_NOW, POLICIES) == plan(entries, needed, FIXED_NOW, POLICIES)


def test_rotation_is_due_after_rotate_every_and_only_once() -> None:
    active = entry(KeyState.ACTIVE, activated_at=FIXED_NOW - 90 * DAY, visible_at=FIXED_NOW - 91 * DAY)
    (step,) = plan([active], {}, FIXED_NOW, POLICIES)
    assert step.action is Action.GENERATE and step.event is Event.ROTATION_DUE
    assert step.generation is not None and step.generation.selector == "ms2026q1"
    assert plan([active], {}, FIXED_NOW - 1, POLICIES) == []
    pending = entry(KeyState.GENERATED, key_id=2, created_at=FIXED_NOW)
    assert [s.action for s in plan([active, pending], {}, FIXED_NOW, POLICIES)] == [Action.SEND]
    never = Policies(dataclasses.replace(POLICY, rotate_every=None))
    assert plan([active], {}, FIXED_NOW + 999 * DAY, never) == []
    assert plan([active], {}, FIXED_NOW, POLICIES, generate=False) == []


def test_rsa_and_ed25519_falling_due_in_one_tick_get_different_selectors() -> None:
    """Both lineages were activated together, so both rotate in the same plan; the scheme gives one name."""
    ed = entry(KeyState.ACTIVE, key_id=1, activated_at=FIXED_NOW - 90 * DAY, visible_at=FIXED_NOW - 91 * DAY)
    rsa = entry(
        KeyState.ACTIVE,
        key_id=2,
        key_type=KeyType.RSA,
        bits=2048,
        activated_at=FIXED_NOW - 90 * DAY,
        visible_at=FIXED_NOW,
    )
    steps = plan([ed, rsa], {}, FIXED_NOW, POLICIES)
    assert [(s.generation.key_type, s.generation.selector) for s in steps if s.generation] == [
        (KeyType.ED25519, "ms2026q1"),
        (KeyType.RSA, "ms2026q1b"),
    ]


def test_activation_retires_the_predecessor_in_the_same_step() -> None:
    old = entry(
        KeyState.ACTIVE, key_id=1, created_at=FIXED_NOW - 100 * DAY, activated_at=FIXED_NOW - 99 * DAY
    )
    new = entry(KeyState.PUBLISHED, key_id=2, created_at=FIXED_NOW - DAY, visible_at=FIXED_NOW - DAY)
    served = frozenset({new.record_text})
    (step,) = plan([old, new], {new.name: DnsView(served, {"ns": served})}, FIXED_NOW, POLICIES)
    assert step.action is Action.ACTIVATE
    assert [(c.after.id, c.after.state) for c in step.changes] == [
        (2, KeyState.ACTIVE),
        (1, KeyState.RETIRING),
    ]
    assert "s1 active -> retiring" in str(step)


def test_outlook_sentences() -> None:
    active = entry(KeyState.ACTIVE, activated_at=FIXED_NOW - 80 * DAY)
    assert outlook(active, [active], POLICY, FIXED_NOW) == "rotate in 10d"
    assert outlook(entry(KeyState.RETIRING, retired_at=FIXED_NOW), [], POLICY, FIXED_NOW) == "revoke in 7d"
    assert (
        outlook(entry(KeyState.PUBLISHED), [], POLICY, FIXED_NOW)
        == "wait until every authoritative server serves it"
    )
    assert (
        outlook(entry(KeyState.PUBLISHED, visible_at=FIXED_NOW - 7200), [], POLICY, FIXED_NOW)
        == "start signing on the next tick"
    )
    assert outlook(entry(KeyState.REMOVED, confirmed_at=FIXED_NOW), [], POLICY, FIXED_NOW) == "done"
    pending = entry(KeyState.PUBLISHED, key_id=2)
    assert outlook(active, [active, pending], POLICY, FIXED_NOW) == "retire when s2 is active"


def test_duration_text() -> None:
    assert [duration_text(s) for s in (0, 59, 60, 90, 3600, 5400, 7200, DAY, 36 * 3600, 90 * DAY)] == [
        "0s", "59s", "1m", "90s", "1h", "90m", "2h", "1d", "36h", "90d",
    ]  # fmt: skip


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(UsageError, match="grace"):
        RotationPolicy(grace=-1)
    with pytest.raises(UsageError, match="rotate_every"):
        RotationPolicy(rotate_every=0)
    with pytest.raises(UsageError, match="ttl"):
        RotationPolicy(ttl=0)


# Selector naming.


def test_selector_scheme_and_collisions() -> None:
    july = 1_782_864_000  # 2026-07-01
    assert selector_for("ms{year}q{quarter}", july, key_type=KeyType.RSA, taken=()) == "ms2026q3"
    assert selector_for("ms{year}q{quarter}", july, key_type=KeyType.RSA, taken=["MS2026Q3"]) == "ms2026q3b"
    assert (
        selector_for("k{year}{month}{day}{type}", july, key_type=KeyType.ED25519, taken=()) == "k20260701ed"
    )
    taken = ["x"] + [f"x{c}" for c in "bcdefghijklmnopqrstuvwxyz"]
    assert selector_for("x", july, key_type=KeyType.RSA, taken=taken) == "x-2"
    with pytest.raises(UsageError, match="unknown placeholder"):
        check_scheme("ms{week}")
    with pytest.raises(UsageError, match="valid selector"):
        check_scheme("bad selector {year}")


def test_docs_state_diagram_is_generated_from_the_table() -> None:
    text = DOCS.read_text()
    block = re.search(r"```mermaid\n(.*?)\n```", text, re.S)
    assert block is not None, "docs/keys.md has no mermaid block"
    assert block.group(1) == state_diagram()
