"""Listening sockets and the privilege drop: what needs root, done once at start."""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import logging
import os
import pwd
import socket
import stat

from mailseal.errors import UsageError
from mailseal.milter.config import ListenAddress

_log = logging.getLogger("mailseal.milter")

LISTEN_BACKLOG = 4096
"""Completed connections the kernel queues for us (capped by net.core.somaxconn). Deep, so a
connection flood does not make the kernel drop the MTA's SYN: every connection reaches our
accept loop, which admits or refuses it at once (a dropped SYN costs the MTA a 1 s retry)."""


def exposure_warning(address: ListenAddress) -> str | None:
    """A warning when the milter listens on a TCP address other than loopback; None otherwise.

    The milter protocol has no authentication: whoever can connect can have
    mail signed with our keys, and the client address a session acts on is
    whatever the connecting side claims.
    """
    if address.family == "unix":
        return None
    host = address.host.strip("[]")
    if host.lower() == "localhost":
        return None
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return None
    return (
        f"the milter listens on {address}, not a loopback address: the milter protocol has no "
        "authentication, so anyone who can connect can have mail signed with these keys and claim "
        "any client address; restrict it with a firewall, or listen on 127.0.0.1 or a unix socket"
    )


def open_listener(address: ListenAddress, *, mode: int = 0o660, group: str = "") -> socket.socket:
    """Bind and listen; a unix socket gets ``mode`` and ``group`` (a stale socket file is replaced)."""
    if address.family == "unix":
        return _unix_listener(address.path, mode, group)
    family = socket.AF_INET6 if address.family == "inet6" or ":" in address.host else socket.AF_INET
    try:
        infos = socket.getaddrinfo(address.host, address.port, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {address}: {exc.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(infos[0][4])
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {address}: {exc.strerror}") from None
    return sock


def bound_address(address: ListenAddress, sock: socket.socket) -> ListenAddress:
    """The address as bound (port 0 replaced by the port the system chose)."""
    if address.family == "unix":
        return address
    return ListenAddress(address.family, address.host, sock.getsockname()[1])


def _unix_listener(path: str, mode: int, group: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        info = os.lstat(path)
        if not stat.S_ISSOCK(info.st_mode):
            raise UsageError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # nobody listens: a socket left by a crash
        else:
            raise UsageError(f"another process is already listening on {path}")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # never briefly open to everyone
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on unix:{path}: {exc.strerror}") from None
    finally:
        os.umask(old)
    if group:
        os.chown(path, -1, _gid(group))
    os.chmod(path, mode)
    sock.listen(LISTEN_BACKLOG)
    return sock


def _gid(group: str) -> int:
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise UsageError(f"unknown group {group!r}") from None


def account(user: str, group: str = "") -> tuple[str, int, int]:
    """The name, uid and gid to run as (``group``, else the user's primary group)."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"unknown user {user!r}") from None
    return entry.pw_name, entry.pw_uid, _gid(group) if group else entry.pw_gid


def drop_privileges(user: str, group: str = "") -> None:
    """Become ``user`` (and ``group``) for good, after binding the sockets."""
    name, uid, gid = account(user, group)
    if os.getuid() == uid and os.getgid() == gid:
        return
    if os.geteuid() != 0:
        raise UsageError(f"only root can switch to user {user!r}; start as root or remove milter.user")
    os.initgroups(name, gid)  # the user's supplementary groups (e.g. one owning a 0640 key store)
    os.setgid(gid)
    os.setuid(uid)
    _log.info("running as %s (uid %d, gid %d)", name, uid, gid)


def metrics_listener(address: tuple[str, int]) -> socket.socket:
    host, port = address
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen for metrics on {host}:{port}: {exc.strerror}") from None
    sock.listen(16)
    return sock


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (every connection costs a descriptor); (old, new)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or (hard != resource.RLIM_INFINITY and soft > hard):
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, hard
