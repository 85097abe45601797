"""``mailseal keys``: generate, list, show, record, publish, check, rotate, retire, tick and migrate DKIM keys.

Exit status: 0 done/pass, 1 failed, 2 usage, 3 ``check`` found only
warnings, 75 try again later (``publish --wait`` timed out, another tick
holds the store).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from mailseal.cli import reports_keys
from mailseal.core.algorithms import KeyType
from mailseal.core.identity import is_domain_name, is_selector
from mailseal.core.keyrecord import split_txt, zone_file_record
from mailseal.dns.update import TSIG_ALGORITHMS, TsigCredentials
from mailseal.errors import UsageError
from mailseal.keys.backends import describe, open_store, parse_location
from mailseal.keys.check import Finding, Level, analyse, exit_status, gather
from mailseal.keys.config import KeysConfig, default_config_path, load_config, read_tsig_file
from mailseal.keys.kek import add_kek, drop_keks, read_kek_file
from mailseal.keys.lifecycle import TickReport, lifecycle_from_config
from mailseal.keys.migrate import migrate
from mailseal.keys.rotation import Event, Generation, duration_text, outlook
from mailseal.keys.selectors import check_scheme, selector_for
from mailseal.keys.store import KeyEntry, KeyState, KeyStoreBusyError, SealedStore

EXIT_FAIL: Final = 1
EXIT_WARN: Final = 3
EXIT_TEMPFAIL: Final = 75

_DESCRIPTION: Final = """\
Generate, publish, check and rotate DKIM keys kept in one key store.

