"""A local thread's history as chat messages, and fitting it into a model's context budget.

Entries are stored one message each (``HistoryEntry``); a turn starts at a user message. Sizes are estimates
(about four characters a token, a flat cost per image): servers differ in tokenizers, so the budget keeps a margin.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.store import HistoryEntry

IMAGE_TOKENS = 800
MESSAGE_OVERHEAD = 4
# Of the context, this much is left for the answer (at most ANSWER_RESERVE_MAX tokens).
ANSWER_RESERVE_SHARE = 0.25
ANSWER_RESERVE_MAX = 2048


def estimate_tokens(message: dict[str, Any]) -> int:
    content = message.get("content")
    chars = 0
    images = 0
    if isinstance(content, str):
        chars += len(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                images += 1
            elif isinstance(part, dict):
                chars += len(str(part.get("text") or ""))
    for call in message.get("tool_calls") or []:
        chars += len(json.dumps(call))
    return chars // 4 + images * IMAGE_TOKENS + MESSAGE_OVERHEAD


def entry(message: dict[str, Any]) -> HistoryEntry:
    return HistoryEntry(json.dumps(message, ensure_ascii=False), estimate_tokens(message))


def input_budget(context_tokens: int) -> int:
    return context_tokens - min(ANSWER_RESERVE_MAX, int(context_tokens * ANSWER_RESERVE_SHARE))


@dataclass(frozen=True, slots=True)
class Fitted:
    """What is sent (``kept``) and what no longer fits (``dropped``: whole turns, oldest first)."""

    kept: list[HistoryEntry]
    dropped: list[HistoryEntry]


def turns_of(entries: Sequence[HistoryEntry]) -> list[list[HistoryEntry]]:
    turns: list[list[HistoryEntry]] = []
    for item in entries:
        if not turns or json.loads(item.message).get("role") == "user":
            turns.append([])
        turns[-1].append(item)
    return turns


def fit(entries: Sequence[HistoryEntry], budget: int) -> Fitted:
    """Drop the oldest whole turns until the rest fits in ``budget`` tokens."""
    turns = turns_of(entries)
    total = sum(item.tokens for item in entries)
    dropped: list[HistoryEntry] = []
    while turns and total > budget:
        turn = turns.pop(0)
        dropped += turn
        total -= sum(item.tokens for item in turn)
    return Fitted([item for turn in turns for item in turn], dropped)


def messages_of(entries: Sequence[HistoryEntry]) -> list[dict[str, Any]]:
    return [json.loads(item.message) for item in entries]
