"""Drive the peer DKIM implementations as black boxes, for interop tests.

Three peers, each behind the same small vocabulary:

* dkimpy (``import dkim``; Ed25519 needs PyNaCl) -- in process.
* OpenDKIM (Debian ``opendkim``) -- ``opendkim -x CONF -t FILE`` test mode, keys
  resolved offline through ``TestDNSData``; signing through ``KeyTable`` /
  ``SigningTable`` in ``Mode s``.
* Mail::DKIM (Debian ``libmail-dkim-perl``) -- our own Perl scripts next to this
  file, ``mail_dkim_verify.pl`` (fake resolver, no network) and ``mail_dkim_sign.pl``.

Messages are ``bytes`` with CRLF line endings, exactly as on the wire; every
``*_sign`` function returns the ``DKIM-Signature`` header field (CRLF folded, CRLF
terminated) to prepend to the message.  Every ``*_verify`` function returns one
verdict per ``DKIM-Signature`` field, in header order (top first), using the RFC
8601 result words: ``pass``, ``fail``, ``permerror``, ``temperror`` (plus
``unknown`` where a peer gave no result for that signature).  The
``*_verify_detailed`` variants also return each peer's own words.

Nothing here touches the network: DNS answers come from a ``DnsRecords`` mapping
of TXT owner name (``sel._domainkey.example.com``, case-insensitive, optional
trailing dot) to record text.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

__all__ = [
    "Algorithm",
    "DnsRecords",
    "PeerError",
    "PeerUnsupported",
    "PeerVerdict",
    "dkimpy_sign",
    "dkimpy_supports_ed25519",
    "dkimpy_verify",
    "dkimpy_verify_detailed",
    "have_dkimpy",
    "have_mail_dkim",
    "have_opendkim",
    "mail_dkim_sign",
    "mail_dkim_supports_ed25519",
    "mail_dkim_verify",
    "mail_dkim_verify_detailed",
    "mail_dkim_version",
    "opendkim_sign",
    "opendkim_supports_ed25519",
    "opendkim_verify",
    "opendkim_verify_detailed",
    "opendkim_version",
]

DnsRecords = Mapping[str, str]
"""TXT owner name (``sel._domainkey.example.com``) -> record text (``v=DKIM1; k=rsa; p=...``)."""

Algorithm = Literal["rsa-sha256", "ed25519-sha256", "rsa-sha1"]

_HERE = Path(__file__).resolve().parent
_MAIL_DKIM_VERIFY = _HERE / "mail_dkim_verify.pl"
_MAIL_DKIM_SIGN = _HERE / "mail_dkim_sign.pl"
_TIMEOUT = 60.0


class PeerError(RuntimeError):
    """A peer tool could not be run, or failed in a way that gives no verdict."""


class PeerUnsupported(PeerError):
    """The peer (in the installed version) cannot do what was asked, e.g. Ed25519."""


@dataclass(frozen=True)
class PeerVerdict:
    """One signature's outcome as a peer reported it."""

    result: str
    """Normalised RFC 8601 word: pass, fail, permerror, temperror, neutral, unknown."""
    detail: str
    """The peer's own words (reason text, exception message, ...)."""


# --------------------------------------------------------------------------- shared helpers


