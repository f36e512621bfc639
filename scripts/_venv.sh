# shellcheck shell=bash
# Sourced by scripts/test.sh, scripts/serve.sh and .ci/run: creates the project's virtualenv
# (.venv, or $GWM_VENV) if absent and installs the project into it, editable, with the given
# extras. The install is skipped when pyproject.toml is unchanged since the last one for the
# same extras (a stamp file in the venv); GWM_REINSTALL=1 forces it.
#
# Python: $PYTHON if set, else the first of python3.11, python3.12, python3 that is >=3.11,<3.13.
# pip's own configuration applies (on the project's machines it takes torch 2.14.1 and
# torchvision 0.29.1 from local disk).

GWM_ROOT="${GWM_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
GWM_VENV="${GWM_VENV:-$GWM_ROOT/.venv}"

gwm_find_python() {
    local c
    for c in "${PYTHON:-}" python3.11 python3.12 python3; do
        [ -n "$c" ] || continue
        command -v "$c" >/dev/null 2>&1 || continue
        if "$c" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))' 2>/dev/null; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

# gwm_ensure_venv EXTRAS   e.g. gwm_ensure_venv cpu,test
gwm_ensure_venv() {
    local extras="$1" py stamp key
    if [ ! -x "$GWM_VENV/bin/python" ]; then
        py="$(gwm_find_python)" || {
            echo "error: need Python >=3.11,<3.13 (python3.11 / python3.12); set PYTHON=/path/to/python" >&2
            return 1
        }
        echo "==> creating virtualenv $GWM_VENV with $py ($("$py" -V 2>&1))"
        "$py" -m venv "$GWM_VENV"
    fi
    stamp="$GWM_VENV/.gwm-installed-${extras//,/-}"
    key="$(sha256sum "$GWM_ROOT/pyproject.toml" | cut -c1-32)"
    if [ "${GWM_REINSTALL:-0}" != 1 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$key" ] \
        && "$GWM_VENV/bin/python" -c 'import importlib.metadata as m; m.distribution("gwm")' 2>/dev/null; then
        echo "==> gwm[$extras] already installed in $GWM_VENV (pyproject.toml unchanged)"
        return 0
    fi
    echo "==> pip install -e '.[$extras]' into $GWM_VENV"
    (cd "$GWM_ROOT" && "$GWM_VENV/bin/python" -m pip install -e ".[$extras]")
    printf '%s\n' "$key" > "$stamp"
}
