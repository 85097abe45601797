#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system peers and servers, Python
# dependencies, static checks, then pytest. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Peer DKIM implementations and servers the interop/integration tests drive (Debian).
# postfix: the end-to-end tests run private instances of it (tests/support/postfix.py).
# mlmmj: a real mailing-list manager breaks signatures for the diagnosis tests.
# postgresql: the fleet key store tests run a private cluster (tests/support/postgres.py).
DEBS=(opendkim opendkim-tools libmail-dkim-perl knot knot-dnsutils bind9 postfix postgresql mlmmj)
# dovecot-imapd, chromium, chromium-driver, python3-venv: the DMARC report tests (a private IMAP
# server, the report page in a real browser, a Python the Postfix alias pipe may run).
DEBS+=(dovecot-imapd chromium chromium-driver python3-venv)
missing=()
for pkg in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Postfix: no system mail configuration; the tests write their own per instance.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    # No package may start a system daemon (Postfix, OpenDKIM, Knot): the tests run
    # private ones. Where the machine has no policy-rc.d, add one for this install only.
    policy=/usr/sbin/policy-rc.d
    added_policy=""
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\n# added by mailseal scripts/test.sh for one apt-get run\nexit 101\n' >"$policy"
      chmod 755 "$policy"
      added_policy=1
      trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ -n "$added_policy" ]; then rm -f "$policy"; trap - EXIT; fi
  else
    echo "!! missing Debian packages: ${missing[*]} (interop/integration tests will skip;"
    echo "!! run as root with apt-get, or install them, for the full suite)"
  fi
fi

PY=${PYTHON:-python3}
echo "== pip install -e .[test]"
"$PY" -m pip install -q --disable-pip-version-check -e '.[test]'

echo "== ruff"
"$PY" -m ruff check .
"$PY" -m ruff format --check --quiet .
echo "== mypy --strict"
"$PY" -m mypy
echo "== import-linter"
lint-imports --no-cache >/dev/null && echo "layering contracts kept"

echo "== pytest"
exec "$PY" -X dev -b -m pytest -p no:cacheprovider "$@"
