"""The key-encryption key file of a signing host: read with the same checks as a private key, written 0600.

What the file holds and how sealing works is :mod:`mailseal.core.keywrap`;
this module is the I/O: the random source, and a file that must be a regular
file of ours, mode 0600 (0640 for a milter in the file's group is refused too:
one KEK opens every key in the shared database).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from mailseal.core.keywrap import KEK_BYTES, NONCE_BYTES, KekRing, KeyEncryptionKey, parse_kek_text, seal
from mailseal.errors import InsecureKeyFileError, KeyStoreError
from mailseal.keys.files import refuse_shared, write_secret_file

__all__ = ["add_kek", "drop_keks", "new_kek", "read_kek_file", "seal_new", "write_kek_file"]

MAX_KEK_FILE: Final = 4096


def new_kek() -> KeyEncryptionKey:
    """A fresh random KEK."""
    return KeyEncryptionKey(secrets.token_bytes(KEK_BYTES))


def seal_new(ring: KekRing, plaintext: bytes, *, domain: str, selector: str) -> tuple[str, bytes]:
    """Seal under the ring's current KEK with a fresh nonce: ``(kek_id, sealed)``."""
    kek = ring.current
    return kek.id, seal(kek, plaintext, domain=domain, selector=selector, nonce=os.urandom(NONCE_BYTES))


def read_kek_file(path: Path) -> KekRing:
    """Read ``path``; :class:`InsecureKeyFileError` when others may read it, :class:`KeyStoreError` otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP and path.is_symlink():  # O_NOFOLLOW's way of saying "a symlink"
            raise InsecureKeyFileError(
                f"the key-encryption key file {path} is a symlink; refused, since whoever can change "
                f"the link chooses the key: name the file itself ({path.resolve()})"
            ) from None
        raise KeyStoreError(
            f"cannot read the key-encryption key file {path}: {exc.strerror} "
            "(create one with: mailseal keys kek generate --kek-file FILE)"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyStoreError(f"the key-encryption key file {path} is not a regular file")
        refuse_shared(info, path, "the key-encryption key file")
        data = os.read(fd, MAX_KEK_FILE + 1)
    except OSError as exc:
        raise KeyStoreError(f"cannot read the key-encryption key file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEK_FILE:
        raise KeyStoreError(f"the key-encryption key file {path} is larger than {MAX_KEK_FILE} bytes")
    try:
        return parse_kek_text(data.decode("ascii"))
    except UnicodeDecodeError:
        raise KeyStoreError(f"the key-encryption key file {path} is not text") from None
    except KeyStoreError as exc:
        raise KeyStoreError(f"the key-encryption key file {path}: {exc}") from None


def write_kek_file(path: Path, ring: KekRing) -> None:
    """Write ``ring`` to ``path`` atomically, mode 0600 from the start (a temp file renamed in place)."""
    text = (
        "# mailseal key-encryption keys (docs/keys.md, 'Fleet'): the first seals, every one opens.\n"
        + "".join(f"{k.to_line()}\n" for k in ring.keys)
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_secret_file(path, text.encode("ascii"))
    except OSError as exc:
        raise KeyStoreError(f"cannot write {path}: {exc.strerror}") from None


def add_kek(path: Path, kek: KeyEncryptionKey | None = None) -> KekRing:
    """Put a new KEK (``kek`` or a fresh one) first in ``path``, creating the file if needed."""
    chosen = kek or new_kek()
    try:
        old = read_kek_file(path).keys
    except KeyStoreError:
        if path.exists():
            raise
        old = ()
    ring = KekRing((chosen, *(k for k in old if k.id != chosen.id)))
    write_kek_file(path, ring)
    return ring


def drop_keks(path: Path, keep: int = 1) -> KekRing:
    """Keep only the first ``keep`` KEKs of ``path`` (after every row was re-sealed with the first)."""
    ring = read_kek_file(path)
    kept = KekRing(ring.keys[:keep])
    write_kek_file(path, kept)
    return kept
