"""Faults in Redis mode with real processes: a worker SIGKILLed mid-job, the API killed with jobs queued.

Nothing may be lost or stuck: a killed worker's job is retried to success
or ends failed with a clear reason, the next job runs, and the uploads
folder is empty once every job has ended, whatever the outcome.
"""

from __future__ import annotations

import signal
import subprocess
import time

import httpx
import pytest

from service_process import gwm, metric, running_server, start_server, stop
from test_service_redis import new_client, redis_settings, run_worker_burst  # noqa: F401  (fixture)
from test_service_video import wait_for_end

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def _wait_until_running(client, url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while (status := client.get(url).json())["progress"]["stage"] != "adapting":
        assert time.monotonic() < deadline, f"worker never started adapting: {status}"
        time.sleep(0.1)


@pytest.mark.parametrize(("retries", "outcome"), [(0, "failed"), (1, "succeeded")])
def test_killed_worker_job_ends_and_next_job_runs(redis_settings, davis_video, tmp_path, retries, outcome) -> None:  # noqa: F811
    """SIGKILL during adaptation: with no retry left the job fails as abandoned, else a new worker reruns it."""
    from rq.registry import StartedJobRegistry

    settings = redis_settings.model_copy(update={"job_retries": retries})
    video = davis_video.read_bytes()
    worker = gwm("worker", "--log-level", "warning", settings=settings, log=tmp_path / "worker.log")
    try:
        with new_client(settings) as client:
            doomed = client.post("/adapt-and-segment?steps=6", files={"file": ("a.mp4", video)}).json()["url"]
            following = client.post("/adapt-and-segment?steps=1", files={"file": ("b.mp4", video)}).json()["url"]
            _wait_until_running(client, doomed)
            assert stop(worker, signal.SIGKILL) == -signal.SIGKILL
            # The dead worker's heartbeat lasts job_timeout + 60 s; pretend that much time has passed.
            StartedJobRegistry(queue=client.app.state.service.queue.queue).cleanup(timestamp=time.time() + 24 * 3600)
            after_reap = client.get(doomed).json()
            assert after_reap["state"] == ("failed" if retries == 0 else "queued"), after_reap
            run_worker_burst(settings)  # a fresh worker drains the queue
            doomed_status, following_status = client.get(doomed).json(), client.get(following).json()
    finally:
        stop(worker, signal.SIGKILL)
    assert doomed_status["state"] == outcome, doomed_status
    if outcome == "failed":
        assert "abandoned" in doomed_status["error"]
    assert following_status["state"] == "succeeded", following_status
    assert not list(settings.upload_dir.iterdir()), "the killed job's upload was left behind"


def test_api_killed_with_queued_jobs_loses_nothing(redis_settings, davis_video, tmp_path) -> None:  # noqa: F811
    """Submit with no worker running, SIGKILL `gwm serve`, restart it, then `gwm worker --burst`: all succeed."""
    video = davis_video.read_bytes()
    log = tmp_path / "serve.log"
    server = start_server(redis_settings, log)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            urls = [
                http.post("/adapt-and-segment?steps=1", files={"file": (f"{i}.mp4", video)}).json()["url"]
                for i in range(3)
            ]
            assert metric(http.get("/metrics").text, "gwm_queue_depth") == 3
    finally:
        assert stop(server.process, signal.SIGKILL) == -signal.SIGKILL

    with running_server(redis_settings, log) as restarted, httpx.Client(base_url=restarted.url, timeout=30) as http:
        assert {http.get(url).json()["state"] for url in urls} == {"queued"}
        worker = gwm("worker", "--burst", "--log-level", "warning", settings=redis_settings, log=tmp_path / "worker.log")
        try:
            assert worker.wait(timeout=180) == 0, (tmp_path / "worker.log").read_text()[-2000:]
        except subprocess.TimeoutExpired:
            worker.kill()
            raise
        statuses = [wait_for_end(http, url, timeout=10) for url in urls]
        assert [s["state"] for s in statuses] == ["succeeded"] * 3, statuses
        assert all(http.get(f"{url}/result?format=json").json()["frames"] == 6 for url in urls)
        assert metric(http.get("/metrics").text, "gwm_queue_depth") == 0
    assert not list(redis_settings.upload_dir.iterdir())
