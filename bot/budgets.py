"""Token budgets and the request rate: checked before a turn's model call, charged from the usage ledger after it.

Budgets are per user and per channel, per UTC day and per UTC month: the settings give the defaults, an admin's
override in the store wins for one user or channel (``budget …``; 0 there means no limit). What counts is the
ledger's input + output tokens since the period began, so nothing is charged twice and a restart forgets nothing.
A DM has no channel budget: its user's budget covers it.

Where the checks sit, and why:
- The request rate (``THREADLINE_USER_REQUESTS_PER_MINUTE``) is checked by the gateway before it accepts a message:
  a refused message is never queued. It is a token bucket per user kept in the store, so it holds across replicas
  and restarts (one short statement per message, only while the setting is on).
- Budgets are checked when a turn starts in its thread's lane, right before the engine runs. A thread's turns run
  one after another, so each sees the ledger with the turn before it charged; a check when messages arrive would
  let three messages queued together all pass.

The bound on overspending, within one process: turns of one user (or channel) in different threads run at once
only while there is room for all of them at the size of the largest response the user (or channel) had this
month; otherwise a turn waits for one in flight to end and is checked again against the ledger. A turn runs alone
when the size is not known yet (no response this month). So the spend passes a limit by at most one turn's worth,
as long as no response is larger than the largest before it (a larger one overspends by the difference).
Across replicas each process keeps its own turns in flight: a user whose threads run on P replicas at the same
moment can pass a limit by up to P turns' worth, or more while each replica sees room; the ledger stops every
replica's next turn once the limit is passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bot.errors import UserFacingError
from bot.settings import Settings
from bot.store import BudgetSpend, Store
from bot.types import IncomingMessage


class Scope(enum.StrEnum):
    USER = "user"
    CHANNEL = "channel"


class Period(enum.StrEnum):
    DAILY = "daily"
    MONTHLY = "monthly"


class OverBudget(UserFacingError):
    """A limit is reached: the message names it and when it resets; the turn makes no model call."""


@dataclass(frozen=True, slots=True)
class Window:
    """The UTC day and month a moment falls in."""

    day_start: datetime
    day_end: datetime
    month_start: datetime
    month_end: datetime

    @classmethod
    def at(cls, now: float) -> Window:
        moment = datetime.fromtimestamp(now, UTC)
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        month = day.replace(day=1)
        next_month = (month + timedelta(days=32)).replace(day=1)
        return cls(day, day + timedelta(days=1), month, next_month)

    def end(self, period: Period) -> datetime:
        return self.day_end if period is Period.DAILY else self.month_end


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit in force: ``tokens`` > 0; ``overridden`` when an admin set it (else it is the setting)."""

    scope: Scope
    subject: str
    period: Period
    tokens: int
    overridden: bool


def setting_for(settings: Settings, scope: Scope, period: Period) -> int:
    return int(getattr(settings, f"{scope.value}_{period.value}_tokens"))


async def limits_for(
    settings: Settings, store: Store, platform: str, *, user: str | None = None, channel: str | None = None
) -> list[Limit]:
    """The limits in force for a user and/or a channel (an override wins over the setting; 0 is no limit)."""
    overrides = {
        (o.scope, o.subject, o.period): o.tokens
        for o in await store.budget_overrides(platform, user=user, channel=channel)
    }
    limits: list[Limit] = []
    for scope, subject in ((Scope.USER, user), (Scope.CHANNEL, channel)):
        if subject is None:
            continue
        for period in Period:
            override = overrides.get((scope.value, subject, period.value))
            tokens = setting_for(settings, scope, period) if override is None else override
            if tokens > 0:
                limits.append(Limit(scope, subject, period, tokens, override is not None))
    return limits


def spent(spend: BudgetSpend, period: Period) -> int:
    return spend.day if period is Period.DAILY else spend.month


def reset_text(reset: datetime, now: float) -> str:
    """``2026-12-02 00:00 UTC (in 5 h 12 min)``."""
    left = max(0, math.ceil((reset.timestamp() - now) / 60))
    days, rest = divmod(left, 24 * 60)
    hours, minutes = divmod(rest, 60)
    parts = [f"{days} d"] if days else []
    parts += [f"{hours} h"] if hours or days else []
    parts += [f"{minutes} min"] if not days else []
    return f"{reset:%Y-%m-%d %H:%M} UTC (in {' '.join(parts)})"


def over_message(limit: Limit, used: int, window: Window, now: float) -> str:
    period = "today" if limit.period is Period.DAILY else "this month"
    who = "You have" if limit.scope is Scope.USER else "This channel has"
    whose = "your" if limit.scope is Scope.USER else "its"
    return (
        f"{who} reached {whose} {limit.period.value} limit of {limit.tokens:,} tokens ({used:,} used {period}). "
        f"It resets at {reset_text(window.end(limit.period), now)}."
    )


