"""The ``budget`` admin command: token limits for one user or channel, per UTC day or month, in place of the
settings (``bot.budgets``). Every malformed part gets one line saying what is accepted; nothing changes then."""

from __future__ import annotations

import re
import time

from bot.budgets import Limit, Period, Scope, Window, limits_for, reset_text, setting_for, spent
from bot.settings import Settings
from bot.store import Store
from bot.types import ThreadKey

BUDGET_HELP = (
    "`budget user ID daily|monthly N`, `budget channel [ID] daily|monthly N` (N tokens; 0 = no limit), "
    "`budget show [user ID | channel [ID]]`, `budget reset user ID | channel [ID] [daily|monthly]` "
    "(back to the settings)."
)
MAX_TOKENS = 10**15

# A platform's ids; other platforms (the console: a login name) take the generic form.
_IDS: dict[tuple[str, Scope], re.Pattern[str]] = {
    ("slack", Scope.USER): re.compile(r"^[UW][A-Z0-9]{2,20}$"),
    ("slack", Scope.CHANNEL): re.compile(r"^[CDG][A-Z0-9]{2,20}$"),
    ("discord", Scope.USER): re.compile(r"^\d{15,21}$"),
    ("discord", Scope.CHANNEL): re.compile(r"^\d{15,21}$"),
}
_GENERIC_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_ID_FORMS = {
    ("slack", Scope.USER): "a Slack user id such as U0123ABCD (or an @mention)",
    ("slack", Scope.CHANNEL): "a Slack channel id such as C0123ABCD",
    ("discord", Scope.USER): "a Discord user id (digits; or an @mention)",
    ("discord", Scope.CHANNEL): "a Discord channel id (digits)",
}
# <@U123>, <@U123|name>, <@!123>, <#C123|general>, <#123>: mentions as the platforms write them.
_MENTION = re.compile(r"^<[@#]!?([A-Za-z0-9]+)(?:\|[^>]*)?>$")
_NUMBER = re.compile(r"^[+-]?\d[\d,_]*$")
_PERIODS = {"daily": Period.DAILY, "day": Period.DAILY, "monthly": Period.MONTHLY, "month": Period.MONTHLY}


class BadInput(ValueError):
    """One line for the admin: what was wrong and what is accepted."""


def parse_id(platform: str, scope: Scope, text: str) -> str:
    match = _MENTION.match(text)
    value = match[1] if match else text
    pattern = _IDS.get((platform, scope), _GENERIC_ID)
    if not pattern.match(value):
        form = _ID_FORMS.get((platform, scope), "letters, digits, `.`, `_`, `@` or `-`, up to 64")
        raise BadInput(f"`{text[:40]}` is not a {scope.value} id here: use {form}.")
    return value


def parse_period(text: str) -> Period:
    period = _PERIODS.get(text.lower())
    if period is None:
        raise BadInput(f"Unknown limit kind `{text[:20]}`: use `daily` or `monthly`.")
    return period


def parse_tokens(text: str) -> int:
    """A whole number of tokens, 0 or more (``50000``, ``50,000``, ``50_000``)."""
    if not _NUMBER.match(text):
        raise BadInput(f"`{text[:20]}` is not a number of tokens: give a whole number, 0 or more (0 = no limit).")
    value = int(text.replace(",", "").replace("_", ""))
    if value < 0:
        raise BadInput(
            f"A budget cannot be negative ({value:,}): give a whole number of tokens, 0 or more (0 = no limit)."
        )
    if value > MAX_TOKENS:
        raise BadInput(f"{value:,} tokens is more than a budget can be (at most {MAX_TOKENS:,}; 0 = no limit).")
    return value


async def budget_command(
    arg: str, *, settings: Settings, store: Store, key: ThreadKey, is_admin: bool, now: float | None = None
) -> str:
    """Run ``budget …`` for an admin; a non-admin gets one short line and nothing changes."""
    if not is_admin:
        return "Sorry, `budget` is for admins only."
    words = arg.split()
    verb, rest = (words[0].lower(), words[1:]) if words else ("show", [])
    now = time.time() if now is None else now
    try:
        if verb in {"user", "channel"}:
            return await _set(store, key, Scope(verb), rest)
        if verb == "show":
            return await _show(settings, store, key, rest, now)
        if verb == "reset":
            return await _reset(settings, store, key, rest)
        if verb == "help":
            return f"Budgets: {BUDGET_HELP}"
        return f"Unknown budget command `{verb[:20]}`. Use {BUDGET_HELP}"
    except BadInput as exc:
        return str(exc)


def _subject(key: ThreadKey, scope: Scope, words: list[str]) -> tuple[str, list[str]]:
    """The user or channel named first in ``words`` (a channel is this one unless an id comes first), and the words
    after it."""
    if scope is Scope.USER:
        if not words:
            raise BadInput(f"Name the user: {BUDGET_HELP}")
        return parse_id(key.platform, scope, words[0]), words[1:]
    if words and words[0].lower() not in _PERIODS:
        return parse_id(key.platform, scope, words[0]), words[1:]
    return key.channel, words


