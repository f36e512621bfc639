"""Packaged job results (ZIP of PNGs, MP4 of masks), built on the first GET and then served from disk.

A job's masks are stored as RLE; packaging them costs a PNG encode per frame or an H.264 encode.
Results do not change once a job has succeeded, so the package is written once to
``GWM_DATA_DIR/results/<job id>.<ext>`` (atomically, so concurrent first GETs are harmless) and
every later GET streams the file. Files of jobs that are gone are removed by the maintenance
sweep (:mod:`service.maintenance`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

from service.metrics import RESULT_CACHE


class ResultCache:
    """One file per (job, format) in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def get(self, job_id: str, extension: str, build: Callable[[], bytes]) -> Path:
        """The packaged result's path, building it with ``build`` if this is its first request."""
        target = self.directory / f"{job_id}.{extension}"
        if target.is_file():
            RESULT_CACHE.labels("hit").inc()
            return target
        partial = self.directory / f"{job_id}.{uuid.uuid4().hex}.part"
        try:
            partial.write_bytes(build())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        RESULT_CACHE.labels("miss").inc()
        return target
