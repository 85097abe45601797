"""Exceptions for misuse of mailseal: bad options, configuration and key files.

Nothing here is raised for the content of a message, a DNS answer or a key
record; those become result values (see :mod:`mailseal.core.results`).
"""

from __future__ import annotations


class MailsealError(Exception):
    """Root of every exception mailseal raises on purpose."""

    temporary: bool = False
    """Nothing is wrong with what was asked: the same call may work later (CLI exit 75)."""


class UsageError(MailsealError, ValueError):
    """The caller passed arguments or options that cannot work (CLI exit 2)."""


class ConfigError(MailsealError):
    """A configuration file is invalid; carries the file and line when known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{message}")


class KeyFileError(MailsealError):
    """A private key file cannot be read or parsed; the message names the path."""


class InsecureKeyFileError(KeyFileError):
    """A private key file is readable by group or others; the message gives the fix."""


class KeyStoreError(MailsealError):
    """The key store cannot complete an operation."""


class PublishError(MailsealError):
    """A DNS UPDATE was refused or could not be sent."""
