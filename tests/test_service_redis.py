"""The RQ backend against a real Redis (GWM_TEST_REDIS_URL, default db 15).

Each test gets its own queue name and deletes only the keys its queue, jobs and workers made:
the Redis may be shared, so nothing here ever flushes a database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("GWM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REPO = Path(__file__).resolve().parents[1]


def own_keys(connection, queue_name: str) -> set[bytes]:
    """Every key that a queue named ``queue_name`` made: its registries, its jobs (with their
    results and gwm cancel flags) and the records of workers that listened on it."""
    name = queue_name.encode()
    keys = set(connection.scan_iter(match=f"*{queue_name}*"))
    jobs = {key.split(b":")[2] for key in connection.scan_iter(match="rq:job:*", _type="hash")
            if connection.hget(key, "origin") == name}
    for job in jobs:
        keys |= set(connection.scan_iter(match=f"*{job.decode()}*"))
    for key in connection.scan_iter(match="rq:worker:*", _type="hash"):
        if name in (connection.hget(key, "queues") or b"").split(b","):
            keys |= {key, *connection.scan_iter(match=f"{key.decode()}:*")}
    for key in connection.scan_iter(match="rq:worker:*:executions", _type="set"):  # a killed worker's, too
        if any(member.split(b":")[0] in jobs for member in connection.smembers(key)):
            keys.add(key)
    return keys


def delete_own_keys(connection, queue_name: str) -> None:
    """Delete :func:`own_keys` and this queue's entries in RQ's shared sets; nothing else."""
    keys = own_keys(connection, queue_name)
    connection.srem("rq:queues", f"rq:queue:{queue_name}")
    if workers := [key for key in keys if key.startswith(b"rq:worker:")]:
        connection.srem("rq:workers", *workers)
    if keys:
        connection.delete(*keys)


@pytest.fixture
def redis_settings(service_settings, tiny_model, monkeypatch):
    """Redis-mode settings on a queue of this test's own; workers read the same via the environment."""
    from redis import Redis
    from redis.exceptions import RedisError

    connection = Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        connection.ping()
    except RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    queue_name = f"gwm-test-{uuid.uuid4().hex[:12]}"
    settings = service_settings.model_copy(
        update={"queue_mode": "redis", "redis_url": REDIS_URL, "queue_name": queue_name}
    )
    env = {
        "GWM_CHECKPOINT_PATH": str(tiny_model[1]),
        "GWM_DEVICE": "cpu",
        "GWM_REDIS_URL": REDIS_URL,
        "GWM_QUEUE_NAME": queue_name,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield settings
    delete_own_keys(connection, queue_name)
    connection.close()


def run_worker_burst(settings) -> None:
    """Run every queued job in this process, as ``gwm worker --burst`` would."""
    from redis import Redis
    from rq import Queue, SimpleWorker

    connection = Redis.from_url(settings.redis_url)
    SimpleWorker([Queue(settings.queue_name, connection=connection)], connection=connection).work(burst=True)


def new_client(settings) -> TestClient:
    from service.api.app import create_app

    return TestClient(create_app(settings))


def test_job_runs_on_rq_worker_and_survives_api_restart(redis_settings, davis_video) -> None:
    with new_client(redis_settings) as client:
        response = client.post("/adapt-and-segment?steps=2", files={"file": ("bear.mp4", davis_video.read_bytes())})
        assert response.status_code == 202, response.text
        url = response.json()["url"]
        assert client.get(url).json()["state"] == "queued"
        assert "gwm_queue_depth 1.0" in client.get("/metrics").text
        assert client.get("/readyz").json()["queue"] == {"mode": "redis", "reachable": True}

    run_worker_burst(redis_settings)

    with new_client(redis_settings) as client:  # a new API process sees the same state
        status = client.get(url).json()
        assert status["state"] == "succeeded", status
        assert status["progress"]["stage"] == "encoding"
        assert status["progress"]["current"] == status["progress"]["total"] == 6
        assert status["timings"]["adapting"] > 0
        result = client.get(f"{url}/result?format=json").json()
        assert (result["frames"], result["width"], result["height"]) == (6, 426, 240)
    assert not list(redis_settings.upload_dir.iterdir())


def test_cancel_queued_job(redis_settings, davis_video) -> None:
    with new_client(redis_settings) as client:
        url = client.post("/adapt-and-segment?steps=2", files={"file": ("bear.mp4", davis_video.read_bytes())}).json()["url"]
        assert client.delete(url).json()["state"] == "cancelled"
    run_worker_burst(redis_settings)
    with new_client(redis_settings) as client:
        assert client.get(url).json()["state"] == "cancelled"
        assert client.get(f"{url}/result").status_code == 409
    assert not list(redis_settings.upload_dir.iterdir())


def test_input_error_fails_without_retry(redis_settings, tmp_path) -> None:
    from service_media import encode_video, gradient_rgb

    one_frame = encode_video([gradient_rgb(64, 48)], tmp_path / "one.mp4")
    with new_client(redis_settings) as client:
        url = client.post("/adapt-and-segment", files={"file": ("one.mp4", one_frame.read_bytes())}).json()["url"]
        run_worker_burst(redis_settings)
        status = client.get(url).json()
    assert status["state"] == "failed" and "two frames" in status["error"]


@pytest.mark.slow
def test_killed_worker_job_ends_failed(redis_settings, davis_video) -> None:
    """SIGKILL a worker mid-job; RQ's abandoned-job cleanup must fail the job, not leave it running."""
    from rq import Queue
    from rq.registry import StartedJobRegistry

    settings = redis_settings.model_copy(update={"job_retries": 0})
    worker = subprocess.Popen(
        [sys.executable, "-m", "gwm_cli", "worker", "--log-level", "warning"],  # = `gwm worker`
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        with new_client(settings) as client:
            url = client.post("/adapt-and-segment?steps=200", files={"file": ("b.mp4", davis_video.read_bytes())}).json()["url"]
            deadline = time.monotonic() + 60
            while client.get(url).json()["state"] != "running":
                assert time.monotonic() < deadline, "worker never started the job"
                time.sleep(0.2)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            assert client.get(url).json()["state"] == "running"  # heartbeat not yet expired
            queue = client.app.state.service.queue.queue
            assert isinstance(queue, Queue)
            StartedJobRegistry(queue=queue).cleanup(timestamp=time.time() + 24 * 3600)  # as if time passed
            status = client.get(url).json()
        assert status["state"] == "failed" and "abandoned" in status["error"]
    finally:
        if worker.poll() is None:
            worker.kill()


def test_cleanup_deletes_only_this_queues_keys(redis_settings, davis_video) -> None:
    """The fixture's cleanup takes the job, its result and the worker's record, and leaves a stranger's keys."""
    from redis import Redis

    connection = Redis.from_url(REDIS_URL)
    stranger = f"someone-else:{uuid.uuid4().hex}"
    connection.set(stranger, "keep me", ex=60)
    try:
        with new_client(redis_settings) as client:
            url = client.post("/adapt-and-segment?steps=0", files={"file": ("bear.mp4", davis_video.read_bytes())}).json()["url"]
        run_worker_burst(redis_settings)
        job_id = url.rsplit("/", 1)[1]
        keys = own_keys(connection, redis_settings.queue_name)
        assert f"rq:job:{job_id}".encode() in keys
        assert any(key.startswith(b"rq:worker:") for key in keys)
        delete_own_keys(connection, redis_settings.queue_name)
        assert not own_keys(connection, redis_settings.queue_name)
        assert not list(connection.scan_iter(match=f"*{job_id}*"))
        assert connection.get(stranger) == b"keep me"
    finally:
        connection.delete(stranger)
        connection.close()
