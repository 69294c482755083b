"""When do the models we use shut down? Read from ``GET /v1/models`` (``shutdown_date``) instead of hard-coded
dates (design §2), and turned into doctor findings that name the setting to change before a model dies."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

from openai import AsyncOpenAI

log = logging.getLogger("threadline.model_calendar")

Level = Literal["ok", "warn", "fail"]
_MARKS: dict[Level, str] = {"ok": "✓", "warn": "!", "fail": "✗"}


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of a health report. ``ok`` is False only for ``fail``: a warning does not fail the doctor."""

    ok: bool
    level: Level
    line: str

    def __post_init__(self) -> None:
        if self.ok != (self.level != "fail"):
            raise ValueError(f"Finding(ok={self.ok}, level={self.level!r}) contradicts itself")


async def model_calendar(client: AsyncOpenAI) -> dict[str, date | None]:
    """Every model the key can list → its announced shutdown date, or None when none is announced.

    API errors (bad key, unreachable server) propagate: the caller reports them.
    """
    calendar: dict[str, date | None] = {}
    async for model in client.models.list():
        # getattr: an SDK older than 3.57 keeps the field only as an untyped extra.
        raw: object = getattr(model, "shutdown_date", None)
        calendar[model.id] = parse_shutdown_date(raw, model_id=model.id)
    return calendar


def parse_shutdown_date(raw: object, *, model_id: str = "?") -> date | None:
    """The API sends an ISO date ("2027-01-06"); accept a datetime string or a unix timestamp too, and treat
    anything else as "not announced" rather than failing the whole calendar."""
    if raw is None or raw == "":
        return None
    try:
        if isinstance(raw, str):
            text = raw.strip()
            return date.fromisoformat(text) if len(text) == 10 else datetime.fromisoformat(text).date()
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return datetime.fromtimestamp(raw, tz=UTC).date()
    except (ValueError, OverflowError, OSError):
        pass
    log.debug("model %s: unreadable shutdown_date %r, treated as none announced", model_id, raw)
    return None


def calendar_findings(
    models_in_use: Mapping[str, str],
    calendar: Mapping[str, date | None],
    *,
    today: date,
    warn_days: int = 90,
) -> list[Finding]:
    """One finding per setting in ``models_in_use`` (setting name → model id), in its order: fail when the
    model is not listed or its shutdown date is today or past, warn within ``warn_days``, else ok."""
    return [_finding(setting, model, calendar, today, warn_days) for setting, model in models_in_use.items()]


def _finding(setting: str, model: str, calendar: Mapping[str, date | None], today: date, warn_days: int) -> Finding:
    who = f"model {model} ({setting})"
    if model not in calendar:
        return _make("fail", f"{who} is NOT in the models list: set {setting} to a model this key can use")
    shutdown = calendar[model]
    if shutdown is None:
        return _make("ok", f"{who} exists, no shutdown announced")
    days = (shutdown - today).days
    when = shutdown.isoformat()
    if days < 0:
        return _make("fail", f"{who} shut down on {when}: set {setting} to a current model")
    if days == 0:
        return _make("fail", f"{who} shuts down today ({when}): set {setting} to a current model")
    if days <= warn_days:
        in_days = f"in {days} day{'s' if days != 1 else ''}"
        return _make("warn", f"{who} shuts down on {when} ({in_days}): change {setting} before then")
    return _make("ok", f"{who} exists, shuts down on {when}")


def _make(level: Level, text: str) -> Finding:
    return Finding(ok=level != "fail", level=level, line=f"{_MARKS[level]} {text}")
