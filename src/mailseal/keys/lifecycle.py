"""The rotation driver: observe DNS, plan, and execute each step, recording state before acting.

``Lifecycle.tick()`` is what ``mailseal keys tick`` runs from cron or a
systemd timer. Each round reads the store, asks the authoritative servers
about the names the planner needs (:func:`~mailseal.keys.rotation.needs_dns_view`),
plans, and executes the steps in order:

1. commit the step's store changes (one transaction, compare-and-set);
2. then do its DNS work (an idempotent UPDATE, or print the instructions).

A crash between 1 and 2 leaves the new state recorded with its DNS work
undone; the next tick sees that DNS is behind that state and sends again. A
crash before 1 leaves the old state, which plans the same step again.
Rounds repeat until nothing moves, so one tick can take a key from generated
to active when the servers are quick and no delay is configured. The hook,
called at each of those points, is how the tests kill a tick between steps.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, TextIO

from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import generate_private_key
from mailseal.core.keyrecord import KeyRecord
from mailseal.core.txtanswer import TxtStatus
from mailseal.dns.authoritative import AuthoritativeServers, authoritative_servers, find_zone, query_txt
from mailseal.dns.update import DnsUpdater
from mailseal.errors import PublishError, UsageError
from mailseal.keys.config import KeysConfig
from mailseal.keys.publish import DnsUpdatePublisher, ManualPublisher, Publisher
from mailseal.keys.rotation import (
    Action,
    DnsView,
    Event,
    Generation,
    Policies,
    Step,
    dns_event,
    move,
    needs_dns_view,
    plan,
    successor_of,
)
from mailseal.keys.store import KeyEntry, KeyState, KeyStore, NewKey

__all__ = [
    "Clock",
    "DnsObserver",
    "Hook",
    "Lifecycle",
    "Observer",
    "TickReport",
    "lifecycle_from_config",
    "publisher_from_config",
    "records_for",
]

_log = logging.getLogger(__name__)

Clock = Callable[[], int]
"""UTC seconds since the epoch; tests pass a fake one."""

HookPoint = Literal["begin", "committed", "sent"]
Hook = Callable[[HookPoint, Step], None]
"""Called before a step commits, after it commits, and after its DNS work (tests kill the tick here)."""

MAX_ROUNDS: Final = 12

_WAITING: Final = {
    Event.DNS_LAGGING: "the primary serves it; waiting for the other authoritative servers",
    Event.DNS_UNKNOWN: "an authoritative server did not answer; will look again",
}


class Observer(Protocol):
    """What the authoritative servers serve at a name (see :class:`DnsObserver`)."""

    def view(self, name: str, publisher: Publisher) -> DnsView:
        """Observe ``name``; ``publisher`` knows the primary, if there is one."""
        ...


class DnsObserver:
    """Ask every authoritative server of the key's zone directly (no cache can hide a lagging one)."""

    def __init__(
        self,
        *,
        authoritative: Sequence[str] | None = None,
        resolvers: Sequence[str] | None = None,
        port: int = 53,
        timeout: float = 5.0,
    ) -> None:
        """Use the ``authoritative`` servers given, or find the zone's NS hosts through ``resolvers``."""
        self.authoritative = tuple(authoritative) if authoritative else None
        self.resolvers = tuple(resolvers) if resolvers else None
        self.port = port
        self.timeout = timeout
        self._found: dict[str, AuthoritativeServers] = {}

    def servers(self, name: str) -> AuthoritativeServers:
        """The authoritative servers for ``name`` (found once per domain per observer)."""
        if self.authoritative is not None:
            return AuthoritativeServers(None, self.authoritative)
        domain = name.split("._domainkey.", 1)[-1]
        if domain not in self._found:
            self._found[domain] = authoritative_servers(
                name, nameservers=self.resolvers, port=self.port, timeout=self.timeout
            )
        return self._found[domain]

    def view(self, name: str, publisher: Publisher) -> DnsView:
        """The primary's texts and each authoritative server's (``None`` for a server that failed)."""
        found = self.servers(name)
        answers: dict[str, frozenset[str] | None] = {}
        problems = [found.problem] if found.problem else []
        for server in found.servers:
            answer = query_txt(server, name, timeout=self.timeout)
            if answer.status in (TxtStatus.FOUND, TxtStatus.NO_DATA, TxtStatus.NXDOMAIN):
                answers[server] = answer.texts
            else:
                answers[server] = None
                problems.append(answer.detail)
        return DnsView(publisher.primary_texts(name), answers, "; ".join(problems))


