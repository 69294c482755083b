"""The local engine against the Conversations engine, as a thread grows: request bytes and time per turn.

Both run the same 50-turn thread against the fake OpenAI, answering instantly with the same text: threadline on
OpenAI sends only the new message (the conversation holds the history), the local engine (a ``chat`` provider on
the fake's ``/v1/chat/completions``) sends the history from the store each turn, up to its context budget (8,192
tokens by default), after which request size levels off. Overhead is the wall time per turn through the gateway,
turn handler, engine and store (the fake answers at once, so this is threadline's own work plus the HTTP).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import TimedReply, bench_settings
from bench.cost import ANSWER, CHECKPOINTS, _body_bytes, _message
from bench.report import Row
from bot.runtime import open_runtime
from bot.settings import Settings
from tests.fakes.chat_completions import ChatReply
from tests.fakes.openai_server import FakeOpenAI, Reply

MODEL_PATHS = {"/v1/responses", "/v1/chat/completions"}


async def _run(fake: FakeOpenAI, settings: Settings, turns: int, local: bool) -> tuple[list[int], list[float]]:
    sizes: list[int] = []
    times: list[float] = []
    async with open_runtime(settings) as runtime:
        for n in range(1, turns + 1):
            if local:
                fake.chat.script(ChatReply(text=ANSWER))
            else:
                fake.script(Reply(text=ANSWER))
            before = len(fake.requests)
            reply = TimedReply()
            began = time.perf_counter()
            submission = await runtime.gateway.submit(_message("grow", n, None), reply)
            if submission.done is not None:
                await submission.done
            times.append((time.perf_counter() - began) * 1000)
            if reply.failed:
                raise RuntimeError(f"turn {n} failed: {reply.failed}")
            sizes.append(sum(_body_bytes(r) for r in fake.requests[before:] if r.path in MODEL_PATHS))
    return sizes, times


def _row(name: str, sizes: list[int], times: list[float], note: str, extra: dict[str, Any]) -> Row:
    figure = " · ".join(f"t{n} {sizes[n - 1] / 1000:.1f}k" for n in CHECKPOINTS if n <= len(sizes))
    return Row(
        measure="local engine: request bytes/turn, ms/turn",
        adapter=name,
        unit="ms",
        p50=statistics.median(times),
        p99=max(times),
        ratio=sizes[-1] / sizes[0],
        figure=f"{figure} B · {statistics.median(times):.1f} ms/turn (p50), {max(times):.1f} max",
        note=note,
        extra={"bytes_per_turn": sizes, "ms_per_turn": [round(t, 2) for t in times], **extra},
    )


async def measure(folder: Path, turns: int = 50) -> list[Row]:
    fake = FakeOpenAI()
    await fake.start()
    try:
        openai_settings = bench_settings(folder / "openai", fake.base_url)
        local_settings = bench_settings(
            folder / "local",
            fake.base_url,
            model="local/llama3",
            providers={"local": {"base_url": fake.base_url, "api_key": "bench", "api": "chat"}},
        )
        ours = await _run(fake, openai_settings, turns, local=False)
        local = await _run(fake, local_settings, turns, local=True)
    finally:
        await fake.close()
    if fake.violations:
        raise RuntimeError(f"requests broke OpenAI's spec: {fake.violations[:3]}")
    budget = local_settings.local_context_tokens
    return [
        _row("threadline: Conversations", *ours, "only the new message is sent", {}),
        _row("threadline: local (chat)", *local, f"history re-sent up to the {budget:,}-token budget", {}),
    ]
