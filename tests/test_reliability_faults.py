"""Faults in Redis mode with real processes: a worker SIGKILLed mid-job, the API killed with jobs queued,
Redis itself lost mid-job.

Nothing may be lost or stuck: a killed worker's job is requeued or failed
within a minute at default settings, and retried to success or ended with a
clear reason; the next job runs; a worker outlives Redis; and the uploads
folder is empty once every job has ended, whatever the outcome.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time

import httpx
import pytest
from test_service_redis import new_client, redis_settings, run_worker_burst  # noqa: F401  (fixture)
from test_service_video import wait_for_end

from helpers.service_process import free_port, gwm, metric, private_redis, running_server, start_server, stop

pytestmark = [pytest.mark.redis, pytest.mark.slow]

logger = logging.getLogger(__name__)
NOTICED_WITHIN_S = 60


def _wait_until_running(client, url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while (status := client.get(url).json())["progress"]["stage"] != "adapting":
        assert time.monotonic() < deadline, f"worker never started adapting: {status}"
        time.sleep(0.1)


@pytest.mark.parametrize(("retries", "outcome"), [(0, "failed"), (1, "succeeded")])
def test_killed_worker_job_is_noticed_in_real_time(redis_settings, davis_video, tmp_path, retries, outcome) -> None:  # noqa: F811
    """SIGKILL during adaptation, default heartbeat and maintenance settings, nobody polling the job:
    within a minute it is failed as abandoned (no retry left) or requeued, then a new worker reruns it."""
    from rq.job import Job, JobStatus

    settings = redis_settings.model_copy(update={"job_retries": retries})
    video = davis_video.read_bytes()
    worker = gwm("worker", "--log-level", "warning", settings=settings, log=tmp_path / "worker.log")
    try:
        with new_client(settings) as client:  # its maintenance timer is what must notice
            doomed = client.post("/adapt-and-segment?steps=50", files={"file": ("a.mp4", video)}).json()
            following = client.post("/adapt-and-segment?steps=1", files={"file": ("b.mp4", video)}).json()["url"]
            _wait_until_running(client, doomed["url"])
            assert stop(worker, signal.SIGKILL) == -signal.SIGKILL
            killed = time.monotonic()
            job = Job.fetch(doomed["id"], connection=client.app.state.service.queue.queue.connection)
            while job.get_status(refresh=True) == JobStatus.STARTED:  # straight from Redis: no reaping on read
                assert time.monotonic() - killed < NOTICED_WITHIN_S, "the dead worker's job still looks running"
                time.sleep(0.5)
            logger.warning("killed worker's job %s after %.1f s", job.get_status(), time.monotonic() - killed)
            after_reap = client.get(doomed["url"]).json()
            assert after_reap["state"] == ("failed" if retries == 0 else "queued"), after_reap
            assert after_reap["progress"]["stage"] == ("adapting" if retries == 0 else "queued"), after_reap
            run_worker_burst(settings)  # a fresh worker drains the queue
            doomed_status, following_status = client.get(doomed["url"]).json(), client.get(following).json()
    finally:
        stop(worker, signal.SIGKILL)
    assert doomed_status["state"] == outcome, doomed_status
    if outcome == "failed":
        assert "abandoned" in doomed_status["error"]
    assert following_status["state"] == "succeeded", following_status
    assert not list(settings.upload_dir.iterdir()), "the killed job's upload was left behind"


def test_worker_outlives_redis_and_orphaned_uploads_are_swept(service_settings, davis_video, tmp_path) -> None:
    """Redis is SIGKILLed mid-job and stays away until the job has ended (RQ cannot record it), then comes
    back empty: the same worker process runs the next job, and the uploads of the jobs Redis forgot
    are removed by the API's timer, without another submit."""
    video = davis_video.read_bytes()
    with private_redis(tmp_path / "redis") as redis:
        settings = service_settings.model_copy(update={
            "queue_mode": "redis", "redis_url": redis.url, "queue_name": "gwm-test", "maintenance_interval_seconds": 1,
        })
        log = tmp_path / "worker.log"
        worker = gwm("worker", "--log-level", "info", settings=settings, log=log)
        try:
            with new_client(settings) as client:
                running = client.post("/adapt-and-segment?steps=20", files={"file": ("a.mp4", video)}).json()
                waiting = client.post("/adapt-and-segment?steps=1", files={"file": ("b.mp4", video)}).json()
                _wait_until_running(client, running["url"])
                redis.kill()
                assert client.post("/adapt-and-segment", files={"file": ("c.mp4", video)}).status_code == 503
                deadline = time.monotonic() + 180
                while f"{running['id']}.mp4 ended" not in log.read_text():  # it carries on without Redis
                    assert time.monotonic() < deadline and worker.poll() is None, log.read_text()[-3000:]
                    time.sleep(0.5)
                time.sleep(2)  # RQ fails to record the end
                redis.start()  # empty: both jobs are forgotten
                assert client.get(waiting["url"]).status_code == 404

                orphans = list(settings.upload_dir.iterdir())
                assert {running["id"], waiting["id"]} <= {path.stem for path in orphans}
                an_hour_ago = time.time() - 3600  # past the grace period an upload on its way into the queue gets
                for orphan in orphans:
                    os.utime(orphan, (an_hour_ago, an_hour_ago))
                deadline = time.monotonic() + 15
                while any(orphan.exists() for orphan in orphans):
                    assert time.monotonic() < deadline, "the orphaned uploads were not swept"
                    time.sleep(0.2)

                after = client.post("/adapt-and-segment?steps=1", files={"file": ("d.mp4", video)}).json()
                assert wait_for_end(client, after["url"], timeout=180)["state"] == "succeeded", log.read_text()[-3000:]
                assert worker.poll() is None, f"the worker exited:\n{log.read_text()[-3000:]}"
        finally:
            stop(worker)


def test_worker_metrics_listen_on_loopback_only(redis_settings, tmp_path) -> None:  # noqa: F811
    """`gwm worker --metrics-port` without --metrics-host serves 127.0.0.1, not every interface."""
    port = free_port()
    worker = gwm("worker", "--metrics-port", str(port), settings=redis_settings, log=tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and worker.poll() is None, (tmp_path / "worker.log").read_text()
                time.sleep(0.3)
        with pytest.raises(ConnectionRefusedError):  # 127.0.0.2 is loopback too: only a 0.0.0.0 bind answers it
            socket.create_connection(("127.0.0.2", port), timeout=2).close()
    finally:
        stop(worker)


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
