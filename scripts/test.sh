#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run it all:
# the default suite and the stress suite (tests/stress/, which a plain
# `pytest` leaves out), in one pytest run with --stress.
#   ./scripts/test.sh [pytest args...]
# Debian packages (chromium for the dashboard's browser test, lsof for port
# holders, redis-server for the Redis backend) are installed with apt-get when
# missing; Python packages with pip (the [test] extra).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v lsof >/dev/null 2>&1 || missing+=(lsof)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "== installing stream_hub with its test dependencies"
$PYTHON -m pip install -q --disable-pip-version-check -e ".[test]"

echo "== running the test suite, stress tests included"
export STREAM_HUB_REQUIRE_ALL=${STREAM_HUB_REQUIRE_ALL:-1}
exec $PYTHON -m pytest -p no:cacheprovider --stress "$@"
