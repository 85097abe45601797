"""A private Postfix instance on loopback for end-to-end tests and benchmarks.

``PostfixInstance`` writes its own ``main.cf``/``master.cf`` into a fresh
directory under /tmp (config, queue, data and log all inside it), starts it
with ``postfix -c DIR start``, and stops it and removes the directory on exit,
also when a test fails (a finalizer covers a test process that dies).
Nothing under /etc is written: ``meta_directory`` (/etc/postfix) is only read,
aliases are off, and every transport points at the relay (our ``SmtpSink``
unless another ``relay`` is given), so no mail can leave 127.0.0.1 and no DNS
lookup is made.

Clients. A test submits over SMTP from 127.0.0.1, which is in ``mynetworks``:
that is the *internal* client. To present an *outside* client (or a roaming
user with SASL credentials), the helper sends Postfix's ``XCLIENT`` command
(``smtpd_authorized_xclient_hosts = 127.0.0.0/8``) right after EHLO: Postfix
then treats the session as coming from the claimed address, name and HELO,
and -- what matters for a milter -- replays the milter connect event with that
address, so the milter's connect callback, ``_`` and ``{client_addr}`` all
show it; ``LOGIN=`` sets ``{auth_authen}`` (``{auth_type}`` is ``XCLIENT``).
No traffic goes to the claimed address: it is only a label on the session.
``tests/integration/test_postfix_harness.py`` checks these claims against a
recording milter.

Several smtpd listeners can be configured (``listeners={"submission": {...}}``
with ``-o`` overrides), each on its own loopback port, e.g. to give one port
different milters or ``milter_macro_daemon_name``.
"""

from __future__ import annotations

import contextlib
import email.parser
import email.utils
import json
import os
import re
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from support.managed import ManagedServer
from support.ports import free_port
from support.smtp_sink import SinkMessage, SmtpSink

LOOPBACK = "127.0.0.1"
POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
POSTCONF = "/usr/sbin/postconf"
SENDMAIL = "/usr/sbin/sendmail"
SMTP_SOURCE = "/usr/sbin/smtp-source"
SMTP_SINK = "/usr/sbin/smtp-sink"
DEFAULT_LISTENER = "smtp"


def postfix_available() -> bool:
    """Whether Postfix is installed (Debian ``postfix``) and we can run a private master (root)."""
    return os.access(POSTFIX, os.X_OK) and os.access(POSTQUEUE, os.X_OK) and os.geteuid() == 0


def free_tcp_port() -> int:
    """A loopback TCP port that was free a moment ago, outside the ephemeral range (support.ports)."""
    return free_port()


@dataclass(frozen=True)
class Client:
    """Who Postfix believes is connecting: ``None`` fields are left as they really are.

    Sent as ``XCLIENT ADDR=... NAME=... HELO=... LOGIN=...``; ``login`` makes
    the session SASL-authenticated as that user (``{auth_authen}``).
    """

    addr: str | None = None
    name: str | None = None
    helo: str | None = None
    login: str | None = None

    def xclient_args(self) -> str:
        """The XCLIENT attribute list (xtext-encoded values)."""
        pairs = [("ADDR", self.addr), ("NAME", self.name), ("HELO", self.helo), ("LOGIN", self.login)]
        return " ".join(f"{key}={_xtext(value)}" for key, value in pairs if value is not None)


INTERNAL = Client()
"""The real loopback client: 127.0.0.1, inside ``mynetworks``, no XCLIENT sent."""

EXTERNAL = Client(addr="203.0.113.25", name="mx.outside.example", helo="mx.outside.example")
"""An outside MTA (TEST-NET-3 address, RFC 5737), presented through XCLIENT."""


def roaming_user(login: str) -> Client:
    """An authenticated user connecting from outside (XCLIENT LOGIN=...)."""
    return Client(addr="198.51.100.7", name="laptop.roaming.example", helo="laptop", login=login)


def _xtext(value: str) -> str:
    """RFC 3461 xtext: '+', '=' and characters outside 33..126 become +HH."""
    return "".join(c if 33 <= ord(c) <= 126 and c not in "+=" else f"+{ord(c):02X}" for c in value)


