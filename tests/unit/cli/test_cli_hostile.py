"""The command line facing hostile input: no traceback, no terminal escapes, plain key-file errors (issue 8 items 1, 10)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import mailseal
from mailseal import PrivateKey
from mailseal.cli.main import main
from mailseal.keys.files import write_private_key
from support.clock import FIXED_NOW
from support.messages import SAMPLE


def _zone(tmp_path: Path, key: PrivateKey) -> Path:
    zone = tmp_path / "example.com.zone"
    zone.write_text(
        "$ORIGIN example.com.\n$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 300\n"
        f'sel._domainkey IN TXT "v=DKIM1; k=ed25519; p={key.public_key_b64()}"\n'
    )
    return zone


def _verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["verify", "--now", str(FIXED_NOW), *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_control_characters_in_header_names_and_values_are_escaped(
    tmp_path: Path, ed_key: PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    signed = mailseal.sign(SAMPLE, key=ed_key, domain="example.com", selector="sel", now=FIXED_NOW) + SAMPLE
    hostile = b"X-\x1b]0;owned\x07Title: a\r\nX-\x9b31m: b\r\n" + signed
    message = tmp_path / "m.eml"
    message.write_bytes(hostile)
    status, out, _ = _verify(capsys, "--dns-zone", str(_zone(tmp_path, ed_key)), str(message))
    assert status == 0
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "x-\\x1b]0;owned\\x07title" in out  # shown, escaped: the reader sees what was there


def test_nested_comment_from_is_a_result_not_a_traceback(
    tmp_path: Path, ed_key: PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(
        b"From: " + b"(" * 500 + b")" * 500 + b" alice@bank.example\r\n" + SAMPLE.split(b"\r\n", 1)[1]
    )
    status, out, err = _verify(capsys, "--dns-zone", str(_zone(tmp_path, ed_key)), str(message))
    assert "Traceback" not in err and "RecursionError" not in err
    assert status == 1  # no signature: a result, not a crash
    assert "the author cannot be told" in out
    assert len(out.splitlines()) < 20


def test_a_symlinked_key_file_is_refused_as_a_symlink(
    tmp_path: Path, ed_key: PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    real = tmp_path / "real.key"
    write_private_key(real, ed_key)
    link = tmp_path / "link.key"
    link.symlink_to(real)
    message = tmp_path / "m.eml"
    message.write_bytes(SAMPLE)
    status = main(["sign", "--key", str(link), "--domain", "example.com", "--selector", "sel", str(message)])
    _, err = capsys.readouterr()
    assert status != 0
    assert f"{link} is a symlink" in err
    assert "Too many levels" not in err and "Traceback" not in err


def _probable_prime(bits: int, rng: random.Random) -> int:
    while True:
        candidate = rng.getrandbits(bits) | (1 << (bits - 1)) | 1
        if all(pow(a, candidate - 1, candidate) == 1 for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)):
            return candidate


def _rsa512_pem() -> bytes:
    """A 512-bit RSA private key; cryptography will not generate one, so build it from two primes."""
    rng = random.Random(512)
    e = 65537
    while True:
        p, q = _probable_prime(256, rng), _probable_prime(256, rng)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e and (p * q).bit_length() == 512:
            break
    d = pow(e, -1, phi)
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(e, p * q)
    )
    key = numbers.private_key(unsafe_skip_rsa_key_validation=True)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_the_rsa512_error_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weak = tmp_path / "weak.key"
    weak.write_bytes(_rsa512_pem())
    weak.chmod(0o600)
    message = tmp_path / "m.eml"
    message.write_bytes(SAMPLE)
    status = main(["sign", "--key", str(weak), "--domain", "example.com", "--selector", "sel", str(message)])
    _, err = capsys.readouterr()
    assert status != 0
    assert str(weak) in err and "512 bits" in err
    assert err.count("\n") == 1
