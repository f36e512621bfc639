"""Moving uploaded videos to the data directory, within a byte limit per upload and for all of them.

Files normally leave with their job (see ``service.queue``); the maintenance sweep
(:mod:`service.maintenance`) catches uploads whose job will never run again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import UploadFile

from service.errors import BadInput, TooLarge, Unavailable

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_SAFE_SUFFIXES = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".m4v"})


def directory_bytes(directory: Path) -> int:
    """Bytes of the files in ``directory`` now, partial uploads included."""
    total = 0
    for path in directory.iterdir():
        try:
            total += path.stat().st_size
        except FileNotFoundError:  # a job finished and removed it meanwhile
            continue
    return total


async def save_upload(
    upload: UploadFile, directory: Path, stem: str, max_bytes: int, max_directory_bytes: int, retry_after: int
) -> Path:
    """Copy an upload to ``directory/<stem><suffix>`` in chunks; removes the partial file on error.

    413 beyond ``max_bytes`` for this upload; 503 with ``Retry-After`` when the directory would
    hold more than ``max_directory_bytes``. The directory is measured before every chunk, so
    uploads arriving together see each other's partial files and cannot overshoot by more than a
    chunk each.
    """
    suffix = Path(upload.filename or "").suffix.lower()
    target = directory / f"{stem}{suffix if suffix in _SAFE_SUFFIXES else '.bin'}"
    written = 0
    try:
        with target.open("wb") as out:
            while chunk := await upload.read(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise TooLarge(f"upload exceeds the limit of {max_bytes} bytes")
                if directory_bytes(directory) + len(chunk) > max_directory_bytes:
                    raise Unavailable(
                        f"no room for this upload: videos waiting for workers take up to {max_directory_bytes} bytes",
                        retry_after=retry_after,
                    )
                out.write(chunk)
        if written == 0:
            raise BadInput("the uploaded file is empty")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target
