"""The job queue interface shared by every backend; the job states and statuses it returns are
service/schemas.py."""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from typing import Any

from service.errors import BadInput, TooManyRequests, redact_paths
from service.jobs import VideoJobRequest
from service.schemas import JobProgress, JobState, JobStatus
from service.settings import Settings

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


def new_job_id() -> str:
    """A random, URL- and path-safe job id."""
    return uuid.uuid4().hex


def check_job_id(job_id: str) -> str:
    """Reject anything that is not an id we could have made (e.g. ``../../etc``)."""
    if not _JOB_ID.fullmatch(job_id):
        raise BadInput("malformed job id: expected 32 lowercase hex characters")
    return job_id


def check_room(waiting: int, settings: Settings) -> None:
    """Raise TooManyRequests (with Retry-After) when ``waiting`` jobs fill ``GWM_MAX_QUEUED_JOBS``."""
    if waiting >= settings.max_queued_jobs:
        raise TooManyRequests(f"{waiting} video jobs are waiting for a worker; the limit is {settings.max_queued_jobs}",
                              retry_after=settings.retry_after_seconds)


def make_status(
    job_id: str, state: JobState, progress: JobProgress, error: str | None = None, **fields: Any
) -> JobStatus:
    """Build a status with the URLs filled in from the id.

    A queued job reports stage ``queued`` whatever its last run wrote (a requeued job's progress
    is from the attempt that died), and an error never shows the server's paths.
    """
    url = f"/jobs/{job_id}"
    result_url = f"{url}/result" if state is JobState.SUCCEEDED else None
    if state is JobState.QUEUED:
        progress = JobProgress(stage="queued")
    return JobStatus(
        id=job_id,
        state=state,
        progress=progress,
        url=url,
        result_url=result_url,
        error=redact_paths(error) if error else error,
        **fields,
    )


class JobQueue(ABC):
    """Where the API puts video jobs and reads their state and results back."""

    @abstractmethod
    def submit(self, job_id: str, request: VideoJobRequest) -> JobStatus:
        """Queue a job; the uploaded file in ``request`` now belongs to the job. Raises
        TooManyRequests when ``GWM_MAX_QUEUED_JOBS`` jobs are already waiting, checked and queued
        as one step, so concurrent submits cannot overshoot the limit."""

    @abstractmethod
    def status(self, job_id: str) -> JobStatus:
        """Current state; raises NotFound for unknown or expired jobs."""

    @abstractmethod
    def result(self, job_id: str) -> dict[str, Any]:
        """Result of a succeeded job; raises NotFound, or Conflict if it has not succeeded."""

    @abstractmethod
    def cancel(self, job_id: str) -> JobStatus:
        """Cancel a queued job now, or ask a running one to stop; terminal jobs are left as they are."""

    @abstractmethod
    def job_state(self, job_id: str) -> JobState | None:
        """The job's state, or None when it is unknown or expired (cheap: no reaping, no progress)."""

    @abstractmethod
    def depth(self) -> int:
        """Jobs waiting for a worker."""

    def reap(self) -> None:
        """Requeue or fail jobs whose worker died; run on a timer. Nothing to do where workers cannot die alone."""

    @abstractmethod
    def ping(self) -> bool:
        """Whether the queue can accept jobs now."""

    @abstractmethod
    def close(self) -> None:
        """Release threads and connections."""
