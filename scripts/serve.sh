#!/usr/bin/env bash
# The project's one serve command, on a fresh machine or a dev checkout:
#
#   bash scripts/serve.sh [gwm serve args...]   e.g. bash scripts/serve.sh --port 8080
#
# Creates .venv if absent, installs the project with its `cpu` extra (editable), then
# replaces itself with `gwm serve`: embedded queue (no Redis needed), http://127.0.0.1:8000
# unless arguments or GWM_* variables say otherwise. For Docker, see docker/README.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_venv.sh
. scripts/_venv.sh

gwm_ensure_venv "cpu"

exec "$GWM_VENV/bin/gwm" serve "$@"
