"""RQ (Redis) job queue: state in Redis, jobs run by ``gwm worker`` processes anywhere.

Mapping onto RQ features:

* ``result_ttl``/``failure_ttl`` (= ``GWM_JOB_TTL_SECONDS``); no ``ttl`` for a job waiting in the
  queue: one that expired there would vanish (404) without ever failing, and ``GWM_MAX_QUEUED_JOBS``
  bounds the queue already;
* the job's own timeout (``GWM_JOB_TIMEOUT_SECONDS``) is checked inside it, like a cancel
  (:func:`service.jobs.run_video_job`): the job fails with a message within 2 s, and is not retried.
  RQ's ``job_timeout`` is a last resort :data:`RQ_TIMEOUT_GRACE_S` later, for a job stuck where it
  cannot poll, and is not retried either (:func:`discard_upload_if_final`);
* heartbeats: a running job refreshes its entry in RQ's ``StartedJobRegistry``
  every ``GWM_JOB_HEARTBEAT_SECONDS`` (:mod:`service.queue.worker`), so the
  entry of a job whose worker died expires within three beats;
* ``Retry``: a job whose worker died, or that raised unexpectedly, is requeued;
  ``StartedJobRegistry.cleanup`` (RQ's abandoned-job handling, run by
  :meth:`RQJobQueue.reap` on the API's maintenance timer and by
  :meth:`RQJobQueue.status`) requeues or fails expired entries;
* the upload stays on disk until the job's last attempt ends: ``execute``
  deletes it after a final outcome, and the ``on_failure`` callback after the
  last failed attempt (including one whose worker was killed);
* ``job.meta`` carries the stage and progress (the fields of :class:`JobProgress`), written by the
  worker; a Redis blip while writing them is logged and the job carries on.

Cancellation and input errors end a job normally with an ``outcome`` in its
meta: they are final, and must not trigger a retry. A cancel request is a
separate Redis key, so the worker's meta writes cannot overwrite it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Callback, Queue, Retry, get_current_job
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.job import JobStatus as RQStatus
from rq.registry import StartedJobRegistry
from rq.timeouts import JobTimeoutException, TimerDeathPenalty

from service.errors import Conflict, NotFound, ServiceError, Unavailable
from service.jobs import JobCancelled, VideoJobRequest, WorkerConfig, run_video_job
from service.queue.base import JobQueue, check_room, make_status
from service.schemas import JobProgress, JobState, JobStatus
from service.settings import Settings

logger = logging.getLogger(__name__)

_CANCEL_KEY = "gwm:cancel:{}"
_SUBMIT_LOCK = "gwm:submit:{}"
#: RQ's timeout of a job comes this long after the job's own (which it checks itself).
RQ_TIMEOUT_GRACE_S = 60
#: Seconds the API waits for Redis before a request gets a 503: an unreachable host must not hang it.
REDIS_SOCKET_TIMEOUT_S = 5
_WAITING = {RQStatus.QUEUED, RQStatus.DEFERRED, RQStatus.SCHEDULED, RQStatus.CREATED}


def _cancel_key(job_id: str) -> str:
    return _CANCEL_KEY.format(job_id)


def execute(request: VideoJobRequest) -> dict[str, Any] | None:
    """The RQ job: run :func:`run_video_job` with meta-backed progress and a Redis cancel flag."""
    job = get_current_job()
    assert job is not None, "execute() runs inside an RQ worker"
    connection = job.connection

    progress_lost = False

    def progress(report: JobProgress) -> None:
        nonlocal progress_lost
        job.meta.update(report.model_dump())
        try:
            job.save_meta()
        except RedisError as exc:  # progress is for people; the work itself needs no Redis
            if not progress_lost:
                logger.warning("job %s: Redis unreachable, progress not saved until it is back: %s", job.id, exc)
            progress_lost = True
        else:
            if progress_lost:
                logger.info("job %s: Redis is back, progress saved again", job.id)
            progress_lost = False

    def should_cancel() -> bool:
        try:
            return bool(connection.exists(_cancel_key(job.id)))
        except RedisError:  # cannot tell; a cancel is seen once Redis answers again
            return False

    # An unexpected exception propagates with the upload still on disk: RQ retries the job while
    # retries are left, and discard_upload_if_final deletes it after the last attempt.
    try:
        result = run_video_job(request, WorkerConfig.from_settings(Settings()), progress, should_cancel)
    except JobCancelled:
        job.meta.update(outcome=JobState.CANCELLED.value)
        result = None
    except ServiceError as exc:
        job.meta.update(outcome=JobState.FAILED.value, error=exc.message)
        result = None
    else:
        job.meta.update(outcome=JobState.SUCCEEDED.value, timings=result["timings"])
    job.save_meta()
    request.discard_upload()  # after the outcome is stored: if Redis lost it, a retry needs the file
    return result


def discard_upload_if_final(job: Job, connection: Redis, exc_type: type[BaseException] | None = None,
                            *exc_info: Any) -> None:
    """RQ failure callback: delete the upload of a job that will not run again.

    RQ calls it after every failed attempt, before deciding on a retry (hence the
    retries check): for a job that raised, in the worker; for a job whose worker
    was killed, wherever the abandoned job is reaped. A job that RQ timed out is
    final: a second attempt would take as long.
    """
    if exc_type is not None and issubclass(exc_type, JobTimeoutException):
        job.retries_left = 0
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
        self._redis = Redis.from_url(settings.redis_url, socket_timeout=REDIS_SOCKET_TIMEOUT_S,
                                     socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S)
        self._queue = Queue(settings.queue_name, connection=self._redis)

    @property
    def queue(self) -> Queue:
        """The underlying RQ queue (workers listen on it)."""
        return self._queue

    def submit(self, job_id: str, request: VideoJobRequest) -> JobStatus:
        # under a Redis lock, since every API instance counts and fills the same queue
        lock = self._redis.lock(_SUBMIT_LOCK.format(self._settings.queue_name), timeout=REDIS_SOCKET_TIMEOUT_S,
                                blocking_timeout=REDIS_SOCKET_TIMEOUT_S)
        try:
            with lock:
                check_room(self._queue.count, self._settings)
                self._enqueue(job_id, request)
        except RedisError as exc:  # LockError included: no lock within the timeout
            raise Unavailable(f"job queue unreachable: {exc}") from exc
        return self.status(job_id)

    def _enqueue(self, job_id: str, request: VideoJobRequest) -> None:
        ttl, retries = self._settings.job_ttl_seconds, self._settings.job_retries
        self._queue.enqueue(
            execute,
            request,
            job_id=job_id,
            job_timeout=self._settings.job_timeout_seconds + RQ_TIMEOUT_GRACE_S,
            result_ttl=ttl,
            failure_ttl=ttl,
            retry=Retry(max=retries) if retries else None,
            on_failure=Callback(discard_upload_if_final),
            meta={"stage": "queued", "options": request.options(), "upload": request.video_path},
        )

    def status(self, job_id: str) -> JobStatus:
        job = self._fetch(job_id)
        rq_status = job.get_status(refresh=False)
        if rq_status == RQStatus.STARTED:
            self.reap()
            job = self._fetch(job_id)
            rq_status = job.get_status(refresh=False)
        meta = job.get_meta(refresh=False)
        state, error = self._state(job, rq_status, meta)
        return make_status(
            job_id,
            state,
            JobProgress.model_validate({name: meta[name] for name in JobProgress.model_fields if name in meta}),
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
        try:
            value = job.return_value() if state is JobState.SUCCEEDED else None
        except RedisError as exc:
            raise Unavailable(f"job queue unreachable: {exc}") from exc
        if value is None:
            raise Conflict(f"job {job_id} has no result; it is {state}")
        return value

    def cancel(self, job_id: str) -> JobStatus:
        job = self._fetch(job_id)
        status = job.get_status(refresh=False)
        try:
            if status in _WAITING:
                job.cancel()
                job.meta.update(outcome=JobState.CANCELLED.value)
                job.save_meta()
                job.cleanup(ttl=self._settings.job_ttl_seconds)
                _discard_upload(job)
            elif status == RQStatus.STARTED:
                self._redis.set(_cancel_key(job_id), 1, ex=self._settings.job_timeout_seconds)
        except InvalidJobOperation:  # another DELETE cancelled it first: the same answer as that one's
            pass
        except RedisError as exc:
            raise Unavailable(f"job queue unreachable: {exc}") from exc
        return self.status(job_id)

    def job_state(self, job_id: str) -> JobState | None:
        try:
            job = self._fetch(job_id)
        except NotFound:
            return None
        return self._state(job, job.get_status(refresh=False), job.get_meta(refresh=False))[0]

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

    def reap(self) -> None:
        """RQ's abandoned-job handling: retry or fail started jobs whose worker stopped heartbeating.

        It runs on the maintenance thread and in request threads, where RQ's default SIGALRM
        timeout around the failure callback cannot be set up (signals are the main thread's):
        hence the timer-based one.
        """
        try:
            StartedJobRegistry(queue=self._queue, death_penalty_class=TimerDeathPenalty).cleanup()
        except RedisError as exc:
            raise Unavailable(f"job queue unreachable: {exc}") from exc

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
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
