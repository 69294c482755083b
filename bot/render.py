"""Rendering one answer: neutral stream events (``bot.stream_events``) applied to a platform's ``ReplyStream``.

Backend-neutral: whatever produced the events (the Responses API today), the reply sees the same calls.
"""

from __future__ import annotations

import asyncio
import sys

from bot.protocols import ReplyStream
from bot.sources import Sources
from bot.stream_events import Citation, FileOut, SearchResult, Status, Step, StreamEvent, TextDelta
from bot.types import OutgoingFile, TaskStep


class TurnRender:
    """Per-turn rendering state: makes sure ``start`` precedes any output, and collects the text and citations.

    The first status ("thinking…") is a platform API call; it runs while the model is asked, and the reply
    sees nothing else until it has returned, so the adapter still gets its calls one at a time, in order.

    ``fence`` (e.g. ``"json"``) puts the model's text in a code block of that language; notes appended with
    ``append`` close the block first.

    A cited document gets a numbered marker (``[1]``) where the citation's ``index`` falls in the model's text
    (at once if the text is already past it), and ``cite_sources`` ends the answer with the numbered sources.
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
        self.sources = Sources()
        self._chars = 0  # characters of the model's text in the current message: what a citation's index counts
        self._marks: list[tuple[int, int]] = []  # (index, source number) waiting for the text to reach index
        self._marked: set[tuple[int, int]] = set()  # (position, number) already marked: no "[1][1]"
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
            case SearchResult():
                self.sources.found(event)
            case Citation(kind="file_citation"):
                await self._cite(event)
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
        while self._marks and self._marks[0][0] <= self._chars + len(delta):
            index, number = self._marks.pop(0)
            head = max(0, index - self._chars)
            await self._write(delta[:head])
            self._chars += head
            delta = delta[head:]
            await self._mark(number)
        await self._write(delta)
        self._chars += len(delta)

    async def _cite(self, citation: Citation) -> None:
        number = self.sources.number(citation)
        if self.fence:
            return  # a marker would break the JSON; the sources block still names the document
        index = citation.index if citation.index is not None else self._chars
        if 0 < index <= self._chars:
            await self._mark(number)
        else:  # not reached yet; 0 (no place in the text) waits for the message's end
            self._marks.append((index or sys.maxsize, number))
            self._marks.sort()

    async def _mark(self, number: int) -> None:
        if (self._chars, number) not in self._marked:
            self._marked.add((self._chars, number))
            await self._write(f"[{number}]")

    async def _flush_marks(self) -> None:
        """Markers whose place the text never reached go at the end of the message."""
        marks, self._marks = self._marks, []
        for _index, number in marks:
            if self._chars:
                await self._mark(number)

    async def cite_sources(self) -> None:
        """End the answer with its numbered sources (nothing when no document was cited)."""
        await self._flush_marks()
        if block := self.sources.block():
            await self.append(block)

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
        await self._flush_marks()
        await self.close_fence()
        self._gap = True
        self._chars = 0
        self._marked.clear()

    async def attach(self, part: OutgoingFile) -> None:
        await self.ensure_started()
        await self.reply.attach(part)

    async def preview(self, part: OutgoingFile) -> None:
        await self.settle()
        await self.reply.preview(part)

    async def step(self, step: TaskStep) -> None:
        await self.settle()
        await self.reply.step(step)
