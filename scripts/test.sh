#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system peers and servers, Python
# dependencies, static checks, then pytest. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Peer DKIM implementations and servers the interop/integration tests drive (Debian).
DEBS=(opendkim opendkim-tools libmail-dkim-perl knot knot-dnsutils)
missing=()
for pkg in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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
