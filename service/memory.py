"""Giving freed memory back to the operating system after a large request.

glibc's allocator keeps freed memory in its per-thread arenas for reuse, and after it has handed
out and freed a large block it raises its threshold for using fresh pages (up to 32 MB), so the
16 MB blocks Pillow decodes into and NumPy's mid-sized arrays land in those arenas. After one
40 MP request the server would keep most of its peak resident for good. ``malloc_trim`` returns
the free pages of every arena; elsewhere (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from functools import cache

logger = logging.getLogger(__name__)

#: Requests of at least this many pixels trim afterwards; smaller ones reuse what is cached.
TRIM_AFTER_PIXELS = 8_000_000


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        logger.info("malloc_trim not available (not glibc): freed memory stays with the allocator")
        return None


def release_free_memory() -> None:
    """Hand the allocator's free pages back to the operating system, where glibc allows it."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
