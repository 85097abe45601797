"""Private key files: written 0600 atomically, refused when others can read them."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from mailseal.core.keymaterial import PrivateKey, load_private_key
from mailseal.errors import InsecureKeyFileError, KeyFileError

KEY_FILE_MODE = 0o600


def write_private_key(path: Path, key: PrivateKey, *, overwrite: bool = False) -> None:
    """Write ``key`` as PKCS#8 PEM with mode 0600, never briefly readable by others.

    The file is created under a temporary name with O_EXCL and mode 0600, then
    renamed into place, so a crash leaves either the old file or the new one.
    """
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a private key")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(key.to_pem())
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, KEY_FILE_MODE)  # in case the umask or an ACL widened it
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def read_private_key(path: Path, *, allow_insecure: bool = False) -> PrivateKey:
    """Load a key file, refusing one that group or others may read (unless allowed)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise KeyFileError(f"key file {path} is not a regular file")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) and not allow_insecure:
        raise InsecureKeyFileError(
            f"key file {path} is readable or writable by group/others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"fix with: chmod 600 {path}"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        return load_private_key(data)
    except KeyFileError as exc:
        raise KeyFileError(f"{path}: {exc}") from None
