"""dkim-quoted-printable (RFC 6376 section 2.11), used by i= and z=."""

from __future__ import annotations

import re

_QP = re.compile(r"=([0-9A-Fa-f]{2})")


def decode_dkim_qp(value: str) -> str:
    """Decode ``=XX`` escapes; whitespace is ignored (it may only be FWS)."""
    value = "".join(value.split())
    if "=" not in value:
        return value
    raw = _QP.sub(lambda m: chr(int(m.group(1), 16)), value)
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def encode_dkim_qp(value: str) -> str:
    """Encode for i=: everything outside VALCHAR minus ';' and '=' becomes ``=XX``."""
    out = []
    for byte in value.encode("utf-8"):
        if 0x21 <= byte <= 0x7E and byte not in (0x3B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"={byte:02X}")
    return "".join(out)
