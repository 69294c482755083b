"""Rendering one answer: neutral stream events (``bot.stream_events``) applied to a platform's ``ReplyStream``.

Backend-neutral: whatever produced the events (the Responses API today), the reply sees the same calls.
"""

from __future__ import annotations

import asyncio

from bot.protocols import ReplyStream
from bot.stream_events import Citation, FileOut, Status, Step, StreamEvent, TextDelta
from bot.types import OutgoingFile, TaskStep


class TurnRender:
    """Per-turn rendering state: makes sure ``start`` precedes any output, and collects the text and citations.

    The first status ("thinking…") is a platform API call; it runs while the model is asked, and the reply
    sees nothing else until it has returned, so the adapter still gets its calls one at a time, in order.

    ``fence`` (e.g. ``"json"``) puts the model's text in a code block of that language; notes appended with
    ``append`` close the block first.
    """

    def __init__(self, reply: ReplyStream, first_status: str, *, fence: str | None = None) -> None:
        self.reply = reply
        self.started = False
        self.text: list[str] = []
        self.citations: list[Citation] = []
        self.fence = fence
        self._fence_open = False
        self._answered = False
        self._gap = False
        self._status: asyncio.Task[None] | None = asyncio.ensure_future(reply.set_status(first_status))

    async def settle(self) -> None:
        """Wait for the first status call (raising what it raised) before the reply is used again."""
        if self._status is not None:
            status, self._status = self._status, None
            await status

    async def abandon(self, *, stopped: bool) -> None:
        """The turn failed (or was stopped: then the status call is cancelled); the first status call ends
        before the error reply goes out."""
        if self._status is not None:
            status, self._status = self._status, None
            if stopped:
                status.cancel()
            await asyncio.gather(status, return_exceptions=True)

    async def apply(self, event: StreamEvent) -> None:
        """Show one event. Events that are not for the user (tool calls, completion, the response id) are the
        turn loop's, and ignored here."""
        match event:
            case TextDelta(text=text):
                await self.answer(text)
            case Status(text=text):
                await self.set_status(text)
            case Step(id=step_id, title=title, done=done):
                await self.step(TaskStep(step_id, title, done))
            case FileOut(file=part):
                await self.attach(part)
            case Citation() if event not in self.citations:
                self.citations.append(event)

    async def set_status(self, status: str) -> None:
        await self.settle()
        await self.reply.set_status(status)

    async def ensure_started(self) -> None:
        await self.settle()
        if not self.started:
            self.started = True
            await self.reply.start()

    async def _write(self, delta: str) -> None:
        if delta:
            await self.ensure_started()
            self.text.append(delta)
            await self.reply.append(delta)

    async def answer(self, delta: str) -> None:
        """The model's own text (inside the fence, when there is one; after a blank line in a later round)."""
        if not delta:
            return
        if self._gap and self._answered:
            await self._write("\n\n")
        self._gap = False
        if self.fence and not self._fence_open:
            self._fence_open = True
            await self._write(f"```{self.fence}\n")
        self._answered = True
        await self._write(delta)

    async def append(self, delta: str) -> None:
        """A note of threadline's own ("(stopped)", "cut short"…), outside any code block."""
        await self.close_fence()
        await self._write(delta)

    async def close_fence(self) -> None:
        if self._fence_open:
            self._fence_open = False
            await self._write("\n```")

    async def new_round(self) -> None:
        """The model answers again after tool calls: its text starts a new paragraph (and a new code block)."""
        await self.close_fence()
        self._gap = True

    async def attach(self, part: OutgoingFile) -> None:
        await self.ensure_started()
        await self.reply.attach(part)

    async def preview(self, part: OutgoingFile) -> None:
        await self.settle()
        await self.reply.preview(part)

    async def step(self, step: TaskStep) -> None:
        await self.settle()
        await self.reply.step(step)
