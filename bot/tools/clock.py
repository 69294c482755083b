"""The built-in ``current_time`` tool: the date and time now in a time zone (the IANA database, via zoneinfo)."""

from __future__ import annotations

import functools
import zoneinfo
from datetime import datetime
from typing import Any

from bot.tools.functions import ToolError


def current_time(timezone: str) -> dict[str, Any]:
    """The current date and time in a time zone.

    Args:
        timezone: An IANA time zone name such as "Europe/Paris", "Asia/Tokyo", "America/New_York" or "UTC".
    """
    zone = _zone(timezone.strip())
    now = datetime.now(zone)
    offset = now.strftime("%z")
    return {
        "timezone": zone.key,
        "date": now.date().isoformat(),
        "time": now.strftime("%H:%M:%S"),
        "weekday": now.strftime("%A"),
        "utc_offset": f"{offset[:3]}:{offset[3:]}" if offset else "+00:00",
        "abbreviation": now.tzname() or "",
    }


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    canonical = _by_lower_name().get(name.lower().replace(" ", "_"))
    if canonical is None:
        raise ToolError(f"unknown time zone {name!r}: use an IANA name such as Europe/Paris, Asia/Tokyo or UTC")
    return zoneinfo.ZoneInfo(canonical)


@functools.cache
def _by_lower_name() -> dict[str, str]:
    """Time zone names by their lower-case form ("europe/paris" → "Europe/Paris"), read once."""
    return {name.lower(): name for name in zoneinfo.available_timezones()}
