"""Burst: 1,000 mentions at once in one Discord channel, with the fake's global limit on (50 requests per second
per bot, 429 ``global`` beyond it), against a real ``python -m bot run --adapter discord`` process with its
default settings (the 👀 reaction and typing on).

Each mention costs at least two requests before its answer shows (the thread, then the first post), so at 50 per
second the last first post cannot come before ``mentions × 2 / 50`` seconds: that is the floor the row reports
beside the p50/p99 of mention → first post (the fake's stamp of the first write with text in the thread). The row
passes when no request was answered 429 and every answer was posted in full. A second row times mention → the
model request (the fake model's stamp of its arrival): how long the REST work of taking a mention on (thread, 👀,
typing) holds the question back from the model.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench.model_server import model_server
from bench.platforms import DiscordWorld, running_bot
from bench.report import Row, percentile

GLOBAL_PER_SECOND = 50
POLL_SECS = 0.1


async def _first_posts(where: DiscordWorld, sent: dict[int, float], within: float) -> dict[int, float]:
    """Thread → the fake's stamp of its first write with text, read incrementally (the fake shares this loop)."""
    first: dict[int, float] = {}
    seen = 0
    deadline = time.monotonic() + within
    while len(first) < len(sent):
        writes = where.fake.writes
        for write in writes[seen:]:
            if write.content and write.channel_id in sent and write.channel_id not in first:
                first[write.channel_id] = write.at
        seen = len(writes)
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL_SECS)
    return first


async def _complete(where: DiscordWorld, questions: dict[int, str], within: float) -> int:
    """How many threads hold their whole answer (the fake model quotes the question) once all do or time is up."""
    deadline = time.monotonic() + within
    bot = str(where.fake.bot_id)
    while True:
        texts: dict[str, str] = {}
        for message in list(where.fake.messages.values()):
            if message["author"]["id"] == bot:
                texts[message["channel_id"]] = texts.get(message["channel_id"], "") + message["content"]
        done = sum(1 for tid, q in questions.items() if f"«{q}»" in texts.get(str(tid), ""))
        if done == len(questions) or time.monotonic() > deadline:
            return done
        await asyncio.sleep(1.0)


def _asked(stamps: str) -> dict[str, float]:
    """Question → when its first model request arrived (the model server's stamps file)."""
    asked: dict[str, float] = {}
    for line in stamps.splitlines():
        at, _, text = line.partition("\t")
        asked.setdefault(text, float(at))
    return asked


async def measure(folder: Path, mentions: int = 1000) -> list[Row]:
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    stamps = folder / "model-requests.tsv"
    async with (
        model_server(ttft=0.05, stamps=stamps) as base_url,
        running_bot("discord", folder, base_url) as where,
    ):
        assert isinstance(where, DiscordWorld)
        assert where.fake.global_limit == (GLOBAL_PER_SECOND, 1.0), "the fake enforces the global limit"
        sent: dict[int, float] = {}
        questions: dict[int, str] = {}
        for n in range(mentions):
            at, thread = await where.send(f"question {n}")
            sent[thread], questions[thread] = at, f"question {n}"
        began = min(sent.values())
        floor = mentions * 2 / GLOBAL_PER_SECOND
        first = await _first_posts(where, sent, within=floor * 4 + 60)
        complete = await _complete(where, questions, within=floor * 2 + 60)
        fake = where.fake
        requests, limited, global_limited = len(fake.rest_log), fake.rate_limited, fake.global_rate_limited
        reactions, typing = len(fake.reactions), len(fake.typing)
    delays = [first[t] - sent[t] for t in first]
    asked = _asked(await asyncio.to_thread(stamps.read_text))
    to_model = [asked[q] - sent[t] for t, q in questions.items() if q in asked]
    last = max(first.values()) - began if first else float("nan")
    passed = limited == 0 and complete == mentions and len(first) == mentions
    return [
        Row(
            measure="burst: mention → first post",
            adapter="discord",
            unit="s",
            p50=percentile(delays, 50),
            p99=percentile(delays, 99),
            ratio=last / floor if first else None,
            target="0 × 429, every answer posted",
            passed=passed,
            note=f"{mentions} mentions at once, global limit {GLOBAL_PER_SECOND}/s on the fake; last first post "
            f"{last:.1f} s after the first mention (floor {floor:.0f} s: thread + post each); "
            f"{len(first)} first posts, {complete} complete answers; {limited} × 429 ({global_limited} global); "
            f"{requests} requests, {reactions} 👀, {typing} typing",
            extra={
                "mentions": mentions,
                "first_posts": len(first),
                "complete": complete,
                "last_first_post_s": last,
                "floor_s": floor,
                "http_429": limited,
                "http_429_global": global_limited,
                "requests": requests,
                "reactions": reactions,
                "typing": typing,
            },
        ),
        Row(
            measure="burst: mention → model request",
            adapter="discord",
            unit="s",
            p50=percentile(to_model, 50),
            p99=percentile(to_model, 99),
            note=f"the same {mentions} mentions: the fake model's stamp of each question's first request; "
            f"{len(to_model)} of {mentions} asked",
            extra={"asked": len(to_model), "first_s": min(to_model, default=float("nan"))},
        ),
    ]
