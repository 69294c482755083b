"""Server-sent events as plain dicts.

The engine reads the Responses stream as raw lines (``bot.openai_direct``, on the process's aiohttp session) and
decodes the events itself: building a typed pydantic model for every delta, and the SDK's request pipeline, were
most of the bot's CPU per turn (README, Performance).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """Yield each event's JSON ``data`` (the Responses API repeats the event name in its ``type``)."""
    data: list[str] = []
    async for line in lines:
        if line:
            if line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            continue  # "event:", "id:", "retry:" and ":" comments carry nothing the engine needs
        if data:
            payload, data = "\n".join(data), []
            if payload != "[DONE]":
                yield json.loads(payload)
    if data and (payload := "\n".join(data)) != "[DONE]":
        yield json.loads(payload)