def _dns_key(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _normalise_dns(dns: DnsRecords) -> dict[str, str]:
    return {_dns_key(name): text for name, text in dns.items()}


def _split_canonicalization(canonicalization: str) -> tuple[str, str]:
    header, _, body = canonicalization.partition("/")
    body = body or "simple"
    for part in (header, body):
        if part not in ("simple", "relaxed"):
            raise ValueError(f"bad canonicalization {canonicalization!r}")
    return header, body


PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def _load_private_key(private_key_pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return key


def _key_for(algorithm: Algorithm, private_key_pem: bytes) -> PrivateKey:
    key = _load_private_key(private_key_pem)
    wants_ed = algorithm == "ed25519-sha256"
    if wants_ed != isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{algorithm} does not match a {type(key).__name__}")
    return key


def _pkcs8_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pkcs1_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _ed25519_seed_b64(key: ed25519.Ed25519PrivateKey) -> bytes:
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


@contextmanager
def _scratch(workdir: Path | None, prefix: str) -> Iterator[Path]:
    """A private directory for tool files: fresh under *workdir* (kept) or a temp dir (removed)."""
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        yield Path(tempfile.mkdtemp(prefix=prefix, dir=workdir))
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def _run(argv: Sequence[str], *, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(list(argv), input=stdin, capture_output=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerError(f"could not run {argv[0]}: {exc}") from exc


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _unfold(value: bytes) -> bytes:
    return re.sub(rb"\r?\n(?=[ \t])", b"", value)


def _dkim_signature_fields(message: bytes) -> list[dict[str, str]]:
    """Tags of each DKIM-Signature field of *message*, top first (enough to line up peer output)."""
    end = re.search(rb"\r?\n\r?\n", message)
    head = message[: end.start()] if end else message
    fields: list[dict[str, str]] = []
    for raw in re.split(rb"\r?\n(?![ \t])", head):
        name, colon, value = raw.partition(b":")
        if not colon or name.strip().lower() != b"dkim-signature":
            continue
        tags: dict[str, str] = {}
        for item in _text(_unfold(value)).split(";"):
            tag, eq, tag_value = item.partition("=")
            if eq:
                tags[tag.strip()] = re.sub(r"\s+", "", tag_value)
        fields.append(tags)
    return fields


# --------------------------------------------------------------------------- dkimpy


def have_dkimpy() -> bool:
    """dkimpy is importable."""
    return importlib.util.find_spec("dkim") is not None


def dkimpy_supports_ed25519() -> bool:
    """dkimpy can sign/verify Ed25519 (it needs PyNaCl for that)."""
    return have_dkimpy() and importlib.util.find_spec("nacl") is not None


class _CaptureLogger:
    """Stands in for the logging.Logger dkimpy writes to; keeps the error lines."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def _format(self, msg: object, args: tuple[object, ...]) -> str:
        text = str(msg)
        if args:
            try:
                text = text % args
            except (TypeError, ValueError):
                text = f"{text} {args!r}"
        return text

    def debug(self, msg: object, *args: object, **kwargs: object) -> None:
        pass

    def info(self, msg: object, *args: object, **kwargs: object) -> None:
        pass

    def warning(self, msg: object, *args: object, **kwargs: object) -> None:
        self.errors.append(self._format(msg, args))

    def error(self, msg: object, *args: object, **kwargs: object) -> None:
        self.errors.append(self._format(msg, args))

    warn = warning
    exception = error
    critical = error


def _dkimpy_module() -> Any:
    """The untyped dkim module (dkimpy ships no type information)."""
    import dkim

    return dkim


def _dkimpy_dnsfunc(dns: DnsRecords) -> Callable[..., bytes | None]:
    records = _normalise_dns(dns)

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        # dkimpy asks for b"sel._domainkey.example.com." (bytes, trailing dot).
        key = _dns_key(name.decode("ascii", errors="replace") if isinstance(name, bytes) else name)
        text = records.get(key)
        return None if text is None else text.encode("utf-8")

    return dnsfunc


def dkimpy_verify_detailed(message: bytes, dns: DnsRecords) -> list[PeerVerdict]:
    """dkimpy's verdict on each DKIM-Signature field of *message*, top first.

    ``DKIM.verify()`` only answers True/False or raises, so the result word is
    derived: True -> pass; ``body hash mismatch`` or a plain False -> fail; a key
    that is missing/unusable (dkimpy logs it and returns False) or any other
    DKIMException -> permerror; DnsTimeoutError -> temperror.
    """
    dkim = _dkimpy_module()
    dnsfunc = _dkimpy_dnsfunc(dns)
    count = len(_dkim_signature_fields(message))
    verdicts: list[PeerVerdict] = []
    for idx in range(count):
        logger = _CaptureLogger()
        verifier = dkim.DKIM(message, logger=logger)
        try:
            ok = bool(verifier.verify(idx=idx, dnsfunc=dnsfunc))
        except dkim.DnsTimeoutError as exc:
            verdicts.append(PeerVerdict("temperror", f"{type(exc).__name__}: {exc}"))
            continue
        except dkim.ValidationError as exc:
            word = "fail" if "body hash mismatch" in str(exc) else "permerror"
            verdicts.append(PeerVerdict(word, f"{type(exc).__name__}: {exc}"))
            continue
        except dkim.DKIMException as exc:
            verdicts.append(PeerVerdict("permerror", f"{type(exc).__name__}: {exc}"))
            continue
        if ok:
            verdicts.append(PeerVerdict("pass", "verify() returned True"))
        elif logger.errors:
            word = "temperror" if any("DnsTimeoutError" in e for e in logger.errors) else "permerror"
            verdicts.append(PeerVerdict(word, "; ".join(logger.errors)))
        else:
            verdicts.append(PeerVerdict("fail", "verify() returned False (signature did not verify)"))
    return verdicts


def dkimpy_verify(message: bytes, dns: DnsRecords) -> list[str]:
    """dkimpy's result word for each DKIM-Signature field, top first."""
    return [v.result for v in dkimpy_verify_detailed(message, dns)]


def dkimpy_sign(
    message: bytes,
    *,
    selector: str,
    domain: str,
    private_key_pem: bytes,
    algorithm: Algorithm = "rsa-sha256",
    canonicalization: str = "relaxed/relaxed",
    headers: Sequence[str] | None = None,
    length: bool = False,
    identity: str | None = None,
) -> bytes:
    """Sign with dkimpy; returns the DKIM-Signature field (CRLF-terminated) to prepend.

    *private_key_pem* is any unencrypted PEM private key (PKCS#8 or PKCS#1);
    it is converted to what dkimpy wants (PKCS#1 PEM for RSA, base64 seed for
    Ed25519).  *headers* is the exact h= list (repeats over-sign); None lets
    dkimpy choose.  dkimpy always adds i= (default ``@domain``), q= and t=.
    """
    key = _key_for(algorithm, private_key_pem)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        if not dkimpy_supports_ed25519():
            raise PeerUnsupported("dkimpy needs PyNaCl for ed25519-sha256 (pip install pynacl)")
        key_data = _ed25519_seed_b64(key)
    else:
        key_data = _pkcs1_pem(key)
    header_c, body_c = _split_canonicalization(canonicalization)
    dkim = _dkimpy_module()
    try:
        signature = dkim.sign(
            message,
            selector.encode("ascii"),
            domain.encode("ascii"),
            key_data,
            identity=identity.encode("ascii") if identity is not None else None,
            canonicalize=(header_c.encode("ascii"), body_c.encode("ascii")),
            signature_algorithm=algorithm.encode("ascii"),
            include_headers=[h.encode("ascii") for h in headers] if headers is not None else None,
            length=length,
            logger=_CaptureLogger(),
        )
    except dkim.DKIMException as exc:
        raise PeerError(f"dkimpy refused to sign: {type(exc).__name__}: {exc}") from exc
    if not isinstance(signature, bytes):
        raise PeerError(f"dkimpy returned {type(signature).__name__}, not bytes")
    return signature


# --------------------------------------------------------------------------- OpenDKIM


@functools.cache
def _opendkim_binary() -> str | None:
    found = shutil.which("opendkim")
    if found is None and os.access("/usr/sbin/opendkim", os.X_OK):
        found = "/usr/sbin/opendkim"
    return found


@functools.cache
def _opendkim_features() -> str:
    binary = _opendkim_binary()
    if binary is None:
        return ""
    try:
        proc = subprocess.run([binary, "-V"], capture_output=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return _text(proc.stdout + proc.stderr) if proc.returncode == 0 else ""


def have_opendkim() -> bool:
    """The ``opendkim`` binary (Debian package ``opendkim``) runs."""
    return "OpenDKIM" in _opendkim_features()


def opendkim_version() -> str:
    """E.g. ``2.11.0`` (empty if OpenDKIM is missing)."""
    match = re.search(r"OpenDKIM Filter v(\S+)", _opendkim_features())
    return match.group(1) if match else ""


def opendkim_supports_ed25519() -> bool:
    """``opendkim -V`` lists ed25519-sha256 among its signing algorithms."""
    return "ed25519-sha256" in _opendkim_features()


def _opendkim_binary_or_raise() -> str:
    binary = _opendkim_binary()
    if binary is None or not have_opendkim():
        raise PeerError("opendkim is not installed (Debian package 'opendkim')")
    return binary


_OPENDKIM_VERIFY_CONF = """\
# written by tests/support/peers.py: verify only, offline
Syslog no
Mode v
TestDNSData file:{dns}
MaximumSignaturesToVerify 1000
AlwaysAddARHeader yes
AuthservID mailseal.test
On-Default accept
On-BadSignature accept
On-DNSError accept
On-InternalError accept
On-KeyNotFound accept
On-NoSignature accept
On-Security accept
On-SignatureError accept
"""

_OPENDKIM_SIGN_CONF = """\
# written by tests/support/peers.py: sign only, offline
Syslog no
Mode s
KeyTable file:{keytable}
SigningTable refile:{signingtable}
RequireSafeKeys no
SignatureAlgorithm {algorithm}
Canonicalization {canonicalization}
"""

_INSHEADER = re.compile(r"^### INSHEADER: idx=\d+ hname='([^']*)' hvalue='(.*?)'$", re.MULTILINE | re.DOTALL)
_SUMMARY = re.compile(
    r"^opendkim: .*?: (message not signed|verification \((.*?)\) (succeeded|failed: (.*)))$"
)


def _inserted_headers(out: str) -> list[tuple[str, str]]:
    """(name, value) of each ``### INSHEADER`` line ``opendkim -t -vv`` printed."""
    return [(str(m.group(1)), str(m.group(2))) for m in _INSHEADER.finditer(out)]


def _opendkim_dns_file(dns: DnsRecords) -> str:
    lines = []
    for name, text in _normalise_dns(dns).items():
        bad = set(text) & {"\n", "\r", "#"}
        if bad or not name or re.search(r"\s", name):
            raise ValueError(f"OpenDKIM's TestDNSData flat file cannot hold {name!r} -> {text!r}")
        lines.append(f"{name} {text}\n")
    return "".join(lines)


def _opendkim_ar_entries(hvalue: str) -> list[tuple[str, str, dict[str, str]]]:
    """(result, rest-of-entry, header.* properties) for each ``dkim=`` in an A-R value."""
    entries = []
    for part in hvalue.split(";")[1:]:
        match = re.match(r"\s*dkim=([A-Za-z]+)(.*)\Z", part, re.DOTALL)
        if match is None:
            continue
        rest = " ".join(match.group(2).split())
        props = dict(re.findall(r"header\.([a-z]+)=(\S+)", rest))
        entries.append((match.group(1).lower(), rest, props))
    return entries


def _summary_word(reason: str) -> str:
    if reason == "key DNS query failed":
        return "temperror"
    if reason in ("signature verification failed", "body hash mismatch"):
        return "fail"
    return "permerror"


def opendkim_verify_detailed(
    message: bytes, dns: DnsRecords, workdir: Path | None = None
) -> list[PeerVerdict]:
    """OpenDKIM's verdict on each DKIM-Signature field of *message*, top first.

    Runs ``opendkim -x CONF -t FILE -vv`` and reads the Authentication-Results
    field it would add (one ``dkim=`` per signature, in header order).  OpenDKIM
    omits that field when its *deciding* signature hit a key-retrieval error;
    then only the one-line summary is available, which names one signature:
    that one gets the verdict and the others ``unknown``.

    Raises PeerError when OpenDKIM stops without a verdict -- notably exit 70
    when a DKIM-Signature field is syntactically unusable (e.g. no b= tag):
    test mode then aborts at end-of-header.
    """
    binary = _opendkim_binary_or_raise()
    signatures = _dkim_signature_fields(message)
    with _scratch(workdir, "opendkim-verify-") as tmp:
        dns_path = tmp / "dns.txt"
        dns_path.write_text(_opendkim_dns_file(dns), encoding="utf-8")
        conf_path = tmp / "opendkim.conf"
        conf_path.write_text(_OPENDKIM_VERIFY_CONF.format(dns=dns_path), encoding="utf-8")
        msg_path = tmp / "message.eml"
        msg_path.write_bytes(message)
        proc = _run([binary, "-x", str(conf_path), "-t", str(msg_path), "-vv"])
    out = _text(proc.stdout)
    if proc.returncode != 0:
        raise PeerError(
            f"opendkim -t exited {proc.returncode} without a verdict "
            f"(70: processing stopped early, e.g. an unparseable DKIM-Signature; 78: config)\n"
            f"stdout: {out}\nstderr: {_text(proc.stderr)[-2000:]}"
        )

    for hname, hvalue in _inserted_headers(out):
        if hname.lower() != "authentication-results":
            continue
        entries = _opendkim_ar_entries(hvalue)
        if len(entries) == len(signatures):
            return [PeerVerdict(word, rest) for word, rest, _ in entries]
        # Fewer entries than signatures: line them up by s=, d= and the b= prefix.
        verdicts = [PeerVerdict("unknown", "not reported by opendkim")] * len(signatures)
        taken: set[int] = set()
        for word, rest, props in entries:
            for i, tags in enumerate(signatures):
                if i in taken:
                    continue
                if (
                    props.get("s") == tags.get("s")
                    and props.get("d", "").lower() == tags.get("d", "").lower()
                    and tags.get("b", "").startswith(props.get("b", ""))
                ):
                    verdicts[i] = PeerVerdict(word, rest)
                    taken.add(i)
                    break
        return verdicts

    summary = next((m for m in map(_SUMMARY.match, out.splitlines()) if m is not None), None)
    if summary is None:
        raise PeerError(f"unrecognised opendkim output:\n{out}\nstderr: {_text(proc.stderr)[-2000:]}")
    if summary.group(1) == "message not signed":
        return [PeerVerdict("unknown", "opendkim: message not signed")] * len(signatures)
    props = dict(re.findall(r"([sd])=([^,\s]+)", summary.group(2)))
    word = "pass" if summary.group(3) == "succeeded" else _summary_word(summary.group(4).strip())
    verdicts = [PeerVerdict("unknown", "not reported by opendkim")] * len(signatures)
    for i, tags in enumerate(signatures):
        if tags.get("s") == props.get("s") and tags.get("d", "").lower() == props.get("d", "").lower():
            verdicts[i] = PeerVerdict(word, summary.group(0))
            break
    return verdicts


def opendkim_verify(message: bytes, dns: DnsRecords, workdir: Path | None = None) -> list[str]:
    """OpenDKIM's result word for each DKIM-Signature field, top first (see the detailed variant)."""
    return [v.result for v in opendkim_verify_detailed(message, dns, workdir)]


def opendkim_sign(
    message: bytes,
    *,
    selector: str,
    domain: str,
    private_key_pem: bytes,
    algorithm: Algorithm = "rsa-sha256",
    canonicalization: str = "relaxed/relaxed",
    sign_headers: Sequence[str] | None = None,
    oversign_headers: Sequence[str] | None = None,
    workdir: Path | None = None,
    diagnostics: bool = False,
) -> bytes:
    """Sign with ``opendkim -t`` in ``Mode s``; returns the DKIM-Signature field to prepend.

    d= and s= come from a KeyTable entry, chosen for every sender by a
    ``refile:`` SigningTable ``*`` line, so d= need not match From.
    *sign_headers* is OpenDKIM's SignHeaders set (it signs the present ones, in
    message order, and always From); *oversign_headers* its OversignHeaders.
    OpenDKIM adds t=, never i= here; *diagnostics* (its ``Diagnostics`` setting)
    adds z= with copies of the signed fields.  The value OpenDKIM prints is folded with
    bare LF; it is re-folded with CRLF, which is what OpenDKIM signed.
    """
    binary = _opendkim_binary_or_raise()
    if algorithm == "ed25519-sha256" and not opendkim_supports_ed25519():
        raise PeerUnsupported("this opendkim cannot sign ed25519-sha256")
    key = _key_for(algorithm, private_key_pem)
    header_c, body_c = _split_canonicalization(canonicalization)
    for item in (selector, domain, *(sign_headers or ()), *(oversign_headers or ())):
        if not re.fullmatch(r"[A-Za-z0-9._-]+", item):
            raise ValueError(f"unsafe value for an OpenDKIM table: {item!r}")
    with _scratch(workdir, "opendkim-sign-") as tmp:
        key_path = tmp / "signing.key"
        _write_private(key_path, _pkcs8_pem(key))
        keytable = tmp / "keytable"
        keytable.write_text(f"mailseal-key {domain}:{selector}:{key_path}\n", encoding="utf-8")
        signingtable = tmp / "signingtable"
        signingtable.write_text("* mailseal-key\n", encoding="utf-8")
        conf = _OPENDKIM_SIGN_CONF.format(
            keytable=keytable,
            signingtable=signingtable,
            algorithm=algorithm,
            canonicalization=f"{header_c}/{body_c}",
        )
        if sign_headers is not None:
            conf += f"SignHeaders {','.join(sign_headers)}\n"
        if oversign_headers is not None:
            conf += f"OversignHeaders {','.join(oversign_headers)}\n"
        if diagnostics:
            conf += "Diagnostics yes\n"
        conf_path = tmp / "opendkim.conf"
        conf_path.write_text(conf, encoding="utf-8")
        msg_path = tmp / "message.eml"
        msg_path.write_bytes(message)
        proc = _run([binary, "-x", str(conf_path), "-t", str(msg_path), "-vv"])
    out = _text(proc.stdout)
    if proc.returncode != 0:
        raise PeerError(f"opendkim -t (sign) exited {proc.returncode}\n{out}\n{_text(proc.stderr)[-2000:]}")
    values = [v for n, v in _inserted_headers(out) if n.lower() == "dkim-signature"]
    if len(values) != 1:
        raise PeerError(f"expected one DKIM-Signature from opendkim, got {len(values)}:\n{out}")
    value = values[0].replace("\r\n", "\n").replace("\n", "\r\n")
    return b"DKIM-Signature: " + value.encode("utf-8") + b"\r\n"


# --------------------------------------------------------------------------- Mail::DKIM


@functools.cache
def _mail_dkim_probe() -> tuple[str, bool] | None:
    """(Mail::DKIM version, Ed25519 support) or None if Perl or a module is missing."""
    perl = shutil.which("perl")
    if perl is None:
        return None
    code = (
        "use Mail::DKIM; use Mail::DKIM::Verifier; use Mail::DKIM::Signer; use Mail::DKIM::Signature;"
        " use Net::DNS; use JSON::PP; use Crypt::OpenSSL::RSA;"
        " print $Mail::DKIM::VERSION, ' ',"
        " (Mail::DKIM::Signature->get_algorithm_class('ed25519-sha256') ? 1 : 0), qq(\\n);"
    )
    try:
        proc = subprocess.run([perl, "-e", code], capture_output=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = _text(proc.stdout).split()
    if proc.returncode != 0 or len(parts) != 2:
        return None
    return parts[0], parts[1] == "1"


def have_mail_dkim() -> bool:
    """Perl with Mail::DKIM, Net::DNS, JSON::PP and Crypt::OpenSSL::RSA (Debian ``libmail-dkim-perl``)."""
    return _mail_dkim_probe() is not None


def mail_dkim_version() -> str:
    """E.g. ``1.20230212`` (empty if Mail::DKIM is missing)."""
    probe = _mail_dkim_probe()
    return probe[0] if probe else ""


def mail_dkim_supports_ed25519() -> bool:
    """Mail::DKIM knows ed25519-sha256 (Debian 12's 1.20230212 does not)."""
    probe = _mail_dkim_probe()
    return bool(probe and probe[1])


_MAIL_DKIM_WORDS = {"pass": "pass", "fail": "fail", "invalid": "permerror", "temperror": "temperror"}


def mail_dkim_verify_detailed(message: bytes, dns: DnsRecords) -> list[PeerVerdict]:
    """Mail::DKIM::Verifier's verdict on each DKIM-Signature field, top first.

    Mail::DKIM says pass / fail / invalid / temperror per signature; invalid
    (bad signature or key, unsupported algorithm such as Ed25519 in 1.20230212,
    missing key) is reported as permerror.  ``detail`` is ``result_detail``,
    e.g. ``fail (body has been altered)``.  A field Mail::DKIM cannot parse at
    all still gets an entry (invalid -> permerror).
    """
    if not have_mail_dkim():
        raise PeerError("Mail::DKIM is not available (Debian package 'libmail-dkim-perl')")
    with tempfile.TemporaryDirectory(prefix="mail-dkim-") as tmp:
        dns_path = Path(tmp) / "dns.json"
        dns_path.write_text(json.dumps(_normalise_dns(dns)), encoding="utf-8")
        proc = _run(["perl", str(_MAIL_DKIM_VERIFY), str(dns_path)], stdin=message)
    if proc.returncode != 0:
        raise PeerError(f"mail_dkim_verify.pl exited {proc.returncode}: {_text(proc.stderr)[-2000:]}")
    try:
        report = json.loads(proc.stdout)
        return [
            PeerVerdict(_MAIL_DKIM_WORDS.get(str(s["result"]), str(s["result"])), str(s["detail"]))
            for s in report["signatures"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise PeerError(f"unreadable mail_dkim_verify.pl output {proc.stdout!r}") from exc


def mail_dkim_verify(message: bytes, dns: DnsRecords) -> list[str]:
    """Mail::DKIM's result word for each DKIM-Signature field, top first."""
    return [v.result for v in mail_dkim_verify_detailed(message, dns)]


def mail_dkim_sign(
    message: bytes,
    *,
    selector: str,
    domain: str,
    private_key_pem: bytes,
    algorithm: Algorithm = "rsa-sha256",
    canonicalization: str = "relaxed/relaxed",
    headers: Sequence[str] | None = None,
    identity: str | None = None,
) -> bytes:
    """Sign with Mail::DKIM::Signer; returns the DKIM-Signature field (CRLF-terminated).

    *headers* is the exact h= list (repeats over-sign); None uses Mail::DKIM's
    default set (the RFC's recommended fields that are present).  Mail::DKIM
    writes the field unfolded and adds no t= / i= unless asked (*identity*).
    Raises PeerUnsupported for Ed25519 where Mail::DKIM lacks it.
    """
    if not have_mail_dkim():
        raise PeerError("Mail::DKIM is not available (Debian package 'libmail-dkim-perl')")
    if algorithm == "ed25519-sha256" and not mail_dkim_supports_ed25519():
        raise PeerUnsupported(f"Mail::DKIM {mail_dkim_version()} cannot sign ed25519-sha256")
    key = _key_for(algorithm, private_key_pem)
    header_c, body_c = _split_canonicalization(canonicalization)
    with tempfile.TemporaryDirectory(prefix="mail-dkim-") as tmp:
        key_path = Path(tmp) / "signing.key"
        key_pem = _pkcs1_pem(key) if isinstance(key, rsa.RSAPrivateKey) else _pkcs8_pem(key)
        _write_private(key_path, key_pem)
        argv = [
            "perl",
            str(_MAIL_DKIM_SIGN),
            "--key",
            str(key_path),
            "--selector",
            selector,
            "--domain",
            domain,
            "--algorithm",
            algorithm,
            "--method",
            f"{header_c}/{body_c}",
        ]
        if headers is not None:
            argv += ["--headers", ":".join(headers)]
        if identity is not None:
            argv += ["--identity", identity]
        proc = _run(argv, stdin=message)
    if proc.returncode != 0:
        raise PeerError(f"mail_dkim_sign.pl exited {proc.returncode}: {_text(proc.stderr)[-2000:]}")
    header: bytes = proc.stdout
    if not header.startswith(b"DKIM-Signature:") or not header.endswith(b"\r\n"):
        raise PeerError(f"unexpected mail_dkim_sign.pl output {header!r}")
    return header
