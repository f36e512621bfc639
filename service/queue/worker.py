"""``gwm worker``: an RQ worker that heartbeats while a job runs and outlives Redis outages.

RQ's ``SimpleWorker`` runs a job in its own process (the CUDA context and loaded code survive
between jobs), but then nothing refreshes the job's entry in the ``StartedJobRegistry`` while it
runs: RQ registers it for the whole job timeout plus 60 s, so a SIGKILLed worker's job looked
``running`` for half an hour. :class:`HeartbeatWorker` registers it for three heartbeats and
refreshes it from a thread every ``GWM_JOB_HEARTBEAT_SECONDS``.

RQ's work loop gives up when Redis goes away at the wrong moment (mid-job, or while it cleans its
registries). :func:`run_worker` starts a new worker, with exponential back-off, until it is
asked to stop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Self

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.job import Job
from rq.worker import WorkerStatus

from service.settings import Settings

logger = logging.getLogger(__name__)

#: Missed heartbeats after which a job's worker is presumed dead.
MISSED_BEATS = 3
_BACKOFF_FIRST_S = 1.0
_BACKOFF_MAX_S = 30.0
#: A worker that lived this long was healthy: the next restart starts the back-off over.
_HEALTHY_AFTER_S = 60.0


class _Heartbeat:
    """Calls ``beat`` every ``interval_s`` on a daemon thread for the duration of a ``with`` block."""

    def __init__(self, beat: Callable[[], None], interval_s: float) -> None:
        self._beat = beat
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gwm-job-heartbeat", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._beat()
            except RedisError as exc:  # the job goes on; if Redis stays away, its entry expires
                logger.warning("job heartbeat not sent: %s", exc)


class HeartbeatWorker(SimpleWorker):
    """A ``SimpleWorker`` whose running job's registry entry lives three heartbeats, refreshed by a thread."""

    def __init__(self, *args: Any, heartbeat_seconds: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heartbeat_seconds = heartbeat_seconds
        self.stop_requested = False

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """How long a job's registry entry lives without a new heartbeat."""
        return MISSED_BEATS * self.heartbeat_seconds

    def execute_job(self, job: Job, queue: Queue) -> None:
        """Run the job in this process, heartbeating meanwhile."""
        execution = self.prepare_execution(job)
        with _Heartbeat(lambda: self.maintain_heartbeats(job, execution), self.heartbeat_seconds):
            self.perform_job(job, queue, execution)
        self.set_state(WorkerStatus.IDLE)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: remember that the stop was asked for, so :func:`run_worker` does not restart."""
        self.stop_requested = True
        super().request_stop(signum, frame)


def build_worker(settings: Settings) -> HeartbeatWorker:
    """A worker on a fresh Redis connection; RQ's own maintenance runs as often as the API's."""
    connection = Redis.from_url(settings.redis_url, socket_connect_timeout=5)
    return HeartbeatWorker(
        [Queue(settings.queue_name, connection=connection)],
        connection=connection,
        heartbeat_seconds=settings.job_heartbeat_seconds,
        maintenance_interval=max(1, round(settings.maintenance_interval_seconds)),
    )


def run_worker(settings: Settings, burst: bool = False, log_level: str = "INFO") -> int:
    """Work until stopped (or, with ``burst``, until the queue is empty), restarting after Redis losses."""
    delay = _BACKOFF_FIRST_S
    while True:
        started = time.monotonic()
        worker: HeartbeatWorker | None = None
        try:
            worker = build_worker(settings)  # registers a client name: needs Redis already
            worker.work(burst=burst, logging_level=log_level)
            if burst:
                return 0
        except RedisError as exc:  # RQ's registration and teardown need Redis too
            logger.warning("worker lost Redis: %s", exc)
        except StopRequested:
            return 0
        finally:
            if worker is not None:
                _dispose(worker)
        if time.monotonic() - started > _HEALTHY_AFTER_S:
            delay = _BACKOFF_FIRST_S
        if (worker is not None and worker.stop_requested) or _stopped_while_waiting(worker, delay):
            return 0
        delay = min(delay * 2, _BACKOFF_MAX_S)


def _dispose(worker: HeartbeatWorker) -> None:
    """Stop what a worker left running: RQ's teardown, which stops its pub/sub thread, needs Redis."""
    pubsub_thread = worker.pubsub_thread
    if pubsub_thread is not None and pubsub_thread.is_alive():
        pubsub_thread.stop()
        pubsub_thread.join(timeout=2)
    worker.connection.close()


def _stopped_while_waiting(worker: HeartbeatWorker | None, delay: float) -> bool:
    """Wait ``delay`` seconds before the next worker starts; True if a stop was asked for meanwhile."""
    logger.warning("worker stopped without being asked to (Redis lost?); starting a new one in %.0f s", delay)
    try:
        time.sleep(delay)
    except StopRequested:  # RQ's signal handler, still installed, raises this where we are
        return True
    return worker is not None and worker.stop_requested
