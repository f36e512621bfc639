"""RQ (Redis) job queue: state in Redis, jobs run by ``gwm worker`` processes anywhere.

Mapping onto RQ features:

* ``job_timeout``, ``result_ttl``/``failure_ttl`` (= ``GWM_JOB_TTL_SECONDS``) and
  ``ttl`` for jobs that wait too long in the queue;
* ``Retry``: a job whose worker died is requeued; the worker's periodic
  ``StartedJobRegistry.cleanup`` (RQ's abandoned-job handling, also run by
  :meth:`RQJobQueue.status`) marks it failed once its retries are spent, and
  its ``on_failure`` callback then deletes the upload the dead job left behind;
* ``job.meta`` carries stage and progress, written by the worker.

Cancellation and input errors end a job normally with an ``outcome`` in its
meta: they are final, and must not trigger a retry. A cancel request is a
separate Redis key, so the worker's meta writes cannot overwrite it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Callback, Queue, Retry, get_current_job
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus as RQStatus
from rq.registry import StartedJobRegistry

from service.errors import Conflict, NotFound, ServiceError, Unavailable
from service.jobs import AdaptationConfig, JobCancelled, VideoJobRequest, run_video_job
from service.queue.base import JobQueue, JobState, JobStatus, Progress, make_status
from service.settings import Settings

logger = logging.getLogger(__name__)

_CANCEL_KEY = "gwm:cancel:{}"
_WAITING = {RQStatus.QUEUED, RQStatus.DEFERRED, RQStatus.SCHEDULED, RQStatus.CREATED}


def _cancel_key(job_id: str) -> str:
    return _CANCEL_KEY.format(job_id)


def execute(request: VideoJobRequest) -> dict[str, Any] | None:
    """The RQ job: run :func:`run_video_job` with meta-backed progress and a Redis cancel flag."""
    job = get_current_job()
    assert job is not None, "execute() runs inside an RQ worker"
    connection = job.connection

    def progress(stage: str, current: int, total: int) -> None:
        job.meta.update(stage=stage, current=current, total=total)
        job.save_meta()

    def should_cancel() -> bool:
        return bool(connection.exists(_cancel_key(job.id)))

    try:
        result = run_video_job(request, AdaptationConfig.from_settings(Settings()), progress, should_cancel)
    except JobCancelled:
        job.meta.update(outcome=JobState.CANCELLED.value)
    except ServiceError as exc:
        job.meta.update(outcome=JobState.FAILED.value, error=exc.message)
    else:
        job.meta.update(outcome=JobState.SUCCEEDED.value, timings=result["timings"])
        job.save_meta()
        return result
    job.save_meta()
    return None


def discard_upload_if_final(job: Job, connection: Redis, *exc_info: Any) -> None:
    """RQ failure callback: delete the upload of a job that will not run again.

    A job that fails inside :func:`execute` has already removed its upload, but
    a worker killed mid-job never reaches that cleanup; RQ calls this when it
    reaps the abandoned job (before requeueing it, hence the retries check).
    """
    if not job.retries_left:
        _discard_upload(job)


def _discard_upload(job: Job) -> None:
    """Delete the job's uploaded video, if it is still there."""
    upload = job.meta.get("upload")
    if upload:
        Path(upload).unlink(missing_ok=True)


