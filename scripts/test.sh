#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run it all:
# the default suite, the stress suite (tests/stress/) and the bridges against
# the real frameworks (tests/integrations/) — the last two a plain `pytest`
# leaves out — in one pytest run with --stress --integrations, on four worker
# processes (pytest-xdist; pyproject.toml's addopts; -n 0 for one process).
#   ./scripts/test.sh [pytest args...]
# Debian packages (chromium for the dashboard's browser test, lsof for port
# holders, redis-server for the Redis backend) are installed with apt-get when
# missing; Python packages with pip: the [test] extra and the bridges' extras
# ([tensorboard], [transformers], [lightning]) on the CPU build of torch 2.13.0,
# pinned (newer torch builds are gigabytes). The [test] extra brings nbclient,
# nbformat and ipykernel too (a real notebook in a real kernel).
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

echo "== installing stream_hub with its test dependencies and the bridges' frameworks"
$PYTHON -m pip install -q --disable-pip-version-check torch==2.13.0
$PYTHON -m pip install -q --disable-pip-version-check -e ".[test,tensorboard,transformers,lightning]" torch==2.13.0

echo "== running the test suite, stress and framework tests included"
export STREAM_HUB_REQUIRE_ALL=${STREAM_HUB_REQUIRE_ALL:-1}
exec $PYTHON -m pytest -p no:cacheprovider --stress --integrations "$@"
