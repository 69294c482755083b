"""Reply streams the core offers adapters for short answers (commands, refusals) that are sent in one piece."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bot.audio_encode import AudioFormat
from bot.types import OutgoingFile, TaskStep


class TextReply:
    """Collects a short answer and sends it once, at ``finish`` or ``fail``, through ``send`` (when given).

    ``text`` holds what was said, for adapters that must hand it back themselves (Slack's slash-command ack).
    """

    audio_format = AudioFormat.OGG_OPUS

    def __init__(self, send: Callable[[str], Awaitable[None]] | None = None) -> None:
        self._send = send
        self._parts: list[str] = []
        self.failed = False
        self.sent = False

    @property
    def text(self) -> str:
        return "".join(self._parts)

    async def start(self) -> None:
        return None

    async def append(self, delta: str) -> None:
        self._parts.append(delta)

    async def attach(self, part: OutgoingFile) -> None:
        self._parts.append(f"\n({part.filename} could not be shown here)")

    async def set_status(self, status: str) -> None:
        return None

    async def preview(self, part: OutgoingFile) -> None:
        return None

    async def step(self, step: TaskStep) -> None:
        return None

    async def finish(self) -> None:
        await self._deliver()

    async def fail(self, message: str) -> None:
        self.failed = True
        self._parts = [message]
        await self._deliver()

    async def _deliver(self) -> None:
        if self._send is not None and not self.sent:
            self.sent = True
            await self._send(self.text)
