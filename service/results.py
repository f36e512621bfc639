"""Packaged job results (ZIP of PNGs, MP4 of masks), built on the first GET and then served from disk.

A job's masks are stored as RLE; packaging them costs a PNG encode per frame or an H.264 encode.
Results do not change once a job has succeeded, so the package is written once to
``GWM_DATA_DIR/results/<job id>.<ext>`` (atomically, so concurrent first GETs are harmless) and
every later GET streams the file. Files of jobs that are gone are removed by the maintenance
sweep (:mod:`service.maintenance`).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from service.metrics import RESULT_CACHE


class ResultCache:
    """One file per (job, format) in ``directory``.

    In one process, concurrent first requests of one package wait for a single build (each build
    holds the job's masks one at a time, and its package, in memory); across processes sharing the
    directory the atomic rename keeps any duplicate build harmless.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def get(self, job_id: str, extension: str, build: Callable[[], bytes]) -> Path:
        """The packaged result's path, building it with ``build`` if this is its first request."""
        target = self.directory / f"{job_id}.{extension}"
        if target.is_file():
            RESULT_CACHE.labels("hit").inc()
            return target
        with self._locks_lock:
            lock = self._locks.setdefault(target.name, threading.Lock())
        try:
            with lock:
                if target.is_file():  # built while this request waited
                    RESULT_CACHE.labels("hit").inc()
                    return target
                partial = self.directory / f"{job_id}.{uuid.uuid4().hex}.part"
                try:
                    partial.write_bytes(build())
                    os.replace(partial, target)
                finally:
                    partial.unlink(missing_ok=True)
        finally:
            with self._locks_lock:  # later requests find the file; the lock has done its job
                self._locks.pop(target.name, None)
        RESULT_CACHE.labels("miss").inc()
        return target
