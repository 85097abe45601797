"""mailseal: DKIM signing and verification (RFC 6376, RFC 8301, RFC 8463, RFC 8601).

Sign::

    key = mailseal.load_private_key(open("mail.key", "rb").read())
    field = mailseal.sign(message, key=key, domain="example.com", selector="mail")
    signed = field + message

Verify (results are values, never exceptions for bad mail)::

    report = mailseal.verify_sync(signed)
    for sig in report.signatures:
        print(sig.result, sig.domain, sig.reason, sig.detail)
        if sig.diagnosis:  # why it failed, when that can be told: code, summary, evidence
            print(sig.diagnosis.code, sig.diagnosis.summary)

FAQ. *Does a pass mean the From address is genuine?* No: it means the domain
in d= took responsibility for the signed header fields and body. Check
``aligned`` to see whether d= matches the From domain. *Why is rsa-sha1 not a
pass?* RFC 8301 forbids counting it; ``allow_rsa_sha1=True`` is the legacy
switch.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailseal.api import (
        render_authentication_results,
        sign,
        sign_many,
        signing_request,
        verify,
        verify_sync,
    )
    from mailseal.core.diagnosis import Cause, Diagnosis
    from mailseal.core.keymaterial import PrivateKey, generate_private_key, load_private_key
    from mailseal.core.options import SignOptions, VerifyOptions
    from mailseal.core.results import Alignment, DKIMResult, Reason, SignatureResult, VerificationReport
    from mailseal.core.signer import SigningRequest
    from mailseal.core.txtanswer import TxtAnswer, TxtStatus
    from mailseal.dns.cache import CachingResolver
    from mailseal.dns.interface import KeyResolver, SyncKeyResolver
    from mailseal.dns.memory import InMemoryResolver
    from mailseal.dns.resolver import DnsResolver
    from mailseal.dns.zonefile import ZoneFileResolver
    from mailseal.errors import KeyFileError, MailsealError, UsageError

# Where each public name lives. They are imported on first use (PEP 562), so
# ``import mailseal.cli.main`` or ``mailseal.errors`` does not load dnspython
# and cryptography before a command needs them.
_HOME = {
    "render_authentication_results": "mailseal.api",
    "sign": "mailseal.api",
    "sign_many": "mailseal.api",
    "signing_request": "mailseal.api",
    "verify": "mailseal.api",
    "verify_sync": "mailseal.api",
    "Cause": "mailseal.core.diagnosis",
    "Diagnosis": "mailseal.core.diagnosis",
    "PrivateKey": "mailseal.core.keymaterial",
    "generate_private_key": "mailseal.core.keymaterial",
    "load_private_key": "mailseal.core.keymaterial",
    "SignOptions": "mailseal.core.options",
    "VerifyOptions": "mailseal.core.options",
    "Alignment": "mailseal.core.results",
    "DKIMResult": "mailseal.core.results",
    "Reason": "mailseal.core.results",
    "SignatureResult": "mailseal.core.results",
    "VerificationReport": "mailseal.core.results",
    "SigningRequest": "mailseal.core.signer",
    "TxtAnswer": "mailseal.core.txtanswer",
    "TxtStatus": "mailseal.core.txtanswer",
    "CachingResolver": "mailseal.dns.cache",
    "KeyResolver": "mailseal.dns.interface",
    "SyncKeyResolver": "mailseal.dns.interface",
    "InMemoryResolver": "mailseal.dns.memory",
    "DnsResolver": "mailseal.dns.resolver",
    "ZoneFileResolver": "mailseal.dns.zonefile",
    "KeyFileError": "mailseal.errors",
    "MailsealError": "mailseal.errors",
    "UsageError": "mailseal.errors",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its home module on first use, then keep it here."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'mailseal' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOME])


__all__ = [
    "Alignment",
    "CachingResolver",
    "Cause",
    "DKIMResult",
    "Diagnosis",
    "DnsResolver",
    "InMemoryResolver",
    "KeyFileError",
    "KeyResolver",
    "MailsealError",
    "PrivateKey",
    "Reason",
    "SignOptions",
    "SignatureResult",
    "SigningRequest",
    "SyncKeyResolver",
    "TxtAnswer",
    "TxtStatus",
    "UsageError",
    "VerificationReport",
    "VerifyOptions",
    "ZoneFileResolver",
    "generate_private_key",
    "load_private_key",
    "render_authentication_results",
    "sign",
    "sign_many",
    "signing_request",
    "verify",
    "verify_sync",
]

__version__ = "0.1.0"
