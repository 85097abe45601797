"""Mail::DKIM's verifier corpus, judged as an RFC 6376 + RFC 8301 + RFC 8463 verifier.

Mail::DKIM's own verdicts are lenient (pre-standard drafts, rsa-sha1, 512-bit
keys, DomainKeys). The table below is what the RFCs require; where we differ
from Mail::DKIM the comment says why. A second table re-runs the corpus with
the legacy switches on (rsa-sha1 accepted, 512-bit keys allowed), which shows
that our canonicalization and crypto agree with Mail::DKIM on every file it
passes that is RFC 6376 syntax.
"""

from __future__ import annotations

import pytest

import mailseal
from mailseal import DKIMResult, Reason, VerifyOptions
from support.conformance import CONFORMANCE, fake_dns

CORPUS = CONFORMANCE / "mail-dkim-corpus"
NOW = 1_700_000_000  # ignore_7 expired in 2007; nothing else depends on the clock

P = DKIMResult.PERMERROR
PRE_STANDARD = (P, Reason.SIG_MISSING_TAG)  # no v= tag: drafts before RFC 4871
DRAFT_VERSION = (P, Reason.SIG_VERSION)  # v=0.5 / v=5 drafts
SMALL_KEY = (P, Reason.KEY_TOO_SMALL)  # 512/768-bit keys: RFC 8301 sets 1024 as the floor
DOMAINKEYS_ONLY = (DKIMResult.NONE, None)  # RFC 4870 DomainKey-Signature is not DKIM

# file -> (message result, reason of the first signature) under default options.
EXPECTED: dict[str, tuple[DKIMResult, Reason | None]] = {
    "bad_1.txt": PRE_STANDARD,
    "bad_1878954.txt": (DKIMResult.FAIL, Reason.BODY_HASH_MISMATCH),  # LF-only file, body altered
    "bad_ietf01_1.txt": PRE_STANDARD,
    "bad_ietf01_2.txt": PRE_STANDARD,
    "bad_ietf01_3.txt": PRE_STANDARD,
    "badkey1_ed25519.txt": (P, Reason.KEY_INVALID),  # an SPKI blob where RFC 8463 wants 32 raw bytes
    "badkey2_ed25519.txt": (DKIMResult.FAIL, Reason.SIGNATURE_MISMATCH),
    "badkey3_ed25519.txt": (DKIMResult.FAIL, Reason.BODY_HASH_MISMATCH),
    "badkey4_ed25519.txt": (P, Reason.KEY_NOT_FOUND),
    "badkey5_ed25519.txt": (P, Reason.KEY_SYNTAX),  # empty TXT record: no p=
    "badkey_1.txt": DRAFT_VERSION,
    "badkey_2.txt": DRAFT_VERSION,
    "badkey_3.txt": DRAFT_VERSION,
    "badkey_4.txt": DRAFT_VERSION,
    "badkey_5.txt": DRAFT_VERSION,
    "badkey_6.txt": DRAFT_VERSION,
    "badkey_7.txt": DRAFT_VERSION,
    "badkey_8.txt": SMALL_KEY,
    "badkey_9.txt": SMALL_KEY,
    "badkey_10.txt": (P, Reason.KEY_STRICT_SUBDOMAIN),
    "badkey_11.txt": (P, Reason.KEY_HASH_NOT_ALLOWED),
    "badkey_12.txt": SMALL_KEY,
    "badkey_13.txt": SMALL_KEY,
    "badkey_14.txt": (DKIMResult.TEMPERROR, Reason.DNS_TIMEOUT),
    "badkey_15.txt": (DKIMResult.TEMPERROR, Reason.DNS_SERVFAIL),
    "good_1878523.txt": SMALL_KEY,
    "good_83176.txt": (DKIMResult.POLICY, Reason.ALGORITHM_NOT_ACCEPTED),  # rsa-sha1, verifies
    "good_ietf00_1.txt": PRE_STANDARD,
    "good_ietf00_2.txt": PRE_STANDARD,
    "good_ietf00_3.txt": PRE_STANDARD,
    "good_ietf00_4.txt": PRE_STANDARD,
    "good_ietf00_5.txt": PRE_STANDARD,
    "good_ietf01_1.txt": PRE_STANDARD,
    "good_ietf01_2.txt": PRE_STANDARD,
    "good_qp_1.txt": SMALL_KEY,
    "good_qp_2.txt": SMALL_KEY,
    "good_qp_3.txt": SMALL_KEY,
    "good_rfc4871_3.txt": SMALL_KEY,
    "good_rfc4871_4.txt": SMALL_KEY,
    "goodkey_1.txt": SMALL_KEY,
    "goodkey_2.txt": SMALL_KEY,
    "goodkey_3.txt": SMALL_KEY,
    "goodkey_4.txt": SMALL_KEY,
    "goodkey_ed25519.txt": (DKIMResult.PASS, None),
    "ignore_1.txt": DRAFT_VERSION,
    "ignore_2.txt": DRAFT_VERSION,
    "ignore_3.txt": DRAFT_VERSION,
    "ignore_4.txt": DRAFT_VERSION,
    "ignore_5.txt": (P, Reason.SIG_QUERY_METHOD_UNKNOWN),
    "ignore_6.txt": (P, Reason.SIG_QUERY_METHOD_UNKNOWN),
    "ignore_7.txt": (P, Reason.SIG_EXPIRED),
    "ignore_8.txt": (P, Reason.SIG_AUID_NOT_IN_DOMAIN),
    "mine_ietf01_1.txt": PRE_STANDARD,
    "mine_ietf01_2.txt": PRE_STANDARD,
    "mine_ietf01_3.txt": PRE_STANDARD,
    "mine_ietf01_4.txt": PRE_STANDARD,
    "mine_ietf05_1.txt": DRAFT_VERSION,
    "multiple_1.txt": PRE_STANDARD,
    # [0] c=foobar, [1] rsa-sha1 that verifies (policy), [2] altered (fail), [3] no a=.
    "multiple_2.txt": (DKIMResult.FAIL, Reason.SIG_CANONICALIZATION_UNKNOWN),
    "no_body_1.txt": DRAFT_VERSION,
    "no_body_2.txt": DRAFT_VERSION,
    "no_body_3.txt": DRAFT_VERSION,
}
for _name in (
    "bad_dk_1.txt", "bad_dk_2.txt", "bad_dk_3.txt", "bad_dk_4.txt", "bad_dk_5.txt",
    "dk_headers_1.txt", "dk_headers_2.txt", "dk_multiple_1.txt",
    "good_dk_1.txt", "good_dk_2.txt", "good_dk_3.txt", "good_dk_4.txt", "good_dk_5.txt",
    "good_dk_6.txt", "good_dk_7.txt", "good_dk_gmail.txt", "good_dk_yahoo.txt",
):  # fmt: skip
    EXPECTED[_name] = DOMAINKEYS_ONLY

