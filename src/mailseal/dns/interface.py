"""What the verifier needs from DNS: a TXT lookup that answers with a value.

A resolver never raises for DNS trouble; timeouts, SERVFAIL and NXDOMAIN come
back as :class:`~mailseal.core.txtanswer.TxtAnswer` values.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from mailseal.core.txtanswer import TxtAnswer, TxtStatus

__all__ = ["KeyResolver", "SyncKeyResolver", "TxtAnswer", "TxtStatus"]


@runtime_checkable
class KeyResolver(Protocol):
    """Asynchronous TXT lookups (used by :func:`mailseal.verify` and the milter)."""

    async def lookup_txt(self, name: str) -> TxtAnswer:
        """Return the TXT records at ``name`` (an absolute name, no trailing dot)."""
        ...


@runtime_checkable
class SyncKeyResolver(Protocol):
    """Blocking TXT lookups (used by :func:`mailseal.verify_sync`)."""

    def lookup_txt_sync(self, name: str) -> TxtAnswer:
        """Return the TXT records at ``name`` (an absolute name, no trailing dot)."""
        ...