@dataclass(frozen=True)
class SmtpResult:
    """The server's final reply to a submission (the DATA reply, or the first refusal)."""

    code: int
    text: str
    stage: str
    """Which command got this reply: mail, rcpt or data."""

    @property
    def accepted(self) -> bool:
        """2xx after DATA: Postfix took responsibility for the message."""
        return 200 <= self.code < 300

    @property
    def queue_id(self) -> str | None:
        """Postfix's queue id from ``250 2.0.0 Ok: queued as ID``."""
        match = re.search(r"queued as ([0-9A-Za-z]+)", self.text)
        return match.group(1) if match else None


@dataclass(frozen=True)
class QueuedMessage:
    """One message in Postfix's queue, from ``postqueue -j``."""

    queue_id: str
    queue_name: str
    """incoming, active, deferred, hold, maildrop, corrupt."""
    sender: str
    recipients: tuple[str, ...]
    delay_reasons: tuple[str, ...]


class PostfixStartError(RuntimeError):
    """Postfix did not come up; the message carries its log."""


def envelope_of(message: bytes) -> tuple[str, list[str]]:
    """Envelope sender and recipients taken from From and To/Cc (for helpers that need none given)."""
    headers = email.parser.BytesHeaderParser().parsebytes(message)
    senders = email.utils.getaddresses(headers.get_all("From", []))
    recipients = email.utils.getaddresses(headers.get_all("To", []) + headers.get_all("Cc", []))
    sender = senders[0][1] if senders else ""
    return sender, [address for _, address in recipients if address] or ["postmaster@example.net"]


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 is the state)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def _listening(port: int) -> bool:
    """Whether a socket listens on 127.0.0.1:port (read from /proc, without connecting)."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":
            return True
    return False


def _pid_alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def _process_group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and int(stat[2]) == pgid:
                members.append(int(entry.name))
    return members


def _stop_instance(pgid: int | None, cleanup: Sequence[Path], sink: SmtpSink | None) -> None:
    """Stop a master and all its processes, then remove the directories (finalizer-safe)."""
    if pgid is not None and _process_group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pgid, signal.SIGTERM)  # the master (pid == pgid) stops its children itself
        deadline = time.monotonic() + 10
        while _pid_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # whatever is left of this instance's process group
        deadline = time.monotonic() + 5
        while any(_pid_alive(pid) for pid in _process_group_members(pgid)) and time.monotonic() < deadline:
            time.sleep(0.02)
    if sink is not None:
        sink.stop()
    for path in cleanup:
        shutil.rmtree(path, ignore_errors=True)


_MASTER_CF_SERVICES = """\
# service type  private unpriv  chroot  wakeup  maxproc command
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixInstance(ManagedServer):
    """A private Postfix on 127.0.0.1 relaying everything to a sink; a context manager.

    ``milters`` becomes ``smtpd_milters`` (a Postfix milter address such as
    ``inet:127.0.0.1:PORT`` or ``unix:/path``, or several), ``non_smtpd_milters``
    applies to mail submitted with :meth:`sendmail`. ``relay`` is where
    delivered mail goes: ``None`` starts our own :class:`SmtpSink`
    (:attr:`sink`, :meth:`delivered`); a ``(host, port)`` pair relays to
    something else (``smtp-sink``, another instance). ``main_cf`` adds or
    overrides main.cf parameters. Retries are quick (1 s backoff) so deferred
    mail is retried within a test; :meth:`flush` retries at once.
    """

    def __init__(
        self,
        *,
        milters: str | Sequence[str] = (),
        non_smtpd_milters: str | Sequence[str] = (),
        milter_default_action: str = "tempfail",
        milter_protocol: int = 6,
        mynetworks: str | Sequence[str] = "127.0.0.0/8",
        relay: tuple[str, int] | None = None,
        listeners: Mapping[str, Mapping[str, str]] | None = None,
        main_cf: Mapping[str, str] | None = None,
        hostname: str = "mx.mailseal.test",
        startup_timeout: float = 20.0,
        services: Sequence[str] = (),
    ) -> None:
        """Prepare (not start) the instance; use ``with`` or start()/stop().

        ``services`` are extra master.cf lines (e.g. a ``pipe`` transport to a list manager).
        """
        self.services = list(services)
        self.milters = [milters] if isinstance(milters, str) else list(milters)
        self.non_smtpd_milters = (
            [non_smtpd_milters] if isinstance(non_smtpd_milters, str) else list(non_smtpd_milters)
        )
        self.milter_default_action = milter_default_action
        self.milter_protocol = milter_protocol
        self.mynetworks = [mynetworks] if isinstance(mynetworks, str) else list(mynetworks)
        self.hostname = hostname
        self.startup_timeout = startup_timeout
        if relay is not None and not relay[0].startswith("127."):
            raise ValueError(f"relay {relay[0]} is not a loopback address: test mail stays on this machine")
        self._relay = relay
        self._listener_overrides: dict[str, dict[str, str]] = {DEFAULT_LISTENER: {}}
        for name, overrides in (listeners or {}).items():
            if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
                raise ValueError(f"bad listener name {name!r}")
            self._listener_overrides[name] = dict(overrides)
        self._main_cf_extra = dict(main_cf or {})
        self.ports: dict[str, int] = {}
        self.sink: SmtpSink | None = None
        self.base = Path()
        self._pgid: int | None = None
        self._finalizer: weakref.finalize[..., PostfixInstance] | None = None

    # ------------------------------------------------------------------ paths and addresses

    @property
    def config_dir(self) -> Path:
        """``postfix -c`` directory (main.cf, master.cf)."""
        return self.base / "etc"

    @property
    def queue_dir(self) -> Path:
        """``queue_directory``."""
        return self.base / "queue"

    @property
    def log_path(self) -> Path:
        """``maillog_file``, written by postlogd."""
        return self.base / "postfix.log"

    @property
    def port(self) -> int:
        """The main smtpd port."""
        return self.ports[DEFAULT_LISTENER]

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of the main smtpd, e.g. as another instance's ``relay``."""
        return (LOOPBACK, self.port)

    @property
    def relay(self) -> tuple[str, int]:
        """Where this instance delivers all mail."""
        if self._relay is not None:
            return self._relay
        if self.sink is None:
            raise RuntimeError("instance not started")
        return self.sink.address

    @property
    def master_pid(self) -> int | None:
        """The master daemon's pid (also its process group), while running."""
        return self._pgid

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Write the configuration, start the master and wait until every smtpd greets."""
        if self._finalizer is not None:
            raise RuntimeError("instance already started")
        if not postfix_available():
            raise PostfixStartError(
                f"{POSTFIX} is not installed or we are not root (apt-get install postfix)"
            )
        self.base = Path(tempfile.mkdtemp(prefix="ms-pf-", dir="/tmp"))
        # Postfix's daemons run as the postfix user and must reach the queue and log below.
        self.base.chmod(0o755)
        try:
            if self._relay is None:
                self.sink = SmtpSink().start()
            self._finalizer = weakref.finalize(self, _stop_instance, None, (self.base,), self.sink)
            self.config_dir.mkdir()
            self.queue_dir.mkdir()  # postfix creates data/ and the queue's subdirectories, owned right
            problem = ""
            for _ in range(3):  # a port taken between free_tcp_port() and master's bind: try others
                self.ports = {name: free_tcp_port() for name in self._listener_overrides}
                self._write_config()
                if self._start_master():
                    return self
                problem = self.log_text()
                if "Address already in use" not in problem:
                    break
            raise PostfixStartError(f"postfix did not start:\n{problem[-4000:]}")
        except BaseException:
            self.stop()
            raise

    def _start_master(self) -> bool:
        """``postfix -c DIR start``; True once the master runs and every listener is bound."""
        done = subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), "start"],
            capture_output=True,
            text=True,
            timeout=self.startup_timeout,
            check=False,
        )
        pid_file = self.queue_dir / "pid" / "master.pid"
        if done.returncode != 0 or not pid_file.exists():
            return False
        self._pgid = int(pid_file.read_text().split()[0])
        # From here on the finalizer also stops the master's process group.
        if self._finalizer is not None:
            self._finalizer.detach()
        self._finalizer = weakref.finalize(self, _stop_instance, self._pgid, (self.base,), self.sink)
        # `postfix start` returns after the master has initialised (master -w), listeners bound.
        if all(_listening(port) for port in self.ports.values()):
            return True
        _stop_instance(self._pgid, (), None)
        self._pgid = None
        return False

    def stop(self) -> None:
        """Stop the master and its children, stop our sink, remove the directory."""
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        self._pgid = None

    # ------------------------------------------------------------------ configuration

    def _main_cf(self) -> dict[str, str]:
        relay = f"[{self.relay[0]}]:{self.relay[1]}"
        params = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.base / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": str(self.log_path),
            "maillog_file_prefixes": str(self.base),
            "myhostname": self.hostname,
            "mydomain": "mailseal.test",
            "myorigin": "$myhostname",
            "smtpd_banner": "$myhostname ESMTP mailseal-test",
            "inet_interfaces": LOOPBACK,
            "inet_protocols": "ipv4",
            "mynetworks": " ".join(self.mynetworks),
            # Nothing is delivered locally and nothing under /etc is read or written for aliases.
            "mydestination": "",
            "local_recipient_maps": "",
            "local_transport": "error:5.1.1 local delivery is off in this test instance",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "notify_classes": "",
            # Every transport goes to the relay: mail cannot leave loopback, and no MX lookups.
            "relayhost": relay,
            "default_transport": f"smtp:{relay}",
            "relay_transport": f"smtp:{relay}",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "smtpd_peername_lookup": "no",
            # The relay policy is not under test: every domain is a relay domain (all go to the relay).
            "relay_domains": "static:ALL",
            "smtpd_relay_restrictions": "permit_mynetworks permit_sasl_authenticated reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
            "smtpd_authorized_xforward_hosts": "127.0.0.0/8",
            # Never re-encode 8-bit bodies on the way out: that would break signatures.
            "disable_mime_output_conversion": "yes",
            # Retry deferred mail quickly so a test can watch it being delivered later.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "5s",
            "milter_protocol": str(self.milter_protocol),
            "milter_default_action": self.milter_default_action,
            "milter_connect_timeout": "5s",
            "smtpd_milters": ", ".join(self.milters),
            "non_smtpd_milters": ", ".join(self.non_smtpd_milters),
        }
        params.update(self._main_cf_extra)
        return params

    def _write_config(self) -> None:
        lines = [f"{key} = {value}" for key, value in self._main_cf().items()]
        (self.config_dir / "main.cf").write_text("\n".join(lines) + "\n")
        services = []
        for name, overrides in self._listener_overrides.items():
            services.append(f"{LOOPBACK}:{self.ports[name]} inet n - n - - smtpd")
            services.append(f"  -o syslog_name=postfix/{name}")
            services.extend(f"  -o {{ {key} = {value} }}" for key, value in overrides.items())
        extra = "".join(line + "\n" for line in self.services)
        (self.config_dir / "master.cf").write_text("\n".join(services) + "\n" + _MASTER_CF_SERVICES + extra)
        # Postfix waits (300 ms at a time) until a config file is over a second old, in case
        # it is still being written: date the files back so every command reads them at once.
        settled = time.time() - 10
        for name in ("main.cf", "master.cf"):
            os.utime(self.config_dir / name, (settled, settled))

    def postconf(self, **params: str) -> None:
        """Change main.cf parameters and reload, e.g. ``pf.postconf(smtpd_milters="inet:...")``."""
        self._main_cf_extra.update(params)
        self._write_config()
        self.reload()

    def reload(self) -> None:
        """``postfix reload``: new processes use the current main.cf/master.cf."""
        self._postfix("reload")

    def _postfix(self, *args: str) -> str:
        done = subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"postfix {' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    # ------------------------------------------------------------------ submitting

    @contextlib.contextmanager
    def smtp(self, client: Client = INTERNAL, *, listener: str = DEFAULT_LISTENER) -> Iterator[smtplib.SMTP]:
        """An SMTP session after EHLO (and XCLIENT for a non-internal client), for step-by-step tests."""
        helo = client.helo or "client.mailseal.test"
        with smtplib.SMTP(LOOPBACK, self.ports[listener], local_hostname=helo, timeout=60) as session:
            session.ehlo(helo)
            args = client.xclient_args()
            if args:
                if not session.has_extn("xclient"):
                    raise RuntimeError("Postfix does not offer XCLIENT to this client")
                code, text = session.docmd("XCLIENT", args)
                if code != 220:
                    raise smtplib.SMTPResponseException(code, text)
                session.ehlo(helo)
            yield session

    def submit(
        self,
        message: bytes,
        *,
        internal: bool = True,
        client: Client | None = None,
        sender: str | None = None,
        recipients: Sequence[str] | None = None,
        listener: str = DEFAULT_LISTENER,
    ) -> SmtpResult:
        """Send one message over SMTP and return the final reply (refusals are returned, not raised).

        ``internal=True`` sends from 127.0.0.1 as is; ``internal=False`` presents
        :data:`EXTERNAL`; ``client`` presents any :class:`Client` instead.
        Envelope addresses default to the From and To/Cc header addresses.
        """
        who = client if client is not None else (INTERNAL if internal else EXTERNAL)
        if sender is None or recipients is None:  # a hostile From need not be parsable by the harness
            default_sender, default_recipients = envelope_of(message)
            sender = default_sender if sender is None else sender
            recipients = default_recipients if recipients is None else recipients
        mail_from = sender
        rcpt_to = list(recipients)
        with self.smtp(who, listener=listener) as session:
            stage = "mail"
            try:
                code, text = session.mail(mail_from)
                if code >= 300:
                    return SmtpResult(code, text.decode(errors="replace"), stage)
                stage = "rcpt"
                for rcpt in rcpt_to:
                    code, text = session.rcpt(rcpt)
                    if code >= 300:
                        return SmtpResult(code, text.decode(errors="replace"), stage)
                stage = "data"
                code, text = session.data(message)
            except smtplib.SMTPResponseException as exc:
                error = exc.smtp_error
                text = error if isinstance(error, bytes) else error.encode()
                return SmtpResult(exc.smtp_code, text.decode(errors="replace"), stage)
            return SmtpResult(code, text.decode(errors="replace"), stage)

    def sendmail(
        self, message: bytes, *, sender: str | None = None, recipients: Sequence[str] | None = None
    ) -> None:
        """Submit through Postfix's sendmail command (pickup, ``non_smtpd_milters``)."""
        default_sender, default_recipients = envelope_of(message)
        done = subprocess.run(
            [
                SENDMAIL,
                "-C",
                str(self.config_dir),
                "-f",
                default_sender if sender is None else sender,
                "--",
                *(default_recipients if recipients is None else recipients),
            ],
            input=message.replace(b"\r\n", b"\n"),
            capture_output=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"sendmail exited {done.returncode}: {done.stderr.decode(errors='replace')}")

    # ------------------------------------------------------------------ delivered mail and the queue

    def delivered(self, count: int | None = None, timeout: float = 60.0) -> list[SinkMessage]:
        """Messages our sink received; with ``count``, wait until that many arrived."""
        if self.sink is None:
            raise RuntimeError("this instance relays elsewhere; read delivered mail there")
        if count is None:
            return self.sink.messages()
        return self.sink.wait_for(count, timeout)

    def queue(self) -> list[QueuedMessage]:
        """What is in the queue now (``postqueue -j``)."""
        done = subprocess.run(
            [POSTQUEUE, "-c", str(self.config_dir), "-j"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"postqueue -j failed: {done.stderr}")
        queued = []
        for line in done.stdout.splitlines():
            item = json.loads(line)
            recipients = item.get("recipients", [])
            queued.append(
                QueuedMessage(
                    queue_id=str(item["queue_id"]),
                    queue_name=str(item["queue_name"]),
                    sender=str(item.get("sender", "")),
                    recipients=tuple(str(r["address"]) for r in recipients),
                    delay_reasons=tuple(str(r["delay_reason"]) for r in recipients if r.get("delay_reason")),
                )
            )
        return queued

    def flush(self) -> None:
        """``postqueue -f``: retry deferred mail now."""
        subprocess.run(
            [POSTQUEUE, "-c", str(self.config_dir), "-f"], capture_output=True, timeout=30, check=True
        )

    def wait_queue_empty(self, timeout: float = 60.0) -> None:
        """Wait until nothing is queued any more (delivered, or bounced)."""
        self._wait_queue(lambda queued: not queued, "empty", timeout)

    def wait_deferred(self, timeout: float = 60.0) -> list[QueuedMessage]:
        """Wait until a message sits in the deferred queue; return the whole queue."""
        return self._wait_queue(
            lambda queued: any(q.queue_name == "deferred" for q in queued), "deferred", timeout
        )

    def _wait_queue(
        self, done: Callable[[list[QueuedMessage]], bool], what: str, timeout: float
    ) -> list[QueuedMessage]:
        deadline = time.monotonic() + timeout
        while True:
            queued = self.queue()
            if done(queued):
                return queued
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue not {what} after {timeout} s: {queued}")
            time.sleep(0.05)

    # ------------------------------------------------------------------ processes (for benchmarks)

    def pids(self) -> list[int]:
        """The master and every process it runs now (they share its process group)."""
        return [] if self._pgid is None else _process_group_members(self._pgid)