@dataclass(frozen=True, slots=True)
class GateDecision:
    """A revocation gate's answer: go ahead or wait, with a sentence for the tick report ('' for none)."""

    proceed: bool
    note: str = ""


class RevokeGate(Protocol):
    """An extra condition before a retiring key is revoked (e.g. DMARC reports show its successor passing)."""

    def __call__(self, retiring: KeyEntry, entries: Sequence[KeyEntry], now: int) -> GateDecision:
        """Decide for ``retiring`` whose grace period is over; ``entries`` are its domain's keys."""
        ...


@dataclass
class TickReport:
    """What a tick (or an operator command) did, what waits, and what failed."""

    done: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No step failed."""
        return not self.errors


def records_for(key_type: KeyType, public_key_b64: str, *, testing: bool = False) -> tuple[str, str]:
    """The exact TXT texts for a key: published, and revoked (RFC 6376 §3.6.1: empty p=)."""
    flags = ("y",) if testing else ()
    return (
        KeyRecord.for_key(key_type, public_key_b64, flags=flags).to_text(),
        KeyRecord.for_key(key_type, "", flags=flags).to_text(),
    )


class Lifecycle:
    """Drives keys through their states against one store, with injectable DNS, publishing and clock."""

    def __init__(
        self,
        store: KeyStore,
        *,
        publisher_for: Callable[[str], Publisher],
        observer: Observer,
        policies: Policies,
        clock: Clock,
        hook: Hook | None = None,
    ) -> None:
        """``publisher_for(domain)`` gives the publisher for a domain's records."""
        self.store = store
        self.publisher_for = publisher_for
        self.observer = observer
        self.policies = policies
        self.clock = clock
        self.hook = hook
        self.revoke_gate: RevokeGate | None = (
            None  # optional; set by the CLI (``keys tick --reports-receivers``)
        )
        self._sent: set[int] = set()  # keys whose DNS work was done in the current tick
        self._locked = False

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the store's tick lock (re-entrant here: a command holds it across several steps).

        Every command that changes keys or DNS takes it, so ``keys publish``,
        ``rotate`` and ``retire`` never interleave with a running tick.
        """
        if self._locked:
            yield
            return
        with self.store.exclusive():
            self._locked = True
            try:
                yield
            finally:
                self._locked = False

    def _hook(self, point: HookPoint, step: Step) -> None:
        if self.hook is not None:
            self.hook(point, step)

    def tick(self, *, rotate: bool = True, domain: str | None = None) -> TickReport:
        """Advance every key (or ``domain``'s) as far as it can go now; safe to run at any time."""
        report = TickReport()
        self._sent = set()
        with self.exclusive():
            self._rounds(report, rotate=rotate, domain=domain)
        return report

    def _rounds(self, report: TickReport, *, rotate: bool, domain: str | None) -> None:
        settled: set[int] = set()  # keys whose DNS work failed, or was done and must now propagate
        waits: dict[int, str] = {}
        for _ in range(MAX_ROUNDS):
            now = self.clock()
            entries = self.store.entries(domain)
            views = {}
            for e in entries:
                if not needs_dns_view(e) or e.id in settled:
                    continue
                try:
                    views[e.name] = self.observer.view(e.name, self.publisher_for(e.domain))
                except (UsageError, PublishError) as exc:  # one domain's zone problem: the others go on
                    self._key_failed(e, exc, report)
                    settled.add(e.id)
            moved = False
            for step in plan(entries, views, now, self.policies, generate=rotate):
                subject = step.subject
                if subject is not None and subject.id in settled:
                    continue
                if step.event is Event.GRACE_OVER and subject is not None and self.revoke_gate is not None:
                    decision = self.revoke_gate(
                        subject, [e for e in entries if e.domain == subject.domain], now
                    )
                    if not decision.proceed:
                        waits[subject.id] = f"{subject.name}: {decision.note}"
                        settled.add(subject.id)
                        continue
                    if decision.note:
                        report.done.append(f"{subject.name}: {decision.note}")
                if step.action is Action.WAIT:
                    if subject is not None:
                        view = views.get(subject.name)
                        why = _WAITING.get(step.event, str(step.event))
                        waits[subject.id] = f"{subject.name}: {why}" + (
                            f" ({view.problem})" if view and view.problem else ""
                        )
                    continue
                if step.action is Action.SEND and subject is not None and subject.id in self._sent:
                    # Sent once this tick and still not served (manual mode, a slow primary): look next tick.
                    settled.add(subject.id)
                    waits[subject.id] = f"{subject.name}: sent; waiting until the servers serve it"
                    continue
                moved = True
                ok = self._execute(step, report)
                if step.action is Action.SEND and subject is not None:
                    self._sent.add(subject.id)
                if not ok and subject is not None:
                    settled.add(subject.id)
            if not moved:
                break
        report.waiting.extend(waits.values())

    def _execute(self, step: Step, report: TickReport) -> bool:
        """Commit, then act; False (with the error noted on the key) when the DNS work failed."""
        self._hook("begin", step)
        if step.generation is not None:
            entry = self.generate(step.generation)
            report.done.append(f"generated {entry.name} ({entry.key_type}, {entry.bits} bits)")
            self._hook("committed", step)
            return True
        self.store.apply(step.changes)
        self._hook("committed", step)
        if step.action is not Action.SEND:
            report.done.append(str(step))
            return True
        key = step.changes[0].after
        try:
            what = self.publisher_for(key.domain).sync(key, ttl=self.policies.for_domain(key.domain).ttl)
        except (PublishError, UsageError) as exc:  # e.g. a name outside the configured zone
            self._key_failed(key, exc, report)
            return False
        if step.event is Event.DNS_BEHIND and key.state in (KeyState.ACTIVE, KeyState.RETIRING):
            report.done.append(
                f"{step}: its record was missing or changed at the primary (not by mailseal); {what}"
            )
            _log.info("%s (%s): record was missing or changed in DNS; %s", key.name, key.state, what)
        else:
            report.done.append(f"{step}: {what}")
        self._hook("sent", step)
        return True

    def _key_failed(self, key: KeyEntry, exc: Exception, report: TickReport) -> None:
        """Note a key's DNS problem on the key and in the report; the tick goes on with the others."""
        self.store.note_error(key.id, str(exc))
        report.errors.append(f"{key.name}: {exc}")
        # The report is how the error reaches the operator (the CLI prints it once); a log record at
        # WARNING would be printed a second time by Python's last-resort handler when nobody configured logging.
        _log.info("%s: %s", key.name, exc)

    def generate(self, generation: Generation, *, testing: bool = False) -> KeyEntry:
        """Make the key pair and insert it, in state ``generated``, with the texts it will publish."""
        key = generate_private_key(generation.key_type, generation.bits)
        record_text, revoked_text = records_for(key.key_type, key.public_key_b64(), testing=testing)
        return self.store.add(
            NewKey(
                domain=generation.domain.lower().removesuffix("."),
                selector=generation.selector.lower(),
                key_type=key.key_type,
                bits=key.bits,
                private_pem=key.to_pem(),
                record_text=record_text,
                revoked_text=revoked_text,
                created_at=self.clock(),
            )
        )

    def successor(self, domain: str, key_type: KeyType | None = None) -> Generation:
        """The next key for ``domain`` by its policy (``key_type`` overrides the policy's)."""
        policy = self.policies.for_domain(domain)
        chosen = key_type or policy.key_type
        return successor_of(
            domain.lower().removesuffix("."), chosen, policy, self.clock(), self.store.entries(domain)
        )

    def request(self, entry: KeyEntry, event: Event) -> TickReport:
        """Apply an operator's event (publish, retire, revoke) to ``entry`` now."""
        report = TickReport()
        with self.exclusive():
            current = self.store.entry(entry.domain, entry.selector)
            if current is None:
                raise UsageError(f"{entry.name} is not in the key store")
            self._execute(move(current, event, self.clock()), report)
        return report

    def resend(self, entry: KeyEntry) -> TickReport:
        """Send ``entry``'s DNS state again (``keys publish`` on a key already published)."""
        report = TickReport()
        with self.exclusive():
            current = self.store.entry(entry.domain, entry.selector) or entry  # as it is now, under the lock
            if current.wanted_text is None and not current.unwanted_texts:
                raise UsageError(f"{current.name} is {current.state}: nothing of it belongs in DNS")
            try:
                what = self.publisher_for(current.domain).sync(
                    current, ttl=self.policies.for_domain(current.domain).ttl
                )
                report.done.append(f"{current.name}: {what}")
            except PublishError as exc:
                self.store.note_error(current.id, str(exc))
                report.errors.append(f"{current.name}: {exc}")
        return report

    def confirm_if_visible(self, entry: KeyEntry) -> tuple[bool, DnsView]:
        """Look once; record the confirmation when every authoritative server serves ``entry``'s state."""
        view = self.observer.view(entry.name, self.publisher_for(entry.domain))
        if dns_event(entry, view) is not Event.DNS_SYNCED:
            return False, view
        if entry.confirmed_at is None and entry.state in (
            KeyState.PUBLISHED,
            KeyState.REVOKED,
            KeyState.REMOVED,
        ):
            with self.exclusive():
                current = self.store.entry(entry.domain, entry.selector)
                if current is not None and current.state is entry.state and current.confirmed_at is None:
                    self.store.apply(move(current, Event.DNS_SYNCED, self.clock()).changes)
        return True, view


def publisher_from_config(config: KeysConfig, domain: str, out: TextIO) -> Publisher:
    """The publisher ``config`` names for ``domain``: DNS UPDATE to its primary, or manual instructions to ``out``."""
    settings = config.publish_for(domain)
    if settings.mode == "manual" or settings.primary is None:
        return ManualPublisher(out)
    zone = settings.zone or find_zone(
        f"_domainkey.{domain}", nameservers=[settings.primary], timeout=settings.timeout
    )
    if zone is None:
        raise UsageError(f"cannot tell which zone holds {domain} at {settings.primary}; set zone (--zone)")
    return DnsUpdatePublisher(DnsUpdater(settings.primary, zone, settings.tsig, timeout=settings.timeout))


def lifecycle_from_config(
    config: KeysConfig, store: KeyStore, *, clock: Clock, out: TextIO, hook: Hook | None = None
) -> Lifecycle:
    """The lifecycle ``mailseal keys`` runs: ``config``'s publishing, observation and policies."""
    publishers: dict[str, Publisher] = {}

    def publisher_for(domain: str) -> Publisher:
        if domain not in publishers:
            publishers[domain] = publisher_from_config(config, domain, out)
        return publishers[domain]

    observer = DnsObserver(
        authoritative=config.authoritative, resolvers=config.resolvers, timeout=config.timeout
    )
    return Lifecycle(
        store,
        publisher_for=publisher_for,
        observer=observer,
        policies=config.policies,
        clock=clock,
        hook=hook,
    )
