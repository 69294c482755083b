"""Streaming cadence: with a fast token stream, visible updates per second against the platform's ceiling.

Ceilings (design §3): Discord takes about 5 sends+edits per 5 s per channel (the fake enforces it, 429 with
``retry_after``); Slack's ``chat.appendStream`` is Tier 4 (100+ per minute) and ``chat.update`` Tier 3 (50+ per
minute) per workspace; the fake Slack enforces both over a 60 s window, answering 429 with Retry-After. One
answer streams for about ``seconds``; its rate is (updates − 1) / (last − first update). The target is at least
0.8× the ceiling and at most the ceiling itself (a faster cadence is throttled once the window fills), with no
429 at all.

The crowd row sends ``CROWD`` mentions at once in one Slack workspace: the answers share the workspace's tiers
(one budget in the adapter), so the figure is the busiest minute of ``chat.appendStream`` against Tier 4 and the
429 count, which must be zero; every answer must still arrive whole.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench.model_server import model_server
from bench.platforms import DiscordWorld, SlackWorld, running_bot
from bench.report import Row

TOKEN_INTERVAL = 0.01
CHUNK = 4
END = "THE END."
CROWD = 20  # answers streaming at once in one workspace
CROWD_NAME = f"slack ({CROWD} answers, one workspace)"
SLACK_TIERS = {
    "chat.appendStream": (100, 60.0),  # Tier 4
    "chat.update": (50, 60.0),  # Tier 3
    "chat.startStream": (20, 60.0),  # Tier 2
    "chat.stopStream": (20, 60.0),  # Tier 2
}
KINDS = {
    # name: (world, extra env, counted method, ceiling per second, ceiling label)
    "discord": ("discord", {}, "send+edit", 5 / 5, "5 per 5 s per channel"),
    "slack (native stream)": ("slack-socket", {}, "chat.appendStream", 100 / 60, "Tier 4: 100/min"),
    "slack (chat.update)": (
        "slack-socket",
        {"SLACK_NATIVE_STREAMING": "false"},
        "chat.update",
        50 / 60,
        "Tier 3: 50/min",
    ),
    CROWD_NAME: ("slack-socket", {}, "chat.appendStream", 100 / 60, "Tier 4: 100/min per workspace"),
}


def long_answer(seconds: float) -> str:
    """About ``seconds`` of streamed text, in paragraphs, ending with END."""
    words = int(seconds / TOKEN_INTERVAL * CHUNK / 6)
    paragraphs = [" ".join(f"word{i * 60 + j}" for j in range(60)) for i in range(max(1, words // 60))]
    return "\n\n".join(paragraphs) + "\n\n" + END


def rate(stamps: list[float]) -> float:
    stamps = sorted(stamps)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else 0.0


async def crowd(folder: Path, base_url: str) -> Row:
    """``CROWD`` answers at once in one workspace, against the fake's tiers."""
    kind, env, method, _ceiling, label = KINDS[CROWD_NAME]
    async with running_bot(kind, folder, base_url, env) as where:
        assert isinstance(where, SlackWorld)
        fake = where.fake
        fake.tier_limits = dict(SLACK_TIERS)
        began = time.monotonic()
        sent = [await where.send(f"story {i}") for i in range(CROWD)]
        threads = [thread for _, thread in sent]

        def whole() -> bool:
            return all(END in "".join(fake.texts("C0GENERAL", t)) for t in threads)

        await fake.wait_for(whole, within=300)
        await asyncio.gather(*(where.answered(thread, at) for at, thread in sent))
        finished = time.monotonic() - began
        busiest = fake.busiest_window(method, 60.0)
        appends = len(fake.calls_to(method))
        limited = len(fake.rate_limited)
        natively = sum(1 for m in fake.messages if m.via == "stream")
    limit = SLACK_TIERS[method][0]
    ratio = busiest / limit
    return Row(
        measure="streaming cadence",
        adapter=CROWD_NAME,
        unit="calls",
        figure=f"{busiest} {method} in the busiest minute, {limited} × 429",
        ratio=ratio,
        target="≤ 1× Tier 4, 0 × 429",
        passed=ratio <= 1.0 and limited == 0,
        note=f"ceiling {label}; {appends} appends over {CROWD} answers ({natively} streamed messages), "
        f"all whole after {finished:.1f} s",
        extra={"busiest_minute": busiest, "limit": limit, "http_429": limited, "appends": appends},
    )


async def one(name: str, folder: Path, base_url: str) -> Row:
    if name == CROWD_NAME:
        return await crowd(folder, base_url)
    kind, env, method, ceiling, label = KINDS[name]
    async with running_bot(kind, folder, base_url, env) as where:
        if isinstance(where, SlackWorld):
            where.fake.tier_limits = dict(SLACK_TIERS)
        sent_at, thread = await where.send("tell me a long story")
        if isinstance(where, SlackWorld):
            assert isinstance(thread, str)
            await where.first_text(thread, sent_at)
            await where.fake.wait_for(lambda: END in "".join(where.fake.texts("C0GENERAL", thread)), within=120)
            await where.answered(thread, sent_at)
            stamps = [c.at for c in where.text_calls(thread, sent_at, (method,))]
            updates = len(where.text_calls(thread, sent_at))
            limited = len(where.fake.rate_limited)
        else:
            assert isinstance(where, DiscordWorld) and isinstance(thread, int)
            await where.fake.wait_for(lambda: END in where.fake.text_in(thread), within=120, what="the whole answer")
            stamps = [w.at for w in where.fake.writes_in(thread)]
            updates = len(stamps)
            limited = where.fake.rate_limited
    per_second = rate(stamps)
    ratio = per_second / ceiling
    span = max(stamps) - min(stamps) if stamps else 0.0
    return Row(
        measure="streaming cadence",
        adapter=name,
        unit="/s",
        figure=f"{per_second:.2f} {method}/s, {limited} × 429",
        ratio=ratio,
        target="0.8–1× ceiling, 0 × 429",
        passed=0.8 <= ratio <= 1.0 and limited == 0,
        note=f"ceiling {label}; {updates} visible updates over {span:.1f} s"
        + ("; above the ceiling: a longer answer would be throttled" if ratio > 1.0 else ""),
        extra={"per_second": per_second, "ceiling_per_second": ceiling, "http_429": limited, "updates": updates},
    )


async def measure(folder: Path, seconds: float = 12.0, names: list[str] | None = None) -> list[Row]:
    text = long_answer(seconds)
    async with model_server(ttft=0.1, token_interval=TOKEN_INTERVAL, chunk=CHUNK, text=text) as base_url:
        # A database per run: fresh fakes reuse message timestamps, which a shared database would dedupe away.
        return [await one(name, folder / f"run{i}", base_url) for i, name in enumerate(names or list(KINDS))]
