"""Private key files: written 0600 atomically, refused when others could read or swap them."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from pathlib import Path

from mailseal.core.keymaterial import PrivateKey, load_private_key
from mailseal.errors import InsecureKeyFileError, KeyFileError, UsageError

KEY_FILE_MODE = 0o600
MAX_KEY_FILE = 1 << 20  # a PEM key is a few KB; refuse to read anything absurd


def write_secret_file(path: Path, data: bytes, *, overwrite: bool = True) -> None:
    """Put ``data`` at ``path`` with mode 0600, never briefly readable by others; raises OSError.

    The one way secrets reach disk (private keys, the KEK file, the milter's
    key cache): an unpredictable temporary file created 0600 in the same
    folder, synced, then put in place with an atomic rename, or, when an
    existing file must not be replaced, a hard link (FileExistsError if one
    appeared meanwhile). A crash leaves either the old file or the new.
    """
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), KEY_FILE_MODE)  # mkstemp uses 0600; an ACL must not widen it
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            tmp.replace(path)
        else:
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_private_key(path: Path, key: PrivateKey, *, overwrite: bool = False) -> None:
    """Write ``key`` as PKCS#8 PEM with mode 0600 (see :func:`write_secret_file`)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_secret_file(path, key.to_pem(), overwrite=overwrite)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a private key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write key file {path}: {exc.strerror}") from None


def refuse_shared(info: os.stat_result, path: Path, what: str) -> None:
    """Raise :class:`InsecureKeyFileError` (with the fix) for a secret file others may read or swap.

    The one rule for files of secrets (private keys, the key-encryption key):
    no group or other permission bits, and an owner that is root or us, since
    any other owner could substitute a secret of their own. ``info`` comes from
    ``fstat`` on the descriptor that is then read, so nothing changes between.
    """
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureKeyFileError(
            f"{what} {path} is readable or writable by group/others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); fix with: chmod 600 {path}"
        )
    if info.st_uid not in (0, os.geteuid()):
        raise InsecureKeyFileError(
            f"{what} {path} belongs to uid {info.st_uid}, not to root or to us (uid {os.geteuid()}); "
            f"fix with: chown {os.geteuid()} {path}"
        )


def read_private_key(path: Path, *, allow_insecure: bool = False) -> PrivateKey:
    """Load a key file, refusing one that others may read or replace (unless allowed).

    The checks and the read use one open file descriptor (no symlink followed),
    so the file cannot be swapped between checking and reading. Refused: a
    group/world-accessible mode, and (unless allowed) an owner other than root
    or the user we run as, who could otherwise substitute a key of their own.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP and path.is_symlink():  # O_NOFOLLOW's way of saying "a symlink"
            raise InsecureKeyFileError(
                f"key file {path} is a symlink; refused, since whoever can change the link chooses the key: "
                f"name the file itself ({path.resolve()})"
            ) from None
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"key file {path} is not a regular file")
        if not allow_insecure:
            refuse_shared(info, path, "key file")
        if info.st_size > MAX_KEY_FILE:
            raise KeyFileError(f"key file {path} is {info.st_size} bytes: not a private key")
        data = os.read(fd, MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    try:
        return load_private_key(data)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
    except UsageError as exc:  # e.g. an RSA-512 key: say which file holds it
        raise UsageError(f"key file {path}: {exc}") from None