class RQJobQueue(JobQueue):
    """Jobs in an RQ queue on ``GWM_REDIS_URL``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._redis = Redis.from_url(settings.redis_url)
        self._queue = Queue(settings.queue_name, connection=self._redis)

    @property
    def queue(self) -> Queue:
        """The underlying RQ queue (workers listen on it)."""
        return self._queue

    def submit(self, job_id: str, request: VideoJobRequest) -> JobStatus:
        ttl = self._settings.job_ttl_seconds
        retries = self._settings.job_retries
        try:
            self._queue.enqueue(
                execute,
                request,
                job_id=job_id,
                job_timeout=self._settings.job_timeout_seconds,
                result_ttl=ttl,
                failure_ttl=ttl,
                ttl=ttl,
                retry=Retry(max=retries) if retries else None,
                on_failure=Callback(discard_upload_if_final),
                meta={"stage": "queued", "options": request.options(), "upload": request.video_path},
            )
        except RedisError as exc:
            raise Unavailable(f"job queue unreachable: {exc}") from exc
        return self.status(job_id)

    def status(self, job_id: str) -> JobStatus:
        job = self._fetch(job_id)
        rq_status = job.get_status(refresh=False)
        if rq_status == RQStatus.STARTED:
            self._reap_abandoned()
            job = self._fetch(job_id)
            rq_status = job.get_status(refresh=False)
        meta = job.get_meta(refresh=False)
        state, error = self._state(job, rq_status, meta)
        return make_status(
            job_id,
            state,
            Progress(stage=meta.get("stage", "queued"), current=meta.get("current", 0), total=meta.get("total", 0)),
            options=meta.get("options", {}),
            created_at=_timestamp(job.created_at),
            started_at=_timestamp(job.started_at),
            ended_at=_timestamp(job.ended_at),
            timings=meta.get("timings", {}),
            error=error,
        )

    def result(self, job_id: str) -> dict[str, Any]:
        job = self._fetch(job_id)
        state, _ = self._state(job, job.get_status(refresh=False), job.get_meta(refresh=False))
        value = job.return_value() if state is JobState.SUCCEEDED else None
        if value is None:
            raise Conflict(f"job {job_id} has no result; it is {state}")
        return value

    def cancel(self, job_id: str) -> JobStatus:
        job = self._fetch(job_id)
        status = job.get_status(refresh=False)
        if status in _WAITING:
            job.cancel()
            job.meta.update(outcome=JobState.CANCELLED.value)
            job.save_meta()
            job.cleanup(ttl=self._settings.job_ttl_seconds)
            _discard_upload(job)
        elif status == RQStatus.STARTED:
            self._redis.set(_cancel_key(job_id), 1, ex=self._settings.job_timeout_seconds)
        return self.status(job_id)

    def depth(self) -> int:
        try:
            return self._queue.count
        except RedisError as exc:
            raise Unavailable(f"job queue unreachable: {exc}") from exc

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except RedisError:
            return False

    def close(self) -> None:
        self._redis.close()

    def _fetch(self, job_id: str) -> Job:
        try:
            return Job.fetch(job_id, connection=self._redis)
        except NoSuchJobError:
            raise NotFound(f"no job {job_id} (unknown, or expired after {self._settings.job_ttl_seconds} s)") from None
        except RedisError as exc:
            raise Unavailable(f"job queue unreachable: {exc}") from exc

    def _reap_abandoned(self) -> None:
        """RQ's abandoned-job handling: fail or retry started jobs whose worker stopped heartbeating."""
        StartedJobRegistry(queue=self._queue).cleanup()

    @staticmethod
    def _state(job: Job, status: RQStatus | None, meta: dict[str, Any]) -> tuple[JobState, str | None]:
        if status in _WAITING:
            return JobState.QUEUED, None
        if status == RQStatus.STARTED:
            return JobState.RUNNING, None
        if status == RQStatus.FINISHED:
            return JobState(meta.get("outcome", JobState.SUCCEEDED.value)), meta.get("error")
        if status in {RQStatus.CANCELED, RQStatus.STOPPED}:
            return JobState.CANCELLED, None
        return JobState.FAILED, _failure_message(job)


def _failure_message(job: Job) -> str:
    """The last line of RQ's failure text: the exception, never the traceback."""
    latest = job.latest_result()
    text = ((latest.exc_string if latest is not None else None) or "").strip()
    if "AbandonedJobError" in text:
        return "the worker stopped while running this job (abandoned); retries exhausted"
    if "JobTimeoutException" in text:
        return "job exceeded its timeout"
    last = text.splitlines()[-1] if text else "job failed"
    logger.debug("job %s failed: %s", job.id, text)
    return last


def _timestamp(value: datetime | None) -> float | None:
    """Unix seconds; RQ stores naive datetimes in UTC."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
