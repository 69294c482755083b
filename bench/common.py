"""Pieces every measure shares: bench settings, a timestamping reply stream, messages, warm-up."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.audio_encode import AudioFormat
from bot.runtime import Runtime
from bot.settings import Settings
from bot.types import IncomingMessage, OutgoingFile, TaskStep, ThreadKey
from tests.helpers import make_settings


def bench_settings(folder: Path, openai_base_url: str, **overrides: Any) -> Settings:
    """The test settings (fake OpenAI, a fresh database, no hosted tools), quiet logs."""
    overrides.setdefault("log_level", "WARNING")
    return make_settings(folder, openai_base_url, **overrides)


class TimedReply:
    """A ReplyStream that stamps the first text and the end of the answer: ``time.monotonic`` unless another
    ``clock`` is given (``time.time`` when stamps from several processes are compared)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.first_text: float | None = None
        self.ended: float | None = None
        self.started: float | None = None
        self.text = ""
        self.failed: str | None = None

    async def start(self) -> None:
        self.started = self.clock()

    async def append(self, delta: str) -> None:
        if self.first_text is None:
            self.first_text = self.clock()
        self.text += delta

    async def attach(self, part: OutgoingFile) -> None:
        return None

    audio_format = AudioFormat.OGG_OPUS

    async def preview(self, part: OutgoingFile) -> None:
        return None

    async def step(self, step: TaskStep) -> None:
        return None

    async def set_status(self, status: str) -> None:
        return None

    async def finish(self) -> None:
        self.ended = self.clock()

    async def fail(self, message: str) -> None:
        self.failed = message
        self.ended = self.clock()


def message(platform: str, thread: str, text: str, event_id: str, user: str = "U1") -> IncomingMessage:
    """A message as an adapter would build it, with a dedupe key (so the store's claim runs too)."""
    key = ThreadKey(platform, "W1", "C1", thread)
    return IncomingMessage(key=key, user_id=user, text=text, dedupe_keys=(f"{platform}:{event_id}",))


async def run_turn(runtime: Runtime, incoming: IncomingMessage, reply: TimedReply | None = None) -> TimedReply:
    reply = reply or TimedReply()
    submission = await runtime.gateway.submit(incoming, reply)
    if submission.done is None:
        raise RuntimeError(f"a benchmark message was not taken on ({submission.outcome})")
    await submission.done
    if reply.failed:
        raise RuntimeError(f"a benchmark turn failed: {reply.failed}")
    return reply


async def warm_up(runtime: Runtime, platform: str = "warm", turns: int = 3) -> None:
    """Build the SDK's pydantic schemas and open connections before anything is timed."""
    for n in range(turns):
        await run_turn(runtime, message(platform, "warm", f"warm-up {n}", f"warm-{n}-{time.monotonic_ns()}"))
