#!/bin/sh
# Container entrypoint for the gwm images (Dockerfile, docker/Dockerfile.cpu).
#
#   api     -> gwm serve --host 0.0.0.0 --port $GWM_PORT   (default port 8000)
#   worker  -> gwm worker                                   (RQ worker; needs GWM_REDIS_URL)
#   gwm ... -> the gwm CLI itself (e.g. `gwm train ...`)
#   other   -> run as given (e.g. `sh`, `python -c ...`)
#
# Extra arguments after `api` / `worker` are passed on to gwm. Every role `exec`s, so the
# process replaces this shell and receives SIGTERM/SIGINT from `docker stop` directly
# (tini, PID 1 in the image, forwards signals and reaps zombies).
#
# Configuration is read by gwm itself from GWM_* variables: GWM_QUEUE_MODE=redis|embedded,
# GWM_REDIS_URL, GWM_MODEL_PATH (ONNX), GWM_CHECKPOINT_PATH (PyTorch .pt),
# GWM_DEVICE=auto|cpu|cuda, GWM_API_KEY, GWM_DATA_DIR.
set -eu

role="${1:-api}"
[ "$#" -gt 0 ] && shift

# Tell the HEALTHCHECK (docker/healthcheck.py) which role this container runs.
remember_role() {
    printf '%s\n' "$1" > "${GWM_ROLE_FILE:-/tmp/gwm-role}" 2>/dev/null || true
}

case "$role" in
    api|serve)
        remember_role api
        exec gwm serve --host "${GWM_HOST:-0.0.0.0}" --port "${GWM_PORT:-8000}" "$@"
        ;;
    worker)
        remember_role worker
        exec gwm worker "$@"
        ;;
    gwm)
        exec gwm "$@"
        ;;
    -*)
        # `docker run IMAGE --reload`: options for the default role.
        remember_role api
        exec gwm serve --host "${GWM_HOST:-0.0.0.0}" --port "${GWM_PORT:-8000}" "$role" "$@"
        ;;
    *)
        exec "$role" "$@"
        ;;
esac
