"""Real ``gwm serve`` and ``gwm worker`` processes on loopback, for the reliability tests.

Load, restart, fault and log tests need the service in its own process: only
then are its resident memory, its log output and a SIGKILL really the
service's, not the test runner's. Every process binds 127.0.0.1 only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from helpers.paths import REPO


def settings_env(settings: Any) -> dict[str, str]:
    """The ``GWM_*`` variables that make a child process read the same :class:`Settings`."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"GWM_{name.upper()}"] = str(value)
    return env


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gwm(*args: str, settings: Any, log: Path) -> subprocess.Popen:
    """Start ``gwm <args>`` (as ``python -m gwm_cli``) with ``settings`` in its environment."""
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(REPO)}
    with log.open("ab") as out:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, "-m", "gwm_cli", *args], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )


@dataclass
class Server:
    """A running ``gwm serve`` process."""

    process: subprocess.Popen
    url: str
    log: Path

    def logs(self) -> str:
        """Everything the server has logged so far."""
        return self.log.read_text(errors="replace")


def start_server(settings: Any, log: Path, port: int | None = None, log_level: str = "info") -> Server:
    """``gwm serve`` on 127.0.0.1, returned once ``/readyz`` answers 200 (at most 90 s)."""
    port = port or free_port()
    process = gwm("serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", log_level, settings=settings, log=log)
    server = Server(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop(process)
    raise AssertionError(f"gwm serve did not become ready:\n{server.logs()[-3000:]}")


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    """Send ``sig`` and wait (SIGKILL after 30 s); returns the exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


@contextmanager
def running_server(settings: Any, log: Path, **options: Any) -> Iterator[Server]:
    """A server for the duration of a ``with`` block."""
    server = start_server(settings, log, **options)
    try:
        yield server
    finally:
        stop(server.process)


def metric(text: str, name: str, default: float | None = None, **labels: str) -> float:
    """The value of a sample in Prometheus text, e.g. ``gwm_queue_depth`` or ``gwm_jobs_total`` with ``outcome="failed"``.

    ``default`` is returned for a sample not (yet) there; without one, a missing sample fails the test.
    """
    selector = "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}" if labels else ""
    found = re.search(rf"^{re.escape(name + selector)} (\S+)$", text, flags=re.MULTILINE)
    if found is None:
        if default is not None:
            return default
        raise AssertionError(f"metric {name}{selector} not in /metrics")
    return float(found.group(1))


@dataclass
class RedisServer:
    """A ``redis-server`` of the test's own on a loopback port, with no persistence: killing it loses everything."""

    port: int
    directory: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Its database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (again, on the same port) and wait until it answers."""
        from redis import Redis
        from redis.exceptions import RedisError

        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                   "--dir", str(self.directory)]
        with (self.directory / "redis.log").open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                with Redis(port=self.port, socket_connect_timeout=1) as probe:
                    probe.ping()
                return
            except RedisError:
                assert time.monotonic() < deadline and self.process.poll() is None, "redis-server did not start"
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the data goes with it."""
        if self.process is not None:
            stop(self.process, signal.SIGKILL)


@contextmanager
def private_redis(directory: Path) -> Iterator[RedisServer]:
    """A fresh ``redis-server`` for one test (skips where none is installed); killed afterwards."""
    import pytest

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    server = RedisServer(free_port(), directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()
