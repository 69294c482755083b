"""Usage and cost reports from the ledger: a user's own day and month (``usage``), a channel's (``usage channel``),
everyone's month to date (``usage all``), and ``threadline usage --since 30d [--csv]`` on the command line.

Every figure is a sum of ledger rows (``Store.usage_summary``, per UTC day, user, channel and model), so reports
add up to the ledger. Costs are estimates from the price table (``bot.prices``); tokens of a model without a price
are counted but not priced, and the report names that model. 👍/👎 counts come from the feedback users gave.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TextIO

from bot.budgets import Limit, Period, Window, limits_for, reset_text
from bot.prices import ModelPrice, price_for
from bot.settings import Settings
from bot.store import FeedbackRow, Store, UsageTotal, opened_store
from bot.types import ThreadKey

USAGE_HELP = "`usage` (yours today and this month); admins: `usage channel` (this channel), `usage all` (everyone)."
TOP = 5  # users listed in chat reports
PRICES_HINT = "set THREADLINE_PRICES or a [prices] table in threadline.toml"
CSV_COLUMNS = (
    "day",
    "platform",
    "user",
    "channel",
    "model",
    "turns",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "cost_usd",
)


@dataclass(slots=True)
class Tally:
    """Ledger sums for one group of rows; ``cost`` covers the priced models, ``unpriced`` names the others."""

    turns: int = 0
    input: int = 0
    cached: int = 0
    output: int = 0
    cost: float = 0.0
    unpriced: set[str] = field(default_factory=set)

    @property
    def tokens(self) -> int:
        return self.input + self.output

    def add(self, total: UsageTotal, price: ModelPrice | None) -> None:
        self.turns += total.turns
        self.input += total.input_tokens
        self.cached += total.cached_input_tokens
        self.output += total.output_tokens
        if price is None:
            self.unpriced.add(total.model)
        else:
            self.cost += price.cost(total.input_tokens, total.cached_input_tokens, total.output_tokens)


def tally(
    totals: Iterable[UsageTotal], prices: Mapping[str, ModelPrice], by: Callable[[UsageTotal], str] = lambda _: ""
) -> dict[str, Tally]:
    """Totals added up per ``by`` (one group by default), largest first."""
    groups: dict[str, Tally] = {}
    for total in totals:
        groups.setdefault(by(total), Tally()).add(total, price_for(prices, total.model))
    return dict(sorted(groups.items(), key=lambda item: (-item[1].tokens, item[0])))


def money(usd: float) -> str:
    return f"${usd:,.2f}" if usd >= 1 else f"${usd:.4f}"


def cost_note(t: Tally, *, explain: bool = True) -> str:
    """``, about $0.0123`` — or why there is no estimate (``explain``; else nothing: a user's own report)."""
    if t.tokens == 0:
        return ""
    if not t.unpriced:
        return f", about {money(t.cost)}"
    if not explain:
        return ""
    missing = ", ".join(sorted(t.unpriced))
    if t.cost:
        return f", about {money(t.cost)} plus {missing} (no price)"
    return f" (no price for {missing}: {PRICES_HINT})"


def feedback_counts(
    rows: Iterable[FeedbackRow], *, platform: str | None = None, channel: str | None = None, user: str | None = None
) -> tuple[int, int]:
    """(👍, 👎) among the rows on this platform, in this channel, given by this user (the filters given)."""
    good = bad = 0
    for row in rows:
        key = ThreadKey.parse(row.key)
        if platform is not None and key.platform != platform:
            continue
        if channel is not None and key.channel != channel:
            continue
        if user is not None and row.user != user:
            continue
        good += row.value == "good"
        bad += row.value == "bad"
    return good, bad


def feedback_line(counts: tuple[int, int], lead: str) -> list[str]:
    good, bad = counts
    return [f"{lead}: {good:,} 👍, {bad:,} 👎."] if good or bad else []


def _limits_line(limits: Sequence[Limit], used: Mapping[Period, int], window: Window, now: float, lead: str) -> str:
    parts = []
    for limit in limits:
        left = max(0, limit.tokens - used[limit.period])
        per = "a day" if limit.period is Period.DAILY else "a month"
        parts.append(
            f"{limit.tokens:,} tokens {per} ({left:,} left; resets {reset_text(window.end(limit.period), now)})"
        )
    return f"{lead}: {'; '.join(parts)}."


async def own_usage(settings: Settings, store: Store, platform: str, user: str, now: float) -> str:
    window = Window.at(now)
    totals = await store.usage_summary(window.month_start.timestamp(), platform=platform, user=user)
    month = tally(totals, settings.prices).get("", Tally())
    today = tally((t for t in totals if t.day == f"{window.day_start:%Y-%m-%d}"), settings.prices).get("", Tally())
    lines = [
        f"This month you used {month.tokens:,} tokens ({month.input:,} in, {month.output:,} out) over "
        f"{month.turns:,} turns{cost_note(month, explain=False)}.",
        f"Today: {today.tokens:,} tokens over {today.turns:,} turns{cost_note(today, explain=False)}.",
    ]
    limits = await limits_for(settings, store, platform, user=user)
    if limits:
        used = {Period.DAILY: today.tokens, Period.MONTHLY: month.tokens}
        lines.append(_limits_line(limits, used, window, now, "Your limits"))
    rows = await store.feedback_since(window.month_start.timestamp())
    lines += feedback_line(feedback_counts(rows, platform=platform, user=user), "Your feedback this month")
    return "\n".join(lines)


async def channel_usage(settings: Settings, store: Store, platform: str, channel: str, now: float) -> str:
    window = Window.at(now)
    totals = await store.usage_summary(window.month_start.timestamp(), platform=platform, channel=channel)
    month = tally(totals, settings.prices).get("", Tally())
    today = tally((t for t in totals if t.day == f"{window.day_start:%Y-%m-%d}"), settings.prices).get("", Tally())
    lines = [
        f"This channel today: {today.tokens:,} tokens over {today.turns:,} turns{cost_note(today)}.",
        f"This month: {month.tokens:,} tokens over {month.turns:,} turns{cost_note(month)}.",
    ]
    users = tally(totals, settings.prices, by=lambda t: t.user)
    if users:
        lines.append("Top users this month:")
        lines += [f"• {name}: {t.tokens:,} tokens over {t.turns:,} turns{cost_note(t)}" for name, t in _top(users)]
    limits = await limits_for(settings, store, platform, channel=channel)
    if limits:
        used = {Period.DAILY: today.tokens, Period.MONTHLY: month.tokens}
        lines.append(_limits_line(limits, used, window, now, "Channel limits"))
    rows = await store.feedback_since(window.month_start.timestamp())
    lines += feedback_line(feedback_counts(rows, platform=platform, channel=channel), "Feedback this month")
    return "\n".join(lines)


async def all_usage(settings: Settings, store: Store, now: float) -> str:
    """Everyone on every platform, month to date (the costs are the deployment's)."""
    window = Window.at(now)
    totals = await store.usage_summary(window.month_start.timestamp())
    whole = tally(totals, settings.prices).get("", Tally())
    lines = [
        f"Month to date (since {window.month_start:%Y-%m-%d} UTC): {whole.tokens:,} tokens ({whole.input:,} in, "
        f"{whole.cached:,} of them cached; {whole.output:,} out) over {whole.turns:,} turns{cost_note(whole)}."
    ]
    users = tally(totals, settings.prices, by=lambda t: f"{t.platform}:{t.user}")
    if users:
        lines.append("Top users:")
        lines += [f"• {name}: {t.tokens:,} tokens over {t.turns:,} turns{cost_note(t)}" for name, t in _top(users)]
        lines.append("By model:")
        models = tally(totals, settings.prices, by=lambda t: t.model)
        lines += [f"• {name}: {t.tokens:,} tokens over {t.turns:,} turns{cost_note(t)}" for name, t in models.items()]
    lines += feedback_line(feedback_counts(await store.feedback_since(window.month_start.timestamp())), "Feedback")
    return "\n".join(lines)


def _top(groups: Mapping[str, Tally]) -> list[tuple[str, Tally]]:
    return list(groups.items())[:TOP]


async def usage_command(
    arg: str,
    *,
    settings: Settings,
    store: Store,
    key: ThreadKey,
    user_id: str,
    is_admin: bool,
    now: float | None = None,
) -> str:
    """The ``usage`` chat command: no argument, ``channel`` or ``all`` (those two for admins only)."""
    now = time.time() if now is None else now
    what = arg.strip().lower()
    if what in {"", "me", "mine"}:
        return await own_usage(settings, store, key.platform, user_id, now)
    if what not in {"channel", "all"}:
        return f"`usage` takes nothing, `channel` or `all`, not `{arg.strip()[:40]}`. {USAGE_HELP}"
    if not is_admin:
        return f"Sorry, `usage {what}` is for admins only."
    if what == "channel":
        return await channel_usage(settings, store, key.platform, key.channel, now)
    return await all_usage(settings, store, now)


# --- threadline usage (the command line) -------------------------------------------------------------------------

_RELATIVE = re.compile(r"^(\d{1,5})\s*([dh])$")


def parse_since(text: str, now: float | None = None) -> float:
    """``7d`` (days), ``24h`` (hours) or a UTC date ``2026-11-01``, as a unix time; anything else is a ValueError
    that says what is accepted."""
    now = time.time() if now is None else now
    value = text.strip().lower()
    if match := _RELATIVE.match(value):
        count, unit = int(match[1]), match[2]
        if count > 0:
            return now - count * (86400 if unit == "d" else 3600)
    else:
        try:
            return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
        except ValueError:
            pass
    raise ValueError(f"--since takes a number of days or hours (7d, 24h) or a date (2026-11-01), not {text!r}")


def since_argument(text: str) -> float:
    """``parse_since`` for argparse (its message becomes the usage error)."""
    try:
        return parse_since(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def csv_text(totals: Sequence[UsageTotal], prices: Mapping[str, ModelPrice]) -> str:
    """One row per UTC day, platform, user, channel and model; ``cost_usd`` empty for a model with no price."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for t in totals:
        price = price_for(prices, t.model)
        cost = "" if price is None else f"{price.cost(t.input_tokens, t.cached_input_tokens, t.output_tokens):.6f}"
        counts = (t.turns, t.input_tokens, t.cached_input_tokens, t.output_tokens)
        writer.writerow((t.day, t.platform, t.user, t.channel, t.model, *counts, cost))
    return out.getvalue()


def table_text(
    totals: Sequence[UsageTotal], prices: Mapping[str, ModelPrice], since: float, feedback: tuple[int, int]
) -> str:
    whole = tally(totals, prices).get("", Tally())
    start = datetime.fromtimestamp(since, UTC)
    lines = [
        f"Usage since {start:%Y-%m-%d %H:%M} UTC: {whole.tokens:,} tokens ({whole.input:,} in, {whole.cached:,} of "
        f"them cached; {whole.output:,} out) over {whole.turns:,} turns{cost_note(whole)}."
    ]
    lines += feedback_line(feedback, "Feedback")
    for title, by in (
        ("user", lambda t: f"{t.platform}:{t.user}"),
        ("model", lambda t: t.model),
        ("day", lambda t: t.day),
    ):
        groups = tally(totals, prices, by=by)
        if title == "day":
            groups = dict(sorted(groups.items()))
        if not groups:
            continue
        width = max(24, *(len(name) for name in groups))
        lines += ["", f"{title:<{width}} {'turns':>8} {'input':>12} {'cached':>12} {'output':>12} {'cost USD':>10}"]
        for name, t in groups.items():
            cost = "-" if t.unpriced else f"{t.cost:.4f}"
            lines.append(f"{name:<{width}} {t.turns:>8,} {t.input:>12,} {t.cached:>12,} {t.output:>12,} {cost:>10}")
    if whole.unpriced:
        lines += ["", f"No price for {', '.join(sorted(whole.unpriced))} ({PRICES_HINT})."]
    return "\n".join(lines)


async def print_usage(settings: Settings, since: float, *, as_csv: bool, out: TextIO = sys.stdout) -> int:
    """``threadline usage``: the ledger since a time, as a table or CSV."""
    async with opened_store(settings.database_location) as store:  # its errors are the command line's to print
        totals = await store.usage_summary(since)
        feedback = feedback_counts(await store.feedback_since(since)) if not as_csv else (0, 0)
    out.write(
        csv_text(totals, settings.prices) if as_csv else table_text(totals, settings.prices, since, feedback) + "\n"
    )
    return 0