# With rsa-sha1 and 512-bit keys allowed, every RFC 6376-syntax file Mail::DKIM passes
# passes here too. The g= files (badkey_8/9/12/13) pass as well: RFC 6376 removed the
# RFC 4871 g= tag, and unknown key tags "MUST be ignored" (3.6.1), so Mail::DKIM's
# "invalid" for them follows RFC 4871, not RFC 6376.
LEGACY_PASS = [
    "good_1878523.txt", "good_83176.txt", "good_qp_1.txt", "good_qp_2.txt", "good_qp_3.txt",
    "good_rfc4871_3.txt", "good_rfc4871_4.txt", "goodkey_1.txt", "goodkey_2.txt", "goodkey_3.txt",
    "goodkey_4.txt", "goodkey_ed25519.txt", "multiple_2.txt",
    "badkey_8.txt", "badkey_9.txt", "badkey_12.txt", "badkey_13.txt",
]  # fmt: skip


@pytest.fixture(scope="module")
def resolver() -> mailseal.SyncKeyResolver:
    return fake_dns(CORPUS / "FAKE_DNS.dat")


def _files() -> list[str]:
    return sorted(p.name for p in (CORPUS / "corpus").iterdir())


def test_every_corpus_file_has_an_expectation() -> None:
    assert set(_files()) == set(EXPECTED)


@pytest.mark.parametrize("name", _files())
def test_corpus_default_options(name: str, resolver: mailseal.SyncKeyResolver) -> None:
    report = mailseal.verify_sync((CORPUS / "corpus" / name).read_bytes(), resolver=resolver, now=NOW)
    result, reason = EXPECTED[name]
    assert report.result is result
    if reason is not None:
        assert report.signatures[0].reason is reason
    else:
        assert not report.signatures or report.signatures[0].reason is None
    for sig in report.signatures:
        assert sig.detail  # every verdict explains itself


@pytest.mark.parametrize("name", LEGACY_PASS)
def test_corpus_legacy_options_pass(name: str, resolver: mailseal.SyncKeyResolver) -> None:
    legacy = VerifyOptions(allow_rsa_sha1=True, min_rsa_bits=512)
    report = mailseal.verify_sync(
        (CORPUS / "corpus" / name).read_bytes(), resolver=resolver, options=legacy, now=NOW
    )
    assert report.result is DKIMResult.PASS


def test_multiple_2_per_signature(resolver: mailseal.SyncKeyResolver) -> None:
    """Mail::DKIM asserts [0]=invalid [1]=pass [2]=fail; our RFC 8301 reading of [1] is policy."""
    report = mailseal.verify_sync(
        (CORPUS / "corpus" / "multiple_2.txt").read_bytes(), resolver=resolver, now=NOW
    )
    assert [s.result for s in report.signatures[:3]] == [P, DKIMResult.POLICY, DKIMResult.FAIL]
    assert report.signatures[2].reason is Reason.SIGNATURE_MISMATCH


def test_lf_only_copy_verifies_like_the_crlf_original(resolver: mailseal.SyncKeyResolver) -> None:
    data = (CORPUS / "corpus" / "goodkey_ed25519.txt").read_bytes()
    assert b"\r\n" in data
    lf_only = data.replace(b"\r\n", b"\n")
    assert mailseal.verify_sync(lf_only, resolver=resolver, now=NOW).result is DKIMResult.PASS
