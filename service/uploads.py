"""Moving uploaded videos to the data directory, within a byte limit, and sweeping leftovers.

Files normally leave with their job (see ``service.queue``); the maintenance sweep
(:mod:`service.maintenance`) catches uploads whose job will never run again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import UploadFile

from service.errors import BadInput, TooLarge

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_SAFE_SUFFIXES = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".m4v"})


async def save_upload(upload: UploadFile, directory: Path, stem: str, max_bytes: int) -> Path:
    """Copy an upload to ``directory/<stem><suffix>`` in chunks; removes the partial file on error."""
    suffix = Path(upload.filename or "").suffix.lower()
    target = directory / f"{stem}{suffix if suffix in _SAFE_SUFFIXES else '.bin'}"
    written = 0
    try:
        with target.open("wb") as out:
            while chunk := await upload.read(_CHUNK):
                written += len(chunk)
                if written > max_bytes:
                    raise TooLarge(f"upload exceeds the limit of {max_bytes} bytes")
                out.write(chunk)
        if written == 0:
            raise BadInput("the uploaded file is empty")
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return target

