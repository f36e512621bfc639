"""Job queues: one interface, an in-process backend and an RQ/Redis backend."""

from __future__ import annotations

from service.queue.base import JobQueue
from service.settings import Settings

__all__ = ["JobQueue", "create_queue"]


def create_queue(settings: Settings) -> JobQueue:
    """The backend selected by ``GWM_QUEUE_MODE``."""
    if settings.queue_mode == "redis":
        from service.queue.rq_backend import RQJobQueue

        return RQJobQueue(settings)
    from service.queue.embedded import EmbeddedJobQueue

    return EmbeddedJobQueue(settings)
