"""Discord's rate limits, kept on our side: a per-channel sliding-window limiter for message sends and edits, and
the bot-wide request budget for the global limit (``RequestBudget``, below).

Discord publishes no per-route numbers, but in practice a channel takes about 5 sends+edits per 5 seconds,
shared between the two routes, so discord.py's per-route buckets cannot see it coming. Every write of the
adapter to a channel goes through one ``ChannelThrottle`` owned by the adapter instance.

A write counts from the moment it *finished*: Discord stamps it somewhere between our send and its answer, so
timing from the start could let the next window open a little before Discord's does and earn a 429.
"""

from __future__ import annotations

import asyncio
import enum
import heapq
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any


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


class Priority(enum.IntEnum):
    """Who goes first when the bot-wide budget is short: a lower value is served first."""

    POST = 0  # a new message: the first words of an answer are what a user waits for
    OTHER = 1  # a thread to answer in, a channel lookup, anything unclassified
    EDIT = 2  # more text in a message already shown (edits coalesce, so waiting loses nothing)
    DEFERRED = 3  # reactions: wait until the budget has room to spare
    OPTIONAL = 4  # the typing indicator: dropped (``OverBudget``) unless the budget has room to spare now


class OverBudget(Exception):
    """An optional request (typing) was dropped: the bot-wide budget is needed for answer text."""


class RequestBudget:
    """The bot-wide budget for Discord's global limit (50 requests per second per bot, whatever the route).

    ``ChannelThrottle`` keeps one channel under its limit; many answers at once (a burst of mentions) can still
    break the global one, and Discord then answers 429 ``global`` and makes the whole bot wait. Every REST request
    of the adapter's client takes a slot here first (``budget_requests``). When slots are short they go by
    ``Priority``, first come first served within one: answer text first, typing dropped, reactions deferred.
    A request holds its slot from start to finish, then for ``window`` seconds (as the channel throttle: Discord
    counts it somewhere in between), so at most ``limit`` requests reach Discord within any ``window``.
    Owned by the adapter instance; waiting requests are woken by a timer or when a request finishes.
    """

    def __init__(
        self, limit: int, window: float, *, spare: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("the budget needs at least one request per positive window")
        self.limit = limit
        self.window = window
        # Slots kept free for answer text: deferred and optional requests only run below limit − spare.
        self.spare = max(1, limit // 5) if spare is None else max(0, min(spare, limit - 1))
        self._clock = clock
        self._cells: list[list[float]] = []  # one mutable [finish time] per request; inf while it runs
        self._queue: list[tuple[int, int, asyncio.Future[list[float]]]] = []  # heap: (priority, order, waiter)
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self.dropped = 0  # optional requests dropped so far (for logs and tests)

    def used(self) -> int:
        """Requests running or finished within the last ``window`` seconds."""
        now = self._clock()
        self._cells[:] = [cell for cell in self._cells if now - cell[0] < self.window]
        return len(self._cells)

    def _room(self, priority: Priority) -> bool:
        ceiling = self.limit - self.spare if priority >= Priority.DEFERRED else self.limit
        return self.used() < ceiling

    @property
    def pressed(self) -> bool:
        """True when requests are waiting or the spare slots are in use: optional work should hold back."""
        return bool(self._queue) or not self._room(Priority.DEFERRED)

    async def acquire(self, priority: Priority) -> list[float]:
        """A slot for one request (hand it back with ``release``); an optional request raises ``OverBudget``
        instead of waiting."""
        if not self._queue and self._room(priority):
            return self._take()
        if priority is Priority.OPTIONAL:
            self.dropped += 1
            raise OverBudget("the request budget is needed for answers")
        waiter: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (int(priority), next(self._order), waiter))
        self._serve()
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # granted just as the caller gave up: give the slot back
            raise

    def release(self, cell: list[float]) -> None:
        """The request has finished: its slot counts from now for one window."""
        cell[0] = self._clock()
        self._serve()

    @asynccontextmanager
    async def slot(self, priority: Priority) -> AsyncIterator[None]:
        cell = await self.acquire(priority)
        try:
            yield
        finally:
            self.release(cell)

    def _take(self) -> list[float]:
        cell = [math.inf]
        self._cells.append(cell)
        return cell

    def _serve(self) -> None:
        """Grant waiting requests in priority order while there is room; then set a timer for the next slot."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._queue:
            priority, _, waiter = self._queue[0]
            if waiter.done():  # its caller gave up
                heapq.heappop(self._queue)
                continue
            if not self._room(Priority(priority)):
                break
            heapq.heappop(self._queue)
            waiter.set_result(self._take())
        if self._queue:
            delay = self._next_room(Priority(self._queue[0][0]))
            if delay is not None:  # None: every slot is held by a running request; its release will serve
                self._timer = asyncio.get_running_loop().call_later(delay, self._serve)

    def _next_room(self, priority: Priority) -> float | None:
        """Seconds until a request of this priority would fit, or None if only a running request can free one."""
        ceiling = self.limit - self.spare if priority >= Priority.DEFERRED else self.limit
        finished = sorted(cell[0] for cell in self._cells if cell[0] != math.inf)
        excess = len(self._cells) - ceiling + 1  # slots that must free up
        if excess <= 0:
            return 0.0
        if excess > len(finished):
            return None
        return max(0.0, finished[excess - 1] + self.window - self._clock())


def route_priority(method: str, path: str) -> Priority:
    """The priority of a discord.py route (its method and path template). Interaction responses are not under
    the global limit; discord.py sends them through its webhook adapter, so they never come here."""
    match method, path:
        case "POST", "/channels/{channel_id}/messages":
            return Priority.POST
        case "PATCH", "/channels/{channel_id}/messages/{message_id}":
            return Priority.EDIT
        case "PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me":
            return Priority.DEFERRED
        case "POST", "/channels/{channel_id}/typing":
            return Priority.OPTIONAL
    return Priority.OTHER


def budget_requests(http: Any, budget: RequestBudget) -> None:
    """Make every REST request of this discord.py ``HTTPClient`` take a slot of ``budget`` first.

    discord.py has no hook for this; its ``request`` method is wrapped on this one instance (the client's), so
    the library's own calls (thread creation, channel lookups, login) count too.
    """
    request = http.request

    async def budgeted(route: Any, **kwargs: Any) -> Any:
        async with budget.slot(route_priority(route.method, route.path)):
            return await request(route, **kwargs)

    http.request = budgeted