async def _set(store: Store, key: ThreadKey, scope: Scope, words: list[str]) -> str:
    subject, rest = _subject(key, scope, words)
    if len(rest) != 2:
        raise BadInput(f"Give the kind and the number of tokens: {BUDGET_HELP}")
    period, tokens = parse_period(rest[0]), parse_tokens(rest[1])
    await store.set_budget(key.platform, scope.value, subject, period.value, tokens)
    what = f"user {subject}" if scope is Scope.USER else f"channel {subject}"
    if tokens == 0:
        return f"Done: {what} has no {period.value} limit (whatever the setting says)."
    return f"Done: {what} may use {tokens:,} tokens {_per(period)} (UTC)."


async def _reset(settings: Settings, store: Store, key: ThreadKey, words: list[str]) -> str:
    if not words or words[0].lower() not in {"user", "channel"}:
        raise BadInput("Reset what? `budget reset user ID` or `budget reset channel [ID]`, then `daily` or `monthly`.")
    scope = Scope(words[0].lower())
    subject, rest = _subject(key, scope, words[1:])
    if len(rest) > 1:
        raise BadInput(f"Too many words: {BUDGET_HELP}")
    periods = [parse_period(rest[0])] if rest else list(Period)
    for period in periods:
        await store.set_budget(key.platform, scope.value, subject, period.value, None)
    defaults = ", ".join(f"{_limit_text(setting_for(settings, scope, p))} {_per(p)}" for p in periods)
    return f"Done: {scope.value} {subject} is back to the settings ({defaults})."


async def _show(settings: Settings, store: Store, key: ThreadKey, words: list[str], now: float) -> str:
    if not words:
        return await _overview(settings, store, key, now)
    scope_word = words[0].lower()
    if scope_word not in {"user", "channel"}:
        raise BadInput("Show what? `budget show`, `budget show user ID` or `budget show channel [ID]`.")
    scope = Scope(scope_word)
    subject, rest = _subject(key, scope, words[1:])
    if rest:
        raise BadInput(f"Too many words: {BUDGET_HELP}")
    return await _subject_line(settings, store, key.platform, scope, subject, now)


async def _subject_line(settings: Settings, store: Store, platform: str, scope: Scope, subject: str, now: float) -> str:
    window = Window.at(now)
    user, channel = (subject, None) if scope is Scope.USER else (None, subject)
    limits = await limits_for(settings, store, platform, user=user, channel=channel)
    spend = await store.budget_spend(
        platform,
        user=user,
        channel=channel,
        day_start=window.day_start.timestamp(),
        month_start=window.month_start.timestamp(),
    )
    overrides = {o.period for o in await store.budget_overrides(platform, user=user, channel=channel)}
    parts = []
    for period in Period:
        limit = next((lim for lim in limits if lim.period is period), None)
        source = "set by an admin" if period.value in overrides else "the setting"
        used = spent(spend, period)
        if limit is None:
            parts.append(f"{period.value}: no limit ({source}; {used:,} used)")
        else:
            parts.append(_limit_part(limit, used, source, window, now))
    return f"{scope.value.capitalize()} {subject}: " + "; ".join(parts) + "."


def _limit_part(limit: Limit, used: int, source: str, window: Window, now: float) -> str:
    return (
        f"{limit.period.value}: {limit.tokens:,} tokens ({source}; {used:,} used, resets "
        f"{reset_text(window.end(limit.period), now)})"
    )


async def _overview(settings: Settings, store: Store, key: ThreadKey, now: float) -> str:
    lines = [
        "Settings: "
        + "; ".join(
            f"{scope.value}s {_limit_text(setting_for(settings, scope, period))} {_per(period)}"
            for scope in Scope
            for period in Period
        )
        + f"; requests {_rate_text(settings.user_requests_per_minute)}.",
    ]
    overrides = await store.budget_overrides(key.platform)
    if overrides:
        lines.append("Set by admins:")
        lines += [f"• {o.scope} {o.subject}: {_limit_text(o.tokens)} {_per(Period(o.period))}" for o in overrides[:50]]
        if len(overrides) > 50:
            lines.append(f"…and {len(overrides) - 50} more.")
    lines.append(await _subject_line(settings, store, key.platform, Scope.CHANNEL, key.channel, now))
    return "\n".join(lines)


def _per(period: Period) -> str:
    return "a day" if period is Period.DAILY else "a month"


def _limit_text(tokens: int) -> str:
    return "no limit" if tokens == 0 else f"{tokens:,} tokens"


def _rate_text(per_minute: float) -> str:
    return "no limit" if per_minute <= 0 else f"{per_minute:g} a minute per user"
