"""Overhead: message in → first text out, minus the fake model's time to first token (TTFT).

Turns run one after another (nothing else competes), ``per_thread`` turns in each thread, so one turn in
``per_thread`` also creates the thread's conversation. The platforms take the threads in turn (round robin), so a
thread sees one message every second or more, as in a real chat, and Discord's 5-per-5-s limit never queues one.
The model runs in its own process (bench.model_server) and answers in one delta after the TTFT.

Rows: the bare openai SDK against the same fake (the floor: fake + SDK + loopback, no threadline); the core
(TurnHandler + engine into a timestamping ReplyStream); the console adapter (in-memory stdin/stdout); Slack
(Socket Mode, HTTP) and Discord: a bot process, from the fake platform sending the event to the fake's stamp of
the first API call that shows answer text. The ratio column is a row's p50 over the floor's p50.

New-thread rows (``new_thread_rows``): only first messages of new threads, through the core, against a model server
whose conversation creates and updates take a round trip (``--conversation-latency``), with the conversation pool
off and on (``THREADLINE_CONVERSATION_POOL``). Off, each first message waits for ``conversations.create``; on, it
takes a conversation made ahead of need. Ratio: pool on over pool off.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from openai import AsyncOpenAI

from adapters.console import ConsoleAdapter
from bench.common import bench_settings, message, run_turn, warm_up
from bench.platforms import SlackWorld, running_bot
from bench.report import Row, percentile
from bot.openai_http import openai_http_client
from bot.runtime import open_runtime
from bot.settings import Settings

TARGET = "p50 ≤ 10 ms, p99 ≤ 40 ms"
PLATFORM_GAP = 0.02  # seconds between a turn's end and the next event (events never come back to back)
CONSOLE_PROMPT = "threadline> "  # what ConsoleReply.start writes before the first text
WARM_TURNS = 3
NEW_THREAD_GAP = 0.3  # seconds between new threads (a chat's new threads are seconds apart; the pool refills)
POOL_SIZE = 4  # the setting's default


@dataclass(frozen=True, slots=True)
class Plan:
    turns: int = 200
    per_thread: int = 5
    ttft: float = 0.02
    new_threads: int = 50

    def describe(self, turns: int) -> str:
        return f"{turns} turns, {self.per_thread} per thread, TTFT {self.ttft * 1000:g} ms"

    @property
    def threads(self) -> int:
        return -(-self.turns // self.per_thread)

    def schedule(self) -> list[tuple[int, int]]:
        """(thread, turn in thread) for every timed turn, one thread after another."""
        return [(i // self.per_thread, i % self.per_thread) for i in range(self.turns)]

    def round_robin(self) -> list[tuple[int, int]]:
        """(thread, turn in thread), the threads taking turns."""
        return [(i % self.threads, i // self.threads) for i in range(self.turns)]


def overhead_row(adapter: str, samples_ms: list[float], plan: Plan, note: str = "", judged: bool = True) -> Row:
    p50, p99 = percentile(samples_ms, 50), percentile(samples_ms, 99)
    return Row(
        measure="overhead",
        adapter=adapter,
        unit="ms",
        p50=p50,
        p99=p99,
        target=TARGET if judged else "",
        passed=(p50 <= 10 and p99 <= 40) if judged else None,
        note="; ".join(filter(None, [plan.describe(len(samples_ms)), note])),
        extra={"turns": len(samples_ms), "max_ms": max(samples_ms), "ttft_s": plan.ttft},
    )


async def floor_samples(base_url: str, plan: Plan, settings: Settings) -> list[float]:
    """The bare SDK (with threadline's HTTP client): a conversation per thread, one streamed response per turn."""
    model, instructions = settings.model, settings.instructions
    client = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, http_client=openai_http_client(settings))
    conversations: dict[int, str] = {}
    samples: list[float] = []
    try:
        schedule = [(-1, n) for n in range(WARM_TURNS)] + plan.schedule()
        for index, (thread, n) in enumerate(schedule):
            started = time.monotonic()
            if thread not in conversations:
                conversations[thread] = (await client.conversations.create(metadata={"thread": str(thread)})).id
            content = [{"type": "input_text", "text": f"question {n} in thread {thread}"}]
            stream = await client.responses.create(
                model=model,
                conversation=conversations[thread],
                instructions=instructions,
                input=cast(Any, [{"role": "user", "content": content}]),
                stream=True,
            )
            first: float | None = None
            async for event in stream:
                if first is None and event.type == "response.output_text.delta":
                    first = time.monotonic()
            if index >= WARM_TURNS and first is not None:
                samples.append((first - started - plan.ttft) * 1000)
    finally:
        await client.close()
    return samples


