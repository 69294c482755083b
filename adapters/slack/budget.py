"""Slack's rate limits as one budget per adapter, shared by every answer in flight.

Slack counts each Web API method per app and workspace, in tiers (Tier 2: 20+ a minute, Tier 3: 50+, Tier 4:
100+; ``chat.postMessage`` about one a second per channel). An answer pacing itself alone is not enough: twenty
answers streaming at once would send twenty times the appends and meet 429s. So every ``SlackReply`` of an
adapter draws from this budget before each call; a call that has no slot waits for one (the reply keeps
coalescing text meanwhile) instead of meeting a 429.

A bucket allows at most its limit in any window, counted from the send times of its calls, over a window 5%
longer than Slack's so network jitter can't push a call into Slack's previous window. Within that it spaces
calls evenly after a short burst (the generic cell rate algorithm), so twenty streams share Tier 4 smoothly
instead of spending a minute's budget at once and then all stalling together.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

WINDOW_MARGIN = 1.05  # our window is this much longer than Slack's: jitter between our clock and its arrival stamps
PRUNE_ABOVE = 512  # buckets kept before idle ones are dropped (postMessage has one per channel)


@dataclass(frozen=True, slots=True)
class Limit:
    """Calls per window Slack allows for one method, how many may go back to back, and whether Slack counts
    the method per channel rather than per workspace."""

    per_window: int
    burst: int
    per_channel: bool = False


# Methods an answer calls, with Slack's published tiers (per minute by default). Starting and stopping a stream
# happens once per message, so a crowd may start at once (the whole tier as burst); appends and edits are the
# steady flow, spaced evenly.
LIMITS: Mapping[str, Limit] = MappingProxyType(
    {
        "chat.startStream": Limit(20, 20),  # Tier 2
        "chat.stopStream": Limit(20, 20),  # Tier 2
        "chat.appendStream": Limit(100, 10),  # Tier 4
        "chat.update": Limit(50, 5),  # Tier 3
        "chat.delete": Limit(50, 5),  # Tier 3
        "chat.postMessage": Limit(60, 5, per_channel=True),  # special: about 1/s per channel, short bursts
        "agents.sessions.setStatus": Limit(50, 50),  # Tier 3; once when a turn starts (and ends, off a stream)
    }
)


class _Bucket:
    """At most ``limit`` calls in any ``window``, spaced ``window / limit`` apart after ``burst`` calls."""

    def __init__(self, limit: Limit, window: float) -> None:
        self._limit = max(1, limit.per_window)
        self._window = window * WINDOW_MARGIN
        self._interval = self._window / self._limit
        self._tolerance = (min(max(1, limit.burst), self._limit) - 1) * self._interval
        self._sent: deque[float] = deque()
        self._next = float("-inf")  # the cell rate algorithm's theoretical arrival time of the next call
        self._lock = asyncio.Lock()  # waiters queue in order, so no answer starves

    def _delay(self, now: float) -> float:
        while self._sent and now - self._sent[0] >= self._window:
            self._sent.popleft()
        full = self._sent[0] + self._window - now if len(self._sent) >= self._limit else 0.0
        paced = self._next - self._tolerance - now
        return max(0.0, full, paced)

    def _take(self, now: float) -> None:
        self._sent.append(now)
        self._next = max(self._next, now) + self._interval

    def idle(self, now: float) -> bool:
        return not self._lock.locked() and self._delay(now) == 0.0 and not self._sent

    def available(self, now: float) -> bool:
        return not self._lock.locked() and self._delay(now) == 0.0

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._lock:  # only the holder takes, so the delay can't grow while it sleeps
            delay = self._delay(loop.time())
            if delay > 0:
                await asyncio.sleep(delay)  # cancelled here, nothing was taken
            self._take(loop.time())


class SlackBudget:
    """Every bucket of one adapter: one per workspace and method (and channel, for ``chat.postMessage``).
    ``window`` is Slack's counting window, a minute; tests and benches against a fake shrink it."""

    def __init__(self, *, window: float = 60.0, limits: Mapping[str, Limit] = LIMITS) -> None:
        self._window = window
        self._limits = limits
        self._buckets: dict[tuple[str, str, str], _Bucket] = {}

    def workspace(self, team_id: str) -> WorkspaceBudget:
        return WorkspaceBudget(self, team_id)

    def bucket(self, team_id: str, method: str, channel: str) -> _Bucket | None:
        """The bucket a call draws from, or None for a method without a budget here."""
        limit = self._limits.get(method)
        if limit is None:
            return None
        key = (team_id, method, channel if limit.per_channel else "")
        bucket = self._buckets.get(key)
        if bucket is None:
            self._prune()
            bucket = self._buckets[key] = _Bucket(limit, self._window)
        return bucket

    def _prune(self) -> None:
        if len(self._buckets) < PRUNE_ABOVE:
            return
        now = asyncio.get_running_loop().time()
        for key in [key for key, bucket in self._buckets.items() if bucket.idle(now)]:
            del self._buckets[key]


class WorkspaceBudget:
    """One workspace's share of the budget, as a reply sees it."""

    def __init__(self, budget: SlackBudget, team_id: str) -> None:
        self._budget = budget
        self._team_id = team_id

    async def acquire(self, method: str, *, channel: str) -> None:
        """Wait until one more ``method`` call fits Slack's limit, and count it."""
        bucket = self._budget.bucket(self._team_id, method, channel)
        if bucket is not None:
            await bucket.acquire()

    def available(self, method: str, *, channel: str) -> bool:
        """Whether a ``method`` call would go at once (nothing counted)."""
        bucket = self._budget.bucket(self._team_id, method, channel)
        return bucket is None or bucket.available(asyncio.get_running_loop().time())
