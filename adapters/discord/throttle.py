"""A per-channel sliding-window limiter for message sends and edits.

Discord publishes no per-route numbers, but in practice a channel takes about 5 sends+edits per 5 seconds,
shared between the two routes, so discord.py's per-route buckets cannot see it coming. Every write of the
adapter to a channel goes through one ``ChannelThrottle`` owned by the adapter instance.

A write counts from the moment it *finished*: Discord stamps it somewhere between our send and its answer, so
timing from the start could let the next window open a little before Discord's does and earn a 429.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class ChannelThrottle:
    def __init__(self, max_writes: int, window_secs: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_writes < 1 or window_secs <= 0:
            raise ValueError("the throttle needs at least one write per positive window")
        self.max_writes = max_writes
        self.window = window_secs
        self._clock = clock
        self._stamps: dict[int, list[list[float]]] = {}  # per channel: one mutable [time] cell per write
        self._locks: dict[int, asyncio.Lock] = {}

    def delay(self, channel_id: int) -> float:
        """Seconds until this channel can take one more write (0 when it can now)."""
        cells = self._stamps.get(channel_id)
        if not cells:
            return 0.0
        now = self._clock()
        cells[:] = [cell for cell in cells if now - cell[0] < self.window]
        if len(cells) < self.max_writes:
            return 0.0
        times = sorted(cell[0] for cell in cells)
        return times[len(times) - self.max_writes] + self.window - now

    @asynccontextmanager
    async def write(self, channel_id: int) -> AsyncIterator[None]:
        """Wait for a free slot in this channel's window, hold it for one send or edit."""
        cell = await self._reserve(channel_id)
        try:
            yield
        finally:
            cell[0] = self._clock()

    async def _reserve(self, channel_id: int) -> list[float]:
        lock = self._locks.setdefault(channel_id, asyncio.Lock())
        async with lock:
            while (wait := self.delay(channel_id)) > 0:  # noqa: ASYNC110 (waiting for time, not an event)
                await asyncio.sleep(wait)
            cell = [self._clock()]
            self._stamps.setdefault(channel_id, []).append(cell)
        self._forget_idle()
        return cell

    def _forget_idle(self) -> None:
        """Drop channels with no write in the window, so a long-running bot doesn't grow without bound."""
        if len(self._stamps) < 256:
            return
        now = self._clock()
        for channel_id, cells in list(self._stamps.items()):
            lock = self._locks.get(channel_id)
            idle = all(now - cell[0] >= self.window for cell in cells)
            if idle and (lock is None or not lock.locked()):
                self._stamps.pop(channel_id, None)
                self._locks.pop(channel_id, None)
