"""Static checks of the public API's types (run by mypy, not collected by pytest)."""

from __future__ import annotations

from typing import assert_type

import mailseal
from mailseal import DKIMResult, PrivateKey, Reason, SignatureResult, VerificationReport


def check(message: bytes, key: PrivateKey, resolver: mailseal.SyncKeyResolver) -> None:
    assert_type(mailseal.sign(message, key=key, domain="example.com", selector="s"), bytes)
    assert_type(mailseal.load_private_key(b""), PrivateKey)
    report = mailseal.verify_sync(message, resolver=resolver)
    assert_type(report, VerificationReport)
    assert_type(report.signatures, tuple[SignatureResult, ...])
    first = report.signatures[0]
    assert_type(first.result, DKIMResult)
    assert_type(first.reason, Reason | None)
    assert_type(first.aligned, bool | None)
    assert_type(first.key_bits, int | None)
    assert_type(mailseal.ZoneFileResolver("zone"), mailseal.ZoneFileResolver)


async def check_async(message: bytes, resolver: mailseal.KeyResolver) -> None:
    assert_type(await mailseal.verify(message, resolver=resolver), VerificationReport)
