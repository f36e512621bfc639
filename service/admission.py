"""Admission of /segment requests by the pixels they will decode, first come first served.

A request's memory grows with its pixels (decoded RGB, one full-size mask at a time, the overlay),
not with its size on the wire: a 38 kB PNG can hold 40 MP. So the server admits pixels, not
requests: ``capacity`` pixels may be in flight at once; a request that does not fit waits, in
arrival order, for at most ``max_wait_s`` and is then refused with a 429 and ``Retry-After``.
Requests wait in order so a large one is not starved by a stream of small ones.

Everything runs on the event loop's thread, so no lock is needed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from service.errors import TooManyRequests


class PixelBudget:
    """A weighted, FIFO semaphore over pixels."""

    def __init__(self, capacity: int, max_wait_s: float, retry_after_s: int) -> None:
        self.capacity = capacity
        self._available = capacity
        self._max_wait_s = max_wait_s
        self._retry_after_s = retry_after_s
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def in_flight(self) -> int:
        """Pixels held by admitted requests now."""
        return self.capacity - self._available

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Hold ``pixels`` (at most the whole capacity) for the ``with`` block; raises TooManyRequests."""
        pixels = min(pixels, self.capacity)
        await self._acquire(pixels)
        try:
            yield
        finally:
            self._release(pixels)

    async def _acquire(self, pixels: int) -> None:
        if not self._waiters and pixels <= self._available:
            self._available -= pixels
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (pixels, granted)
        self._waiters.append(entry)
        try:
            await asyncio.wait({granted}, timeout=self._max_wait_s)
        except BaseException:  # the client went away while waiting
            self._withdraw(entry)
            raise
        if not granted.done():
            self._withdraw(entry)
            raise TooManyRequests(
                f"the server is decoding {self.in_flight} pixels and this request needs {pixels}; "
                f"it waited {self._max_wait_s:g} s for room",
                retry_after=self._retry_after_s,
            )

    def _withdraw(self, entry: tuple[int, asyncio.Future[None]]) -> None:
        """Leave the line; pixels granted meanwhile go back, and those behind may now fit."""
        pixels, granted = entry
        if granted.done():
            self._release(pixels)
            return
        granted.cancel()
        self._waiters.remove(entry)
        self._grant()

    def _release(self, pixels: int) -> None:
        self._available += pixels
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._available:
            pixels, granted = self._waiters.popleft()
            self._available -= pixels
            granted.set_result(None)
