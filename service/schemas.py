"""The job API's response schemas: what ``POST /adapt-and-segment`` and ``/jobs/{id}`` return.

Pydantic models (and the state enum they carry) only, importing nothing from ``service``: the routes
(service/api/jobs.py) declare them as response models, the queue backends (service/queue/) build
them, and the job function (service/jobs.py) reports its progress in them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel

__all__ = ["JobProgress", "JobState", "JobStatus"]


class JobState(StrEnum):
    """Lifecycle of a job; the three last states are terminal."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether the job will not change any more."""
        return self in {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


class JobProgress(BaseModel):
    """Where a job is: e.g. stage ``adapting`` at step 7 of 20, 41.5 % of the whole job, about 30 s left.

    ``current``/``total`` count the stage's own units (frames decoded, frame pairs of flow, steps,
    frames segmented, masks encoded); ``percent`` covers the whole job, stages weighted by their
    expected share of its time (:data:`service.jobs.STAGE_SECONDS`), and never goes down; ``eta_s``
    is the time left at the pace so far, None until there is enough to go on.
    """

    stage: str
    current: int = 0
    total: int = 0
    percent: float = 0.0
    eta_s: float | None = None


class JobStatus(BaseModel):
    """Everything ``GET /jobs/{id}`` returns (timestamps are Unix seconds)."""

    id: str
    state: JobState
    progress: JobProgress
    options: dict[str, Any]
    created_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    timings: dict[str, float] = {}
    error: str | None = None
    url: str
    result_url: str | None = None
