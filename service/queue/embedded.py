"""In-process job queue: one worker thread, state in memory, TTL expiry on access.

Used by ``gwm serve`` without Redis and by the tests. It follows the RQ
backend's state model; the differences are that state dies with the process,
a timed-out job is stopped cooperatively (a thread cannot be killed) and a
job runs once (no retries), so its upload goes when it ends.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from service.errors import Conflict, NotFound, ServiceError
from service.jobs import JobCancelled, VideoJobRequest, WorkerConfig, run_video_job
from service.queue.base import JobQueue, check_room, make_status
from service.schemas import JobProgress, JobState, JobStatus
from service.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class _Record:
    request: VideoJobRequest
    state: JobState = JobState.QUEUED
    progress: JobProgress = field(default_factory=lambda: JobProgress(stage="queued"))
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


class EmbeddedJobQueue(JobQueue):
    """A single background thread runs jobs one at a time, in submission order."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()
        self._pending: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="gwm-embedded-worker", daemon=True)
        self._thread.start()

    def submit(self, job_id: str, request: VideoJobRequest) -> JobStatus:
        with self._lock:
            check_room(self._waiting(), self._settings)
            self._records[job_id] = _Record(request=request)
        self._pending.put(job_id)
        return self.status(job_id)

    def status(self, job_id: str) -> JobStatus:
        with self._lock:
            record = self._get(job_id)
            return make_status(
                job_id,
                record.state,
                record.progress.model_copy(),
                options=record.request.options(),
                created_at=record.created_at,
                started_at=record.started_at,
                ended_at=record.ended_at,
                timings=dict((record.result or {}).get("timings", {})),
                error=record.error,
            )

    def result(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            record = self._get(job_id)
            if record.state is not JobState.SUCCEEDED or record.result is None:
                raise Conflict(f"job {job_id} has no result; it is {record.state}")
            return record.result

    def cancel(self, job_id: str) -> JobStatus:
        with self._lock:
            record = self._get(job_id)
            record.cancel.set()
            if record.state is JobState.QUEUED:
                self._end(record, JobState.CANCELLED, None)
                record.request.discard_upload()
        return self.status(job_id)

    def job_state(self, job_id: str) -> JobState | None:
        with self._lock:
            self._purge_expired()
            record = self._records.get(job_id)
            return None if record is None else record.state

    def depth(self) -> int:
        with self._lock:
            return self._waiting()

    def _waiting(self) -> int:
        return sum(record.state is JobState.QUEUED for record in self._records.values())

    def ping(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self._pending.put(None)
        self._thread.join(timeout=5)

    def _get(self, job_id: str) -> _Record:
        """Look a job up (lock held), dropping every record whose TTL has run out first."""
        self._purge_expired()
        try:
            return self._records[job_id]
        except KeyError:
            raise NotFound(f"no job {job_id} (unknown, or expired after {self._settings.job_ttl_seconds} s)") from None

    def _purge_expired(self) -> None:
        """Drop every ended record older than the job TTL (lock held)."""
        now = time.time()
        ttl = self._settings.job_ttl_seconds
        expired = [jid for jid, r in self._records.items() if r.ended_at is not None and now - r.ended_at > ttl]
        for jid in expired:
            del self._records[jid]

    def _end(self, record: _Record, state: JobState, error: str | None) -> None:
        record.state, record.error, record.ended_at = state, error, time.time()

    def _work(self) -> None:
        config = WorkerConfig.from_settings(self._settings)
        while (job_id := self._pending.get()) is not None:
            with self._lock:
                record = self._records.get(job_id)
                if record is None or record.state is not JobState.QUEUED:
                    continue
                record.state, record.started_at = JobState.RUNNING, time.time()
            self._run(record, config)

    def _run(self, record: _Record, config: WorkerConfig) -> None:
        def progress(report: JobProgress) -> None:
            record.progress = report

        try:
            result = run_video_job(record.request, config, progress, record.cancel.is_set)
        except JobCancelled:
            outcome = (JobState.CANCELLED, None)
        except ServiceError as exc:  # bad input, or the job's timeout (JobTimedOut)
            outcome = (JobState.FAILED, exc.message)
        except Exception as exc:  # a job must never take the worker thread down
            logger.exception("video job failed")
            outcome = (JobState.FAILED, f"internal error: {type(exc).__name__}: {exc}")
        else:
            record.result = result
            outcome = (JobState.SUCCEEDED, None)
        finally:
            record.request.discard_upload()
        with self._lock:
            self._end(record, *outcome)
