"""Listening sockets: unix socket mode and group, stale sockets, refusing to clobber files, port 0."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat
from pathlib import Path

import pytest

from mailseal.errors import UsageError
from mailseal.milter.config import ListenAddress, parse_listen
from mailseal.milter.sockets import account, bound_address, drop_privileges, exposure_warning, open_listener


def test_unix_socket_gets_the_configured_mode_and_group(tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    group = grp.getgrgid(os.getgid()).gr_name
    sock = open_listener(ListenAddress("unix", path=str(path)), mode=0o660, group=group)
    try:
        info = path.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert info.st_gid == os.getgid()
    finally:
        sock.close()


def test_a_stale_socket_is_replaced_but_a_live_one_is_not(tmp_path: Path) -> None:
    path = str(tmp_path / "m.sock")
    first = open_listener(ListenAddress("unix", path=path))
    with pytest.raises(UsageError, match="already listening"):
        open_listener(ListenAddress("unix", path=path))
    first.close()  # the file stays behind, as after a crash
    second = open_listener(ListenAddress("unix", path=path))
    second.close()


def test_a_regular_file_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "important"
    path.write_text("keep me")
    with pytest.raises(UsageError, match="not a socket"):
        open_listener(ListenAddress("unix", path=str(path)))
    assert path.read_text() == "keep me"


def test_port_zero_reports_the_port_chosen() -> None:
    address = parse_listen("inet:0@127.0.0.1")
    sock = open_listener(address)
    try:
        bound = bound_address(address, sock)
        assert bound.port == sock.getsockname()[1] > 0
        probe = socket.create_connection(("127.0.0.1", bound.port), timeout=2)
        probe.close()
    finally:
        sock.close()


def test_unknown_user_or_group_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown user"):
        account("no-such-user-mailseal")
    with pytest.raises(UsageError, match="unknown group"):
        account(str(os.getuid()), "no-such-group-mailseal")


@pytest.mark.parametrize(
    ("spec", "warned"),
    [
        ("inet:8891@127.0.0.1", False),
        ("inet6:8891@::1", False),
        ("inet:8891@localhost", False),
        ("unix:/run/mailseal/milter.sock", False),
        ("inet:8891@0.0.0.0", True),
        ("inet:8891@192.0.2.10", True),
        ("inet6:8891@::", True),
        ("inet:8891@mx.example.com", True),
    ],
)
def test_listening_beyond_loopback_is_warned_about(spec: str, *, warned: bool) -> None:
    warning = exposure_warning(parse_listen(spec))
    assert (warning is not None) is warned
    if warning:
        assert "no authentication" in warning


def test_dropping_privileges_keeps_the_users_supplementary_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    """A group the user belongs to (e.g. the one owning a 0640 key store) must still apply."""
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(os, "getuid", lambda: 0)
    monkeypatch.setattr(os, "getgid", lambda: 0)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "setgroups", lambda groups: calls.append(("setgroups", tuple(groups))))
    monkeypatch.setattr(os, "initgroups", lambda user, gid: calls.append(("initgroups", (user, gid))))
    monkeypatch.setattr(os, "setgid", lambda gid: calls.append(("setgid", gid)))
    monkeypatch.setattr(os, "setuid", lambda uid: calls.append(("setuid", uid)))
    nobody = pwd.getpwnam("nobody")
    drop_privileges("nobody")
    assert calls == [
        ("initgroups", ("nobody", nobody.pw_gid)),
        ("setgid", nobody.pw_gid),
        ("setuid", nobody.pw_uid),
    ]
