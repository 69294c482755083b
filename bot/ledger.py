"""Charging one response's tokens: the usage ledger (budgets and reports read it) and the token metrics, for
either engine."""

from __future__ import annotations

from bot.metrics import Metrics
from bot.store import Store, UsageRow
from bot.stream_events import Usage
from bot.types import IncomingMessage


async def charge(store: Store, metrics: Metrics, message: IncomingMessage, model: str, usage: Usage | None) -> None:
    """Record ``usage`` (None: the response reported none) against the message's user, channel and thread."""
    if usage is None:
        return
    key = message.key
    metrics.tokens(
        key.platform,
        model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_input_tokens,
    )
    await store.record_usage(
        UsageRow(
            platform=key.platform,
            user=message.user_id,
            channel=key.channel,
            thread=key.thread,
            model=model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_input_tokens=usage.cached_input_tokens,
        )
    )
