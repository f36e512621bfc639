"""Who may share a data directory: Redis-mode servers with each other, an embedded server with no one.

An embedded server's jobs live in its memory, so its maintenance sweep deletes every upload it does not
know, and in a directory shared with another server that is the other's queued uploads (and a
Redis-mode server's sweep deletes an embedded server's, which Redis has never heard of). So a server
holds a lock on ``GWM_DATA_DIR/server.lock`` while it runs: shared in Redis mode (every job is in
Redis, so every sweep sees every job), exclusive in embedded mode. A server that cannot have its lock
refuses to start, naming the setting that fixes it, instead of losing jobs later.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from service.settings import Settings

logger = logging.getLogger(__name__)

LOCK_NAME = "server.lock"


class DataDirInUse(RuntimeError):
    """Another server holds the data directory in a way this one cannot share."""


@contextmanager
def hold_data_dir(settings: Settings) -> Iterator[None]:
    """Hold ``settings.data_dir`` for the life of a server; raises :class:`DataDirInUse` if it is taken."""
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    exclusive = settings.queue_mode == "embedded"
    with (settings.data_dir / LOCK_NAME).open("a") as handle:
        try:
            fcntl.flock(handle, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirInUse(
                f"another gwm server is using the data directory {settings.data_dir}"
                + (" (an embedded server's jobs live in its memory, so it cannot share one)" if exclusive else
                   " as an embedded server")
                + "; give this server its own GWM_DATA_DIR"
            ) from None
        logger.debug("holding %s (%s, pid %d)", settings.data_dir, "exclusive" if exclusive else "shared", os.getpid())
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
