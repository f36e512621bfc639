#!/usr/bin/env bash
# The project's one test command, on a fresh machine or a dev checkout:
#
#   bash scripts/test.sh [pytest args...]      e.g. bash scripts/test.sh -m "not slow"
#
# Creates .venv if absent, installs the project with its `cpu` and `test` extras (editable),
# then runs pytest from that venv. Tests marked `redis` need a Redis server at
# GWM_TEST_REDIS_URL (default redis://127.0.0.1:6379/15) and `browser` tests a headless
# Chromium; .ci/run provides both. Exit status is pytest's; "no tests collected" (pytest's
# exit 5) is a failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_venv.sh
. scripts/_venv.sh

gwm_ensure_venv "cpu,test"

export GWM_TEST_REDIS_URL="${GWM_TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"

echo "==> python -m pytest -q $*"
rc=0
"$GWM_VENV/bin/python" -m pytest -q "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests (exit 5); treating that as a failure" >&2
fi
exit "$rc"