async def core_samples(base_url: str, plan: Plan, folder: Path) -> list[float]:
    async with open_runtime(bench_settings(folder, base_url)) as runtime:
        await warm_up(runtime)
        samples = []
        for index, (thread, n) in enumerate(plan.schedule()):
            incoming = message("core", f"t{thread}", f"question {n} in thread {thread}", f"ev{index}")
            started = time.monotonic()
            reply = await run_turn(runtime, incoming)
            assert reply.first_text is not None
            samples.append((reply.first_text - started - plan.ttft) * 1000)
        return samples


class _StampedInput(io.StringIO):
    """Console stdin: stamps when a message line (not a /command) is handed to the adapter."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.waiting: float | None = None

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]  # StringIO's is str
        line = super().readline(-1 if size is None else size)
        if line.strip() and not line.startswith("/"):
            self.waiting = time.monotonic()
        return line


class _StampedOutput(io.StringIO):
    """Console stdout: the first text written after a message line was read is the first visible text."""

    def __init__(self, stdin: _StampedInput) -> None:
        super().__init__()
        self.stdin = stdin
        self.samples: list[float] = []

    def write(self, s: str) -> int:
        waiting = self.stdin.waiting
        if waiting is not None and s.strip() and s != CONSOLE_PROMPT:
            self.samples.append(time.monotonic() - waiting)
            self.stdin.waiting = None
        return super().write(s)


async def console_samples(base_url: str, plan: Plan, folder: Path) -> list[float]:
    lines = [f"warm-up {n}" for n in range(WARM_TURNS)]
    for thread, n in plan.schedule():
        if n == 0:
            lines.append("/new")
        lines.append(f"question {n} in thread {thread}")
    stdin = _StampedInput("\n".join(lines) + "\n")
    out = _StampedOutput(stdin)
    async with open_runtime(bench_settings(folder, base_url)) as runtime:
        await warm_up(runtime)
        await ConsoleAdapter(runtime.gateway, stdin=stdin, out=out, err=io.StringIO()).run()
    timed = out.samples[WARM_TURNS:]
    if len(timed) != plan.turns:
        raise RuntimeError(f"the console answered {len(timed)} of {plan.turns} timed lines")
    return [(s - plan.ttft) * 1000 for s in timed]


async def platform_samples(kind: str, base_url: str, plan: Plan, folder: Path) -> list[float]:
    """A bot process against the fake platform: the fake's send → the fake's stamp of the first text."""
    # The overhead rows measure the code path, not Slack's pacing: a few hundred answers in a few minutes in one
    # channel are beyond Slack's per-minute tiers, so the bot's rate windows are shrunk to a second (the cadence
    # rows measure pacing against the real windows).
    env = {"SLACK_RATE_WINDOW_SECS": "1"} if kind.startswith("slack") else None
    async with running_bot(kind, folder, base_url, env) as where:
        threads: dict[int, Any] = {}
        samples = []
        for index, (thread, n) in enumerate([(-1, 0), (-2, 0), (-1, 1), *plan.round_robin()]):
            sent_at, threads[thread] = await where.send(f"question {n} in thread {thread}", threads.get(thread))
            shown = await where.first_text(threads[thread], sent_at)
            if isinstance(where, SlackWorld):
                await where.answered(threads[thread], sent_at)
            await asyncio.sleep(PLATFORM_GAP)
            if index >= 3:  # three warm-up turns
                samples.append((shown - sent_at - plan.ttft) * 1000)
        return samples


async def measure(base_url: str, plan: Plan, folder: Path, adapters: list[str]) -> list[Row]:
    """Overhead rows, against one running model server."""
    rows = []
    if "floor" in adapters:
        settings = bench_settings(folder / "floor", base_url)
        floor = await floor_samples(base_url, plan, settings)
        note = "bare openai SDK → same fake: the floor (fake + SDK + loopback), not threadline"
        rows.append(overhead_row("(floor) bare SDK", floor, plan, note, judged=False))
    if "core" in adapters:
        core = await core_samples(base_url, plan, folder / "core")
        rows.append(overhead_row("core (TurnHandler+engine)", core, plan))
    if "console" in adapters:
        rows.append(overhead_row("console", await console_samples(base_url, plan, folder / "console"), plan))
    for kind in ("slack-socket", "slack-http", "discord"):
        if kind in adapters:
            note = "bot process; fake platform's send → its stamp of the first text call"
            rows.append(overhead_row(kind, await platform_samples(kind, base_url, plan, folder / kind), plan, note))
    return _against_floor(rows)


async def new_thread_samples(base_url: str, plan: Plan, folder: Path, pool: int) -> list[float]:
    """Core overhead of first messages only, each in a new thread; the pool (when on) is full when timing starts."""
    async with open_runtime(bench_settings(folder, base_url, conversation_pool=pool)) as runtime:
        await warm_up(runtime)
        await runtime.engine.pool.settled()
        samples = []
        for index in range(plan.new_threads):
            await asyncio.sleep(NEW_THREAD_GAP)
            incoming = message("core", f"new{index}", f"first question in thread new{index}", f"new{index}")
            started = time.monotonic()
            reply = await run_turn(runtime, incoming)
            assert reply.first_text is not None
            samples.append((reply.first_text - started - plan.ttft) * 1000)
        return samples


async def new_thread_rows(base_url: str, plan: Plan, folder: Path, conversation_latency: float) -> list[Row]:
    """Pool off, then on, against one model server whose conversation calls take ``conversation_latency``."""
    rows = []
    for pool in (0, POOL_SIZE):
        samples = await new_thread_samples(base_url, plan, folder / f"pool-{pool}", pool)
        p95 = percentile(samples, 95)
        rows.append(
            Row(
                measure="overhead: a new thread's first message",
                adapter=f"core, conversation pool of {pool}" if pool else "core, conversation pool off",
                unit="ms",
                p50=percentile(samples, 50),
                p99=percentile(samples, 99),
                note=(
                    f"{len(samples)} new threads {NEW_THREAD_GAP:g} s apart, TTFT {plan.ttft * 1000:g} ms, "
                    f"conversation create/update {conversation_latency * 1000:g} ms; p95 {p95:.1f} ms"
                ),
                extra={"turns": len(samples), "p95_ms": p95, "max_ms": max(samples), "samples_ms": samples},
            )
        )
    off, on = rows
    return [off, dataclasses.replace(on, ratio=(on.p50 or 0) / off.p50 if off.p50 else None)]


def _against_floor(rows: list[Row]) -> list[Row]:
    """Ratio column: each row's p50 over the bare SDK's p50 (what threadline adds on top of the SDK)."""
    floor = next((r.p50 for r in rows if r.adapter.startswith("(floor)")), None)
    if not floor:
        return rows
    return [r if r.adapter.startswith("(floor)") else dataclasses.replace(r, ratio=(r.p50 or 0) / floor) for r in rows]