exit status: 0 done (or check passed), 1 failed, 2 usage error, 3 check found
only warnings, 75 try again later (publish --wait timed out, or another tick
holds the store)."""


def register(commands: Any) -> None:
    """Add ``keys`` and its subcommands."""
    keys = commands.add_parser(
        "keys",
        help="key lifecycle: generate, publish, check and rotate DKIM keys",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = keys.add_subparsers(dest="keys_command", required=True, parser_class=type(keys))
    # Each subcommand lists only the options it uses: DNS lookups for check, UPDATE/TSIG where it publishes.
    common = [_store_options()]
    checking = [*common, _lookup_options()]
    publishing = [*checking, _update_options()]

    p = sub.add_parser("generate", parents=common, help="make a key pair and keep it in the store")
    p.add_argument("domain", help="signing domain (d=)")
    p.add_argument("--selector", help="selector (default: from the naming scheme)")
    p.add_argument("--scheme", help="selector naming scheme, e.g. ms{year}q{quarter} (default: the policy's)")
    p.add_argument("--algorithm", choices=["rsa", "ed25519"], help="key type (default: the policy's, rsa)")
    p.add_argument("--bits", type=int, help="RSA key size (default 2048)")
    p.add_argument("--testing", action="store_true", help="publish with t=y (testing mode)")
    p.add_argument("--json", action="store_true", help="print the new key as JSON")
    p.set_defaults(handler=_generate)

    p = sub.add_parser("list", parents=common, help="table of keys: state, age, next action")
    p.add_argument("domain", nargs="?", help="only this domain")
    p.add_argument("--all", action="store_true", help="include removed keys")
    p.add_argument("--json", action="store_true", help="one JSON array")
    p.set_defaults(handler=_list)

    p = sub.add_parser("show", parents=common, help="everything about one key")
    p.add_argument("domain")
    p.add_argument("selector")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.add_argument("--private", action="store_true", help="also print the private key (PEM)")
    p.set_defaults(handler=_show)

    p = sub.add_parser("record", parents=common, help="the TXT record: zone-file text or JSON for DNS APIs")
    p.add_argument("domain")
    p.add_argument("selector")
    p.add_argument("--json", action="store_true", help="JSON: name, type, ttl, value, strings")
    p.add_argument("--revoked", action="store_true", help="the record that revokes the key (empty p=)")
    p.set_defaults(handler=_record)

    p = sub.add_parser("publish", parents=publishing, help="put a generated key into DNS (UPDATE or manual)")
    p.add_argument("domain")
    p.add_argument("selector")
    p.add_argument(
        "--wait", type=float, default=0, metavar="SECONDS", help="wait until every server serves it"
    )
    p.add_argument(
        "--interval", type=float, default=5.0, help="seconds between looks while waiting (default 5)"
    )
    p.set_defaults(handler=_publish)

    p = sub.add_parser("check", parents=checking, help="check published keys; exit 0 pass, 3 warn, 1 fail")
    p.add_argument("domain")
    p.add_argument("selector", nargs="?", help="default: every key of the domain that should be in DNS")
    p.add_argument("--json", action="store_true", help="findings as JSON")
    reports_keys.add_check_options(p)
    p.set_defaults(handler=_check)

    p = sub.add_parser(
        "rotate", parents=publishing, help="start a rotation now: new key, published, then tick"
    )
    p.add_argument("domain")
    p.add_argument(
        "--algorithm", choices=["rsa", "ed25519"], help="which key type to rotate (default: policy's)"
    )
    p.set_defaults(handler=_rotate)

    p = sub.add_parser(
        "retire", parents=publishing, help="stop signing with a key (grace period, then revoked)"
    )
    p.add_argument("domain")
    p.add_argument("selector")
    p.add_argument("--revoke", action="store_true", help="revoke now, without grace (a compromised key)")
    p.add_argument("--force", action="store_true", help="even if it is the domain's only active key")
    p.set_defaults(handler=_retire)

    p = sub.add_parser(
        "tick", parents=publishing, help="advance every rotation (run from cron/systemd timer)"
    )
    p.add_argument("--domain", help="only this domain")
    p.add_argument("--no-rotate", action="store_true", help="advance keys but do not start new rotations")
    p.add_argument("--json", action="store_true", help="report as JSON")
    reports_keys.add_tick_options(p)
    p.set_defaults(handler=_tick)

    p = sub.add_parser(
        "migrate", help="copy every key and its history between stores (SQLite <-> PostgreSQL); idempotent"
    )
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="STORE",
        help="a store file, postgresql://... or service=NAME (must exist)",
    )
    p.add_argument(
        "--to",
        dest="target",
        required=True,
        metavar="STORE",
        help="a store file, postgresql://... or service=NAME (created if new)",
    )
    p.add_argument(
        "--kek-file", type=Path, help="this host's key-encryption key file (for a PostgreSQL store)"
    )
    p.add_argument("--config", type=Path, help="TOML file whose [keys] kek_file to use")
    p.set_defaults(handler=_migrate)

    p = sub.add_parser(
        "kek",
        parents=common,
        help="the key-encryption key of a PostgreSQL store: new, reseal, drop-old, status",
    )
    p.add_argument(
        "action",
        choices=["new", "reseal", "drop-old", "status"],
        help="new: put a fresh KEK first in the file; reseal: seal every key with the first KEK; "
        "drop-old: keep only the first KEK; status: which KEK sealed how many keys",
    )
    p.set_defaults(handler=_kek)


def _store_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    g = options.add_argument_group("configuration (override the [keys] table of the config file)")
    g.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file (default $MAILSEAL_KEYS_CONFIG, ~/.config/mailseal/keys.toml)",
    )
    g.add_argument(
        "--store",
        metavar="STORE",
        help="key store: a file, or a PostgreSQL database (postgresql://... or service=NAME); "
        "default: the config's, or the data folder",
    )
    g.add_argument(
        "--kek-file",
        type=Path,
        metavar="FILE",
        help="key-encryption key file (a PostgreSQL store; default: the config's kek_file)",
    )
    g.add_argument(
        "--now", type=int, metavar="EPOCH", help="pretend it is this time (UTC seconds; for tests)"
    )
    return options


def _lookup_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    g = options.add_argument_group("DNS lookups")
    g.add_argument(
        "--authoritative",
        action="append",
        metavar="IP[:PORT]",
        help="authoritative server to check (repeatable; default: the zone's NS servers)",
    )
    g.add_argument("--resolver", action="append", metavar="IP[:PORT]", help="resolver to use (repeatable)")
    g.add_argument("--timeout", type=float, metavar="SECONDS", help="DNS timeout in seconds (default 5)")
    return options


def _update_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    g = options.add_argument_group("publishing (DNS UPDATE signed with TSIG, or by hand)")
    g.add_argument("--primary", metavar="IP[:PORT]", help="primary server for DNS UPDATE")
    g.add_argument("--zone", metavar="ZONE", help="zone to UPDATE (default: found from DNS)")
    g.add_argument("--tsig-name", metavar="NAME", help="TSIG key name")
    g.add_argument(
        "--tsig-secret-file", type=Path, metavar="FILE", help="file with the base64 TSIG secret (mode 0600)"
    )
    g.add_argument("--tsig-algorithm", choices=TSIG_ALGORITHMS, help="TSIG algorithm (default hmac-sha256)")
    g.add_argument("--manual", action="store_true", help="print what to publish instead of sending UPDATEs")
    return options


class _Session:
    """The store, configuration and lifecycle one command works with."""

    def __init__(self, args: argparse.Namespace) -> None:
        path = args.config if args.config is not None else default_config_path()
        config = load_config(path)
        self.config = _with_overrides(config, args)
        self.fixed_now: int | None = args.now
        self.store = open_store(self.config.store, kek_file=self.config.kek_file)
        self.lifecycle = lifecycle_from_config(self.config, self.store, clock=self.now, out=sys.stdout)

    def now(self) -> int:
        return self.fixed_now if self.fixed_now is not None else int(time.time())

    def entry(self, domain: str, selector: str) -> KeyEntry:
        found = self.store.entry(domain, selector)
        if found is None:
            raise UsageError(f"no key {selector} for {domain} in the key store {describe(self.config.store)}")
        return found

    def close(self) -> None:
        self.store.close()


def _with_overrides(config: KeysConfig, args: argparse.Namespace) -> KeysConfig:
    def option(name: str) -> Any:
        return getattr(args, name, None)  # a subcommand has only the option groups it uses

    publish = config.publish
    if option("manual"):
        publish = replace(publish, mode="manual")
    elif option("primary"):
        publish = replace(publish, mode="update", primary=option("primary"))
    if option("zone"):
        publish = replace(publish, zone=option("zone"))
    if option("tsig_secret_file") is not None:
        name_in_file, algorithm_in_file, secret = read_tsig_file(option("tsig_secret_file"))
        name = option("tsig_name") or name_in_file
        if not name:
            raise UsageError("--tsig-secret-file needs --tsig-name (the file does not name the key)")
        algorithm = option("tsig_algorithm") or algorithm_in_file or "hmac-sha256"
        publish = replace(publish, tsig=TsigCredentials(name, secret, algorithm))
    elif option("tsig_name"):
        raise UsageError("--tsig-name needs --tsig-secret-file")
    if publish is not config.publish:
        # Flags name one primary: they apply to every domain this command touches.
        config = replace(config, publish=publish, domain_publish={})
    if option("timeout") is not None:
        config = replace(config, timeout=option("timeout"))
        publish = replace(config.publish, timeout=option("timeout"))
        config = replace(config, publish=publish)
    if args.store is not None:
        config = replace(config, store=parse_location(str(args.store)))
    if option("kek_file") is not None:
        config = replace(config, kek_file=option("kek_file"))
    if option("authoritative"):
        config = replace(config, authoritative=tuple(option("authoritative")))
    if option("resolver"):
        config = replace(config, resolvers=tuple(option("resolver")))
    return config


def _run(args: argparse.Namespace, body: Callable[[_Session], int]) -> int:
    session = _Session(args)
    try:
        return body(session)
    except KeyStoreBusyError as exc:
        print(f"mailseal: {exc}", file=sys.stderr)
        return EXIT_TEMPFAIL
    finally:
        session.close()


def _domain(value: str) -> str:
    domain = value.lower().removesuffix(".")
    if not is_domain_name(domain, min_labels=2):
        raise UsageError(f"{value!r} is not a valid domain name")
    return domain


def _time(at: int | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _entry_json(entry: KeyEntry, session: _Session) -> dict[str, Any]:
    item = asdict(entry)
    item["key_type"] = str(entry.key_type)
    item["state"] = str(entry.state)
    item["name"] = entry.name
    policy = session.config.policies.for_domain(entry.domain)
    item["next_action"] = outlook(entry, session.store.entries(entry.domain), policy, session.now())
    return item


def _report(report: TickReport, *, as_json: bool) -> int:
    if as_json:
        print(json.dumps(asdict(report), indent=2))
    else:
        for line in report.done:
            print(f"done: {line}")
        for line in report.waiting:
            print(f"waiting: {line}")
        for line in report.errors:
            print(f"error: {line}", file=sys.stderr)
        if not (report.done or report.waiting or report.errors):
            print("nothing to do")
    return 0 if report.ok else EXIT_FAIL


def _generate(args: argparse.Namespace) -> int:
    def body(session: _Session) -> int:
        domain = _domain(args.domain)
        policy = session.config.policies.for_domain(domain)
        key_type = KeyType(args.algorithm) if args.algorithm else policy.key_type
        if args.selector:
            if not is_selector(args.selector):
                raise UsageError(f"{args.selector!r} is not a valid selector")
            selector = args.selector.lower()
        else:
            scheme = check_scheme(args.scheme) if args.scheme else policy.selector_scheme
            taken = {e.selector for e in session.store.entries(domain)}
            selector = selector_for(scheme, session.now(), key_type=key_type, taken=taken)
        bits = (args.bits or policy.bits) if key_type is KeyType.RSA else 256
        entry = session.lifecycle.generate(Generation(domain, key_type, bits, selector), testing=args.testing)
        if args.json:
            print(json.dumps(_entry_json(entry, session), indent=2))
            return 0
        print(f"generated {entry.name} ({entry.key_type}, {entry.bits} bits); private key kept in the store")
        print(zone_file_record(entry.name + ".", split_txt(entry.record_text), ttl=policy.ttl))
        print(f"next: mailseal keys publish {domain} {selector}   (or let mailseal keys tick publish it)")
        return 0

    return _run(args, body)


def _list(args: argparse.Namespace) -> int:
    def body(session: _Session) -> int:
        entries = session.store.entries(_domain(args.domain) if args.domain else None)
        if not args.all:
            entries = [e for e in entries if not (e.state is KeyState.REMOVED and e.confirmed_at is not None)]
        if args.json:
            print(json.dumps([_entry_json(e, session) for e in entries], indent=2))
            return 0
        if not entries:
            print("no keys (create one with: mailseal keys generate DOMAIN)")
            return 0
        now = session.now()
        rows = [("STATE", "DOMAIN", "SELECTOR", "TYPE", "AGE", "NEXT ACTION")]
        for e in entries:
            policy = session.config.policies.for_domain(e.domain)
            nxt = outlook(e, session.store.entries(e.domain), policy, now)
            if e.last_error:
                nxt += f"  [last error: {e.last_error}]"
            kind = f"{e.key_type}-{e.bits}" if e.key_type is KeyType.RSA else str(e.key_type)
            rows.append(
                (str(e.state), e.domain, e.selector, kind, duration_text(max(0, now - e.created_at)), nxt)
            )
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        for row in rows:
            print(
                "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[5]
            )
        return 0

    return _run(args, body)


def _show(args: argparse.Namespace) -> int:
    def body(session: _Session) -> int:
        entry = session.entry(_domain(args.domain), args.selector)
        if args.json:
            item = _entry_json(entry, session)
            item["history"] = [
                {"at": t.at, "from": t.from_state and str(t.from_state), "to": str(t.to_state)}
                for t in session.store.history(entry.id)
            ]
            if args.private:
                item["private_key_pem"] = session.store.private_key(entry.id).to_pem().decode("ascii")
            print(json.dumps(item, indent=2))
            return 0
        policy = session.config.policies.for_domain(entry.domain)
        lines = [
            f"name:          {entry.name}",
            f"state:         {entry.state}",
            f"key:           {entry.key_type}, {entry.bits} bits",
            f"created:       {_time(entry.created_at)}",
            f"published:     {_time(entry.published_at)}",
            f"visible:       {_time(entry.visible_at)}  (every authoritative server served it)",
            f"activated:     {_time(entry.activated_at)}",
            f"retired:       {_time(entry.retired_at)}",
            f"revoked:       {_time(entry.revoked_at)}",
            f"removed:       {_time(entry.removed_at)}",
            f"next action:   {outlook(entry, session.store.entries(entry.domain), policy, session.now())}",
            f"record:        {entry.record_text}",
        ]
        if entry.last_error:
            lines.append(f"last error:    {entry.last_error}")
        lines.append("history:")
        lines += [
            f"  {_time(t.at)}  {t.from_state or '(new)'} -> {t.to_state}"
            for t in session.store.history(entry.id)
        ]
        print("\n".join(lines))
        if args.private:
            print("; private key follows (keep it secret):", file=sys.stderr)
            sys.stdout.write(session.store.private_key(entry.id).to_pem().decode("ascii"))
        return 0

    return _run(args, body)


def _record(args: argparse.Namespace) -> int:
    def body(session: _Session) -> int:
        entry = session.entry(_domain(args.domain), args.selector)
        text = entry.revoked_text if args.revoked else entry.record_text
        ttl = session.config.policies.for_domain(entry.domain).ttl
        strings = split_txt(text)
        zone_line = zone_file_record(entry.name + ".", strings, ttl=ttl)
        if args.json:
            item = {
                "name": entry.name,
                "type": "TXT",
                "ttl": ttl,
                "value": text,
                "strings": list(strings),
                "zone_file": zone_line,
            }
            print(json.dumps(item, indent=2))
        else:
            print(zone_line)
        return 0

    return _run(args, body)


def _publish(args: argparse.Namespace) -> int:
    def body(session: _Session) -> int:
        with session.lifecycle.exclusive():  # never beside a running tick
            entry = session.entry(_domain(args.domain), args.selector)
            if entry.state is KeyState.GENERATED:
                report = session.lifecycle.request(entry, Event.PUBLISH)
            else:
                report = session.lifecycle.resend(entry)
        status = _report(report, as_json=False)
        if status or args.wait <= 0:
            return status
        return _wait_visible(session, entry, args.wait, args.interval)

    return _run(args, body)


def _wait_visible(session: _Session, entry: KeyEntry, budget: float, interval: float) -> int:
    deadline = time.monotonic() + budget
    while True:
        current = session.entry(entry.domain, entry.selector)
        visible, view = session.lifecycle.confirm_if_visible(current)
        if visible:
            print(f"visible: every authoritative server serves {entry.name} ({', '.join(view.servers)})")
            return 0
        if time.monotonic() + interval > deadline:
            missing = [
                s for s, texts in view.servers.items() if texts is None or current.wanted_text not in texts
            ]
            print(
                f"not yet visible at: {', '.join(missing) or '(no authoritative server found)'}"
                + (f" ({view.problem})" if view.problem else ""),
                file=sys.stderr,
            )
            return EXIT_TEMPFAIL
        time.sleep(interval)


def _check(args: argparse.Namespace) -> int:
    def body(session: _Session) -> int:
        domain = _domain(args.domain)
        targets: list[tuple[str, KeyEntry | None]]
        if args.selector:
            name = f"{args.selector.lower()}._domainkey.{domain}"
            targets = [(name, session.store.entry(domain, args.selector))]
        else:
            keys = [
                e
                for e in session.store.entries(domain)
                if e.state is not KeyState.GENERATED and not (e.state is KeyState.REMOVED and e.confirmed_at)
            ]
            if not keys:
                raise UsageError(f"no published keys of {domain} in the key store; give a SELECTOR to check")
            targets = [(e.name, e) for e in keys]
        results: list[tuple[str, KeyEntry | None, list[Finding]]] = []
        for name, entry in targets:
            lookups = gather(
                name,
                authoritative=session.config.authoritative,
                resolvers=session.config.resolvers,
                timeout=session.config.timeout,
            )  # RRSIG validity is judged against the real clock, not --now
            results.append((name, entry, analyse(lookups, entry)))
        everything = [f for _, _, findings in results for f in findings]
        said = reports_keys.check_lines(
            args, session.config.store, [e for _, e, _ in results if e], session.now()
        )
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "name": name,
                            "state": str(entry.state) if entry else None,
                            "status": _verdict(findings),
                            "findings": [
                                {**asdict(f), "level": str(f.level), "code": str(f.code)} for f in findings
                            ],
                            **({"reports": said[name]} if name in said else {}),
                        }
                        for name, entry, findings in results
                    ],
                    indent=2,
                )
            )
        else:
            for name, entry, findings in results:
                _print_findings(name, entry, findings)
                if name in said:
                    print(f"  {said[name]}")
        return exit_status(everything)

    return _run(args, body)


def _verdict(findings: Sequence[Finding]) -> str:
    return {0: "pass", 3: "warn", 1: "fail"}[exit_status(findings)]


def _print_findings(name: str, entry: KeyEntry | None, findings: Sequence[Finding]) -> None:
    state = f" ({entry.state})" if entry is not None else " (not in the key store)"
    print(f"{name}{state}: {_verdict(findings).upper()}")
    width = max((len(f.code) for f in findings), default=0)
    for f in findings:
        print(f"  {f.level.upper():4}  {f.code:{width}}  {f.message}")
        if f.fix and f.level in (Level.WARN, Level.FAIL, Level.INFO):
            print(f"        {'':{width}}  fix: {f.fix}")


def _rotate(args: argparse.Namespace) -> int:
    def body(session: _Session) -> int:
        with session.lifecycle.exclusive():  # the new key and its publication, never beside a running tick
            return start_rotation(session)

    def start_rotation(session: _Session) -> int:
        domain = _domain(args.domain)
        key_type = KeyType(args.algorithm) if args.algorithm else None
        generation = session.lifecycle.successor(domain, key_type)
        pending = [
            e
            for e in session.store.entries(domain)
            if e.key_type is generation.key_type and e.state in (KeyState.GENERATED, KeyState.PUBLISHED)
        ]
        if pending:
            raise UsageError(
                f"a rotation of {domain}'s {generation.key_type} key is under way: {pending[-1].selector} is "
                f"{pending[-1].state}; mailseal keys tick finishes it"
            )
        entry = session.lifecycle.generate(generation)
        print(f"generated {entry.name} ({entry.key_type}, {entry.bits} bits)")
        status = _report(session.lifecycle.request(entry, Event.PUBLISH), as_json=False)
        if status == 0:
            policy = session.config.policies.for_domain(domain)
            print(
                f"signing switches to {entry.selector} once every authoritative server serves it "
                f"(+{duration_text(policy.propagation_delay)}); the old key stays published for "
                f"{duration_text(policy.grace)}, then is revoked. mailseal keys tick carries this out."
            )
        return status

    return _run(args, body)


def _retire(args: argparse.Namespace) -> int:
    def body(session: _Session) -> int:
        entry = session.entry(_domain(args.domain), args.selector)
        if entry.state is KeyState.ACTIVE and not args.force:
            others = [
                e
                for e in session.store.entries(entry.domain)
                if e.lineage == entry.lineage and e.id != entry.id and e.state is KeyState.ACTIVE
            ]
            if not others:
                raise UsageError(
                    f"{entry.selector} is the only active {entry.key_type} key of {entry.domain}: retiring it "
                    f"stops signing. Rotate first (mailseal keys rotate {entry.domain}), or pass --force"
                )
        event = Event.REVOKE if args.revoke else Event.RETIRE
        return _report(session.lifecycle.request(entry, event), as_json=False)

    return _run(args, body)


def _tick(args: argparse.Namespace) -> int:
    def body(session: _Session) -> int:
        gate_store = reports_keys.install_gate(session.lifecycle, args, session.config.store)
        try:
            report = session.lifecycle.tick(
                rotate=not args.no_rotate, domain=_domain(args.domain) if args.domain else None
            )
        finally:
            if gate_store is not None:
                gate_store.close()
        return _report(report, as_json=args.json)

    return _run(args, body)


def _migrate(args: argparse.Namespace) -> int:
    kek_file = args.kek_file
    if kek_file is None:
        path = args.config if args.config is not None else default_config_path()
        kek_file = load_config(path).kek_file
    source_location = parse_location(args.source)
    if isinstance(source_location, Path) and not source_location.exists():
        raise UsageError(f"--from: no key store at {source_location}")
    target_location = parse_location(args.target)
    if source_location == target_location or (
        isinstance(source_location, Path)
        and isinstance(target_location, Path)
        and target_location.exists()
        and source_location.samefile(target_location)
    ):
        raise UsageError(f"--from and --to name the same store ({describe(source_location)})")
    source = open_store(source_location, kek_file=kek_file)
    try:
        target = open_store(target_location, kek_file=kek_file)
        try:
            report = migrate(source, target)
        except KeyStoreBusyError as exc:
            print(f"mailseal: {exc}", file=sys.stderr)
            return EXIT_TEMPFAIL
        finally:
            target.close()
    finally:
        source.close()
    for name, outcome in report.outcomes:
        print(f"{outcome}: {name}")
    print(
        f"{len(report.outcomes)} key(s): {report.count('added')} added, {report.count('updated')} updated, "
        f"{report.count('same')} already the same in {describe(target_location)}"
    )
    return 0


def _kek(args: argparse.Namespace) -> int:
    path = args.config if args.config is not None else default_config_path()
    config = _with_overrides(load_config(path), args)
    kek_file = config.kek_file
    if kek_file is None:
        raise UsageError("no key-encryption key file: set kek_file in [keys] or pass --kek-file")
    if args.action == "new":
        ring = add_kek(kek_file)
        print(f"{kek_file}: new KEK {ring.current.id} first; {len(ring.keys) - 1} older kept for reading")
        print("next: copy this file to every signing host (mode 0600), then: mailseal keys kek reseal")
        return 0
    if args.action == "drop-old":
        ring = read_kek_file(kek_file)
        opened = open_store(config.store, kek_file=kek_file)
        try:
            sealed = opened.kek_ids() if isinstance(opened, SealedStore) else {}
        finally:
            opened.close()
        others = {k: n for k, n in sealed.items() if k != ring.current.id}
        if others:
            listed = ", ".join(f"{n} key(s) sealed with {k}" for k, n in others.items())
            raise UsageError(f"the store still has {listed}; run `mailseal keys kek reseal` first")
        kept = drop_keks(kek_file)
        print(f"{kek_file}: only KEK {kept.current.id} kept")
        return 0

    def body(session: _Session) -> int:
        store = session.store
        if not isinstance(store, SealedStore):
            raise UsageError(
                f"the key store {describe(session.config.store)} is a SQLite file: its keys are not sealed "
                "(its file mode protects them); KEKs are for a PostgreSQL store"
            )
        if args.action == "reseal":
            print(f"resealed {store.reseal()} private key(s) with KEK {read_kek_file(kek_file).current.id}")
        ring = read_kek_file(kek_file)
        in_file = {k.id for k in ring.keys}
        for kek_id, count in sorted(store.kek_ids().items()):
            where = (
                "first in the KEK file"
                if kek_id == ring.current.id
                else ("in the KEK file" if kek_id in in_file else "NOT in this host's KEK file")
            )
            print(f"KEK {kek_id}: {count} private key(s) ({where})")
        return 0

    return _run(args, body)
