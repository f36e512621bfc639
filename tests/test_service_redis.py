"""The RQ backend against a real Redis (GWM_TEST_REDIS_URL, default db 15).

Each test gets its own queue name and deletes only the keys its queue, jobs and workers made:
the Redis may be shared, so nothing here ever flushes a database.
"""

from __future__ import annotations

import json
import os
import threading
import uuid

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.redis

REDIS_URL = os.environ.get("GWM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


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
    """Run every queued job in this process with the worker ``gwm worker --burst`` runs."""
    from service.queue.worker import build_worker

    worker = build_worker(settings)
    try:
        worker.work(burst=True)
    finally:
        worker.connection.close()


def run_one_job(settings, video: bytes, steps: int) -> tuple[dict, int | None]:
    """Submit one job, run it on a burst worker; its final status and RQ's retries left."""
    from rq.job import Job

    with new_client(settings) as client:
        job_id = client.post(f"/adapt-and-segment?steps={steps}", files={"file": ("b.mp4", video)}).json()["id"]
        run_worker_burst(settings)
        status = client.get(f"/jobs/{job_id}").json()
        retries_left = Job.fetch(job_id, connection=client.app.state.service.queue.queue.connection).retries_left
    return status, retries_left


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
    from concurrent.futures import ThreadPoolExecutor

    with new_client(redis_settings) as client:
        url = client.post("/adapt-and-segment?steps=2", files={"file": ("bear.mp4", davis_video.read_bytes())}).json()["url"]
        with ThreadPoolExecutor(6) as pool:  # impatient users: the same answer for every DELETE
            responses = list(pool.map(lambda _: client.delete(url), range(6)))
        assert [(r.status_code, r.json()["state"]) for r in responses] == [(200, "cancelled")] * 6
    run_worker_burst(redis_settings)
    with new_client(redis_settings) as client:
        assert client.get(url).json()["state"] == "cancelled"
        assert client.get(f"{url}/result").status_code == 409
    assert not list(redis_settings.upload_dir.iterdir())


def test_input_error_fails_without_retry(redis_settings, tmp_path) -> None:
    from helpers.service_media import encode_video, gradient_rgb

    one_frame = encode_video([gradient_rgb(64, 48)], tmp_path / "one.mp4")
    with new_client(redis_settings) as client:
        url = client.post("/adapt-and-segment", files={"file": ("one.mp4", one_frame.read_bytes())}).json()["url"]
        run_worker_burst(redis_settings)
        status = client.get(url).json()
    assert status["state"] == "failed" and "two frames" in status["error"]


def test_retry_finds_the_upload_and_the_error_names_the_cause(redis_settings, davis_video, monkeypatch, tmp_path) -> None:
    """A job that raises unexpectedly is retried with its upload; the final error is the real one, path-free."""
    missing = tmp_path / "weights" / "missing.pt"
    monkeypatch.setenv("GWM_CHECKPOINT_PATH", str(missing))  # the worker's setting, not the API's
    settings = redis_settings.model_copy(update={"job_retries": 1})
    status, retries_left = run_one_job(settings, davis_video.read_bytes(), steps=1)
    assert status["state"] == "failed", status
    assert "no longer available" not in status["error"], status["error"]
    assert "missing.pt" in status["error"] and str(missing.parent) not in status["error"], status["error"]
    assert retries_left == 0, "the job was not retried"
    assert not list(settings.upload_dir.iterdir()), "the upload outlived the job's last attempt"


def test_a_job_past_its_timeout_fails_with_a_message_and_is_not_retried(redis_settings, davis_video,
                                                                          monkeypatch) -> None:
    monkeypatch.setenv("GWM_JOB_TIMEOUT_SECONDS", "1")  # the worker's own setting
    settings = redis_settings.model_copy(update={"job_retries": 1})
    status, retries_left = run_one_job(settings, davis_video.read_bytes(), steps=200)
    assert status["state"] == "failed" and "exceeded its 1 s timeout" in status["error"], status
    assert status["ended_at"] - status["started_at"] < 1 + 2, status  # stopped within the 2 s of a cancel
    assert retries_left == 1, "a timed-out job ran again"
    assert not list(settings.upload_dir.iterdir())


def test_rq_timing_a_job_out_makes_its_attempt_the_last(tmp_path) -> None:
    """RQ's own timeout, the last resort behind the job's: no retry, and the upload goes."""
    from types import SimpleNamespace

    from rq.timeouts import JobTimeoutException

    from service.queue.rq_backend import discard_upload_if_final

    upload = tmp_path / "job.mp4"
    upload.write_bytes(b"video")
    job = SimpleNamespace(retries_left=1, meta={"upload": str(upload)})
    discard_upload_if_final(job, None, RuntimeError, RuntimeError("boom"), None)
    assert job.retries_left == 1 and upload.exists()  # an unexpected error: retried, with its upload
    discard_upload_if_final(job, None, JobTimeoutException, JobTimeoutException("too long"), None)
    assert job.retries_left == 0 and not upload.exists()


def _error(response) -> tuple[int, str, str | None]:
    return response.status_code, response.json()["error"]["code"], response.headers.get("retry-after")


def test_queue_length_is_bounded(redis_settings, davis_video) -> None:
    """No worker runs: two jobs wait, the third is a 429 with Retry-After, and /metrics shows both numbers."""
    from helpers.service_process import metric

    settings = redis_settings.model_copy(update={"max_queued_jobs": 2, "retry_after_seconds": 7})
    video = davis_video.read_bytes()
    with new_client(settings) as client:
        for i in range(2):
            assert client.post("/adapt-and-segment", files={"file": (f"{i}.mp4", video)}).status_code == 202
        assert _error(client.post("/adapt-and-segment", files={"file": ("2.mp4", video)})) == (429, "too_many_requests", "7")
        text = client.get("/metrics").text
        assert (metric(text, "gwm_queue_depth"), metric(text, "gwm_queue_max_jobs")) == (2, 2)
    assert len(list(settings.upload_dir.iterdir())) == 2, "the refused upload was kept"


def test_concurrent_submits_do_not_overshoot_the_queue_limit(redis_settings, davis_video) -> None:
    from concurrent.futures import ThreadPoolExecutor

    settings = redis_settings.model_copy(update={"max_queued_jobs": 2})
    video = davis_video.read_bytes()
    with new_client(settings) as client, ThreadPoolExecutor(6) as pool:
        codes = sorted(pool.map(lambda i: client.post("/adapt-and-segment", files={"file": (f"{i}.mp4", video)}).status_code,
                                range(6)))
    assert codes == [202, 202, 429, 429, 429, 429]
    assert len(list(settings.upload_dir.iterdir())) == 2, "a refused upload was kept"


def test_upload_space_is_bounded(redis_settings, davis_video) -> None:
    """Uploads waiting for workers may take GWM_MAX_UPLOAD_DIR_BYTES; beyond, 503 with Retry-After until one goes."""
    from helpers.service_process import metric

    video = davis_video.read_bytes()
    settings = redis_settings.model_copy(update={"max_upload_dir_bytes": len(video) * 3 // 2, "retry_after_seconds": 5})
    with new_client(settings) as client:
        first = client.post("/adapt-and-segment", files={"file": ("a.mp4", video)})
        assert first.status_code == 202
        assert _error(client.post("/adapt-and-segment", files={"file": ("b.mp4", video)})) == (503, "unavailable", "5")
        text = client.get("/metrics").text
        assert metric(text, "gwm_upload_bytes") == len(video)
        assert metric(text, "gwm_upload_max_bytes") == settings.max_upload_dir_bytes
        client.delete(first.json()["url"])  # its upload goes with it, and there is room again
        assert client.post("/adapt-and-segment", files={"file": ("c.mp4", video)}).status_code == 202


def test_cleanup_deletes_only_this_queues_keys(redis_settings, davis_video, monkeypatch) -> None:
    """The fixture's cleanup takes the job, its result and a worker's record, and never names a stranger's key.

    The worker is a live one: a burst worker's record expires 60 s after it quits, and a CI run once
    saw it gone before the check (stop 32). The stranger is checked among the keys the cleanup deletes,
    not by reading it back: the server is shared, and a CI run once saw the key gone with the cleanup
    innocent of it (stop 35).
    """
    from redis import Redis

    from service.queue.worker import build_worker

    connection = Redis.from_url(REDIS_URL)
    stranger = f"someone-else:{uuid.uuid4().hex}"
    connection.set(stranger, "keep me", ex=60)
    deleted: list[bytes] = []
    delete = connection.delete
    monkeypatch.setattr(connection, "delete", lambda *names: (deleted.extend(names), delete(*names))[1])
    try:
        with new_client(redis_settings) as client:
            url = client.post("/adapt-and-segment?steps=0", files={"file": ("bear.mp4", davis_video.read_bytes())}).json()["url"]
        run_worker_burst(redis_settings)
        listener = build_worker(redis_settings)
        listener.register_birth()  # as `gwm worker` does on start
        listener.connection.close()
        job_id = url.rsplit("/", 1)[1]
        keys = own_keys(connection, redis_settings.queue_name)
        assert {f"rq:job:{job_id}".encode(), listener.key.encode()} <= keys
        delete_own_keys(connection, redis_settings.queue_name)
        assert not own_keys(connection, redis_settings.queue_name)
        assert not connection.sismember("rq:workers", listener.key)
        assert not list(connection.scan_iter(match=f"*{job_id}*"))
        assert deleted and stranger.encode() not in deleted
    finally:
        delete(stranger)
        connection.close()


def test_cancel_stops_a_job_on_an_rq_worker_within_two_seconds(redis_settings, tmp_path, monkeypatch) -> None:
    """The worker runs here (RQ needs the main thread for its signals); the API client cancels from a thread."""
    from test_service_progress import SLOW_FLOW_SIZE, STOP_BUDGET_S, cancel_in_stage, davis_video_bytes

    monkeypatch.setenv("GWM_FLOW_SIZE", json.dumps(SLOW_FLOW_SIZE))  # the worker reads its own environment
    settings = redis_settings.model_copy(update={"max_video_frames": 60})
    video = davis_video_bytes(tmp_path, 60)
    outcome: dict = {}
    with new_client(settings) as client:
        url = client.post("/adapt-and-segment?steps=1", files={"file": ("bear.mp4", video)}).json()["url"]

        def cancel() -> None:
            try:
                outcome["latency"], outcome["status"] = cancel_in_stage(client, url, "flow")
            except BaseException as exc:  # noqa: BLE001 - asserted in the test's own thread below
                outcome["error"] = exc

        canceller = threading.Thread(target=cancel)
        canceller.start()
        run_worker_burst(settings)
        canceller.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["status"]["state"] == "cancelled", outcome["status"]
    assert outcome["status"]["progress"]["stage"] == "flow", outcome["status"]
    assert outcome["latency"] < STOP_BUDGET_S, f"cancelled {outcome['latency']:.2f} s after the DELETE"