@dataclass(slots=True)
class _InFlight:
    """One user's or channel's turns in this process: those running, and those using this record (running or
    being checked). ``ended`` is replaced (after being set) each time a running turn ends."""

    running: int = 0
    holders: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class Budgets:
    """The checks before a turn (see the module's docstring). One per process, held by the turn handler."""

    def __init__(self, *, settings: Settings, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self._flights: dict[tuple[str, Scope, str], _InFlight] = {}

    async def rate_refusal(self, message: IncomingMessage) -> str | None:
        """Take one request from the sender's bucket: None when taken, else the line to say (nothing taken)."""
        per_minute = self.settings.user_requests_per_minute
        if per_minute <= 0:
            return None
        wait = await self.store.take_request(
            message.key.platform, message.user_id, per_minute=per_minute, now=self.clock()
        )
        if wait <= 0:
            return None
        return (
            f"You are sending messages faster than this bot allows ({per_minute:g} a minute). "
            f"Try again in {max(1, math.ceil(wait))} seconds."
        )

    def running(self, platform: str, scope: Scope, subject: str) -> int:
        """Turns of this user or channel running in this process (for tests and reports)."""
        flight = self._flights.get((platform, scope, subject))
        return flight.running if flight else 0

    @contextlib.asynccontextmanager
    async def turn(self, message: IncomingMessage) -> AsyncIterator[None]:
        """Hold a place for one turn while it runs: raises ``OverBudget`` when a limit is reached, waits while the
        turns in flight could pass one together."""
        platform = message.key.platform
        channel = None if message.is_dm else message.key.channel
        limits = await limits_for(self.settings, self.store, platform, user=message.user_id, channel=channel)
        if not limits:
            yield
            return
        keys = sorted({(platform, limit.scope, limit.subject) for limit in limits})
        flights = [self._hold(key) for key in keys]
        try:
            await self._admit(limits, keys, flights)
            for flight in flights:
                flight.running += 1
            try:
                yield
            finally:
                for flight in flights:
                    flight.running -= 1
                    flight.ended.set()
                    flight.ended = asyncio.Event()
        finally:
            for key, flight in zip(keys, flights, strict=True):
                flight.holders -= 1
                if flight.holders == 0:
                    del self._flights[key]

    def _hold(self, key: tuple[str, Scope, str]) -> _InFlight:
        flight = self._flights.setdefault(key, _InFlight())
        flight.holders += 1
        return flight

    async def _admit(
        self, limits: Sequence[Limit], keys: Sequence[tuple[str, Scope, str]], flights: Sequence[_InFlight]
    ) -> None:
        """Return when the turn may start; raise ``OverBudget`` when a limit is reached."""
        platform = keys[0][0]
        by_key = dict(zip(keys, flights, strict=True))
        while True:
            ended = [flight.ended for flight in flights]  # set if a turn ends while the ledger is read
            now = self.clock()
            window = Window.at(now)
            spends: dict[tuple[str, Scope, str], BudgetSpend] = {}
            for key in keys:
                _, scope, subject = key
                spends[key] = await self.store.budget_spend(
                    platform,
                    user=subject if scope is Scope.USER else None,
                    channel=subject if scope is Scope.CHANNEL else None,
                    day_start=window.day_start.timestamp(),
                    month_start=window.month_start.timestamp(),
                )
            if any(event.is_set() for event in ended):
                continue  # its charge may be missing from what was read: read again
            used = [(limit, spent(spends[_key(platform, limit)], limit.period)) for limit in limits]
            reached = [(limit, tokens) for limit, tokens in used if tokens >= limit.tokens]
            if reached:
                limit, tokens = max(reached, key=lambda pair: window.end(pair[0].period))  # the one lasting longest
                raise OverBudget(over_message(limit, tokens, window, now))
            if all(
                _room(limit, spends[_key(platform, limit)], by_key[_key(platform, limit)].running) for limit in limits
            ):
                return
            await _first(ended)


def _key(platform: str, limit: Limit) -> tuple[str, Scope, str]:
    return (platform, limit.scope, limit.subject)


def _room(limit: Limit, spend: BudgetSpend, running: int) -> bool:
    """Whether one more turn fits beside ``running`` ones, each as large as the largest this month."""
    if running == 0:
        return True
    if spend.turns == 0:
        return False  # no response yet this month: its size is unknown, so turns run one at a time
    return spent(spend, limit.period) + (running + 1) * max(spend.largest, 1) <= limit.tokens


async def _first(events: Sequence[asyncio.Event]) -> None:
    """Wait until one of the events is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
