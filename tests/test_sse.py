"""The engine's SSE decoder: events split across lines and chunks come out whole, in order."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.sse import sse_events


async def _lines(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


async def _decode(*lines: str) -> list[dict[str, object]]:
    return [event async for event in sse_events(_lines(*lines))]


async def test_events_are_decoded_in_order() -> None:
    events = await _decode(
        "event: response.created",
        'data: {"type": "response.created", "sequence_number": 0}',
        "",
        ": a keep-alive comment",
        "",
        "event: response.output_text.delta",
        'data: {"type": "response.output_text.delta", "delta": "hi"}',
        "",
    )
    assert [e["type"] for e in events] == ["response.created", "response.output_text.delta"]
    assert events[1]["delta"] == "hi"


async def test_multi_line_data_and_a_missing_final_blank_line() -> None:
    events = await _decode('data: {"type": "a",', 'data: "delta": "x"}', "", 'data: {"type": "b"}')
    assert events == [{"type": "a", "delta": "x"}, {"type": "b"}]


async def test_done_marker_is_skipped_and_garbage_raises() -> None:
    assert await _decode('data: {"type": "a"}', "", "data: [DONE]", "") == [{"type": "a"}]
    with pytest.raises(ValueError):
        await _decode("data: {not json", "")
