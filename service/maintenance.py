"""The service's periodic chores, on a timer: nothing waits for the next request to happen.

* jobs of dead workers are requeued or failed (:meth:`JobQueue.reap`), so a SIGKILLed worker's
  job leaves ``running`` within a heartbeat TTL plus one interval;
* files of jobs that are gone or finished are deleted: uploads of jobs that will not read them
  again (a lost Redis, a worker killed twice, an API crash between upload and submit) and
  packaged results of expired jobs.

A chore that fails (Redis down) is logged and tried again at the next tick.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from service.errors import ServiceError
from service.queue.base import JobQueue
from service.schemas import JobState
from service.settings import Settings

logger = logging.getLogger(__name__)

#: Files younger than this are left alone: an upload is on disk a moment before its job is queued.
ORPHAN_GRACE_SECONDS = 60.0


def job_id_of(path: Path) -> str:
    """The job a data file belongs to: its name up to the first dot (``<id>.mp4``, ``<id>.<n>.part``)."""
    return path.name.split(".", 1)[0]


def sweep_orphans(directory: Path, keep: Callable[[str], bool], grace_s: float = ORPHAN_GRACE_SECONDS) -> int:
    """Delete files older than ``grace_s`` whose job ``keep`` rejects; returns how many went."""
    cutoff = time.time() - grace_s
    removed = 0
    for path in directory.iterdir():
        try:
            if path.is_file() and path.stat().st_mtime < cutoff and not keep(job_id_of(path)):
                path.unlink()
                removed += 1
        except FileNotFoundError:  # its job finished and removed it meanwhile
            continue
    if removed:
        logger.info("removed %d files of finished or unknown jobs from %s", removed, directory)
    return removed


class Maintenance:
    """A daemon thread running :meth:`run_once` now and then every ``maintenance_interval_seconds``."""

    def __init__(self, settings: Settings, queue: JobQueue) -> None:
        self._settings = settings
        self._queue = queue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gwm-maintenance", daemon=True)

    def start(self) -> None:
        """Begin the timer."""
        self._thread.start()

    def stop(self) -> None:
        """End the timer; waits for a chore in progress."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def run_once(self) -> None:
        """Every chore once; a failing chore does not keep the others from running."""
        chores: tuple[tuple[str, Callable[[], object]], ...] = (
            ("reap jobs of dead workers", self._queue.reap),
            ("sweep uploads", lambda: sweep_orphans(self._settings.upload_dir, self._upload_needed)),
            ("sweep results", lambda: sweep_orphans(self._settings.result_dir, self._result_needed)),
        )
        for name, chore in chores:
            try:
                chore()
            except ServiceError as exc:  # e.g. Redis unreachable: try again at the next tick
                logger.warning("maintenance: could not %s: %s", name, exc.message)
            except Exception:  # the timer must outlive any one failure
                logger.exception("maintenance: could not %s", name)

    def _upload_needed(self, job_id: str) -> bool:
        return self._queue.job_state(job_id) in {JobState.QUEUED, JobState.RUNNING}

    def _result_needed(self, job_id: str) -> bool:
        return self._queue.job_state(job_id) is JobState.SUCCEEDED

    def _loop(self) -> None:
        interval = self._settings.maintenance_interval_seconds
        while True:
            self.run_once()
            if self._stop.wait(interval):
                return
