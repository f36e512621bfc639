#!/opt/venv/bin/python
"""Container health check for the gwm images (used by HEALTHCHECK and docker-compose.yml).

    gwm-healthcheck [api|worker]

api    : GET http://127.0.0.1:$GWM_PORT/healthz must answer 2xx.
worker : Redis at $GWM_REDIS_URL answers PING, and an RQ worker started in this container
         (same hostname) is registered there.

Without an argument the role comes from $GWM_ROLE, else from the file the entrypoint wrote
(/tmp/gwm-role), else `api`. Exit 0 = healthy, 1 = unhealthy (Docker's convention).
Standard library plus the redis/rq packages the image already has; no curl needed.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request

TIMEOUT_S = float(os.environ.get("GWM_HEALTHCHECK_TIMEOUT", "5"))


def _role(argv: list[str]) -> str:
    if len(argv) > 1:
        return argv[1]
    if os.environ.get("GWM_ROLE"):
        return os.environ["GWM_ROLE"]
    try:
        with open(os.environ.get("GWM_ROLE_FILE", "/tmp/gwm-role"), encoding="utf-8") as fh:
            return fh.read().strip() or "api"
    except OSError:
        return "api"


def check_api() -> str | None:
    port = os.environ.get("GWM_PORT", "8000")
    url = f"http://127.0.0.1:{port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            if 200 <= resp.status < 300:
                return None
            return f"{url} answered {resp.status}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"


def check_worker() -> str | None:
    from redis import Redis
    from rq import Worker

    url = os.environ.get("GWM_REDIS_URL", "redis://redis:6379/0")
    try:
        conn = Redis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
        conn.ping()
        workers = Worker.all(connection=conn)
    except Exception as exc:  # noqa: BLE001 (any failure means unhealthy)
        return f"redis {url}: {exc}"
    host = socket.gethostname()
    if any(getattr(w, "hostname", None) == host for w in workers):
        return None
    return f"no RQ worker from host {host!r} registered at {url} ({len(workers)} registered in all)"


def main(argv: list[str]) -> int:
    role = _role(argv)
    if role == "api":
        problem = check_api()
    elif role == "worker":
        problem = check_worker()
    else:
        print(f"unknown role {role!r} (expected api or worker)", file=sys.stderr)
        return 1
    if problem:
        print(f"unhealthy ({role}): {problem}", file=sys.stderr)
        return 1
    print(f"healthy ({role})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
