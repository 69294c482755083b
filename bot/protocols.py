"""The seams between the core and the platforms: what an adapter offers, and how a reply is rendered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, runtime_checkable

from bot.audio_encode import AudioFormat
from bot.types import Fetch, IncomingMessage, OutgoingFile, TaskStep, ThreadKey


@runtime_checkable
class ReplyStream(Protocol):
    """One answer being rendered on a platform, in the thread the message came from.

    The engine calls ``start`` once, then any mix of ``append``/``attach``/``set_status``, then exactly one of
    ``finish`` or ``fail``. ``fail`` may also come without ``start`` (nothing was said yet).
    ``audio_format`` is the encoding the platform wants for a spoken reply (Ogg/Opus for a Discord voice message).
    """

    audio_format: AudioFormat

    async def start(self) -> None: ...

    async def append(self, delta: str) -> None: ...

    async def attach(self, part: OutgoingFile) -> None: ...

    async def set_status(self, status: str) -> None: ...

    async def step(self, step: TaskStep) -> None:
        """Tool work started or finished. Platforms without steps show a started step as a status line."""
        ...

    async def preview(self, part: OutgoingFile) -> None:
        """A provisional image (a partial preview while one is drawn). Platforms that can't show it ignore it."""
        ...

    async def finish(self) -> None: ...

    async def fail(self, message: str) -> None: ...


# The cancel message of a turn stopped by its user (a stop button, a ⏹ reaction, Ctrl-C in the console): the
# engine ends the answer with "(stopped)" instead of treating it as a shutdown.
STOP_REQUESTED = "threadline: stop requested by the user"


def is_stop_request(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.CancelledError) and bool(exc.args) and exc.args[0] == STOP_REQUESTED


class TurnEngine(Protocol):
    """Backend-neutral turn interface: one incoming message in, one streamed reply out.

    A turn cancelled with ``STOP_REQUESTED`` ends its answer with "(stopped)", keeps what was said, records what
    it can of the usage, and returns normally.
    """

    async def run_turn(self, message: IncomingMessage, reply: ReplyStream) -> None: ...

    async def model_for(self, platform: str, channel: str) -> str:
        """The model new turns in this channel use (a per-channel choice, else the configured default)."""
        ...

    async def forget(self, key: ThreadKey) -> None:
        """Drop the thread's model-side memory: the next message starts a new conversation."""
        ...


class Adapter(Protocol):
    """A chat platform connection. ``run`` returns when the adapter stops (the console at end of input)."""

    name: str

    async def run(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Checkpointed(Protocol):
    """A reply that reports the platform message it posted first (a Slack stream's ``ts``) before it streams more.

    The core sets ``on_posted`` before the turn runs and stores the reference in the durable inbox, so a retry
    after a crash finishes or replaces that message instead of posting a second one.
    """

    on_posted: Callable[[str], Awaitable[None]] | None


class Resumer(Protocol):
    """How an adapter answers a message this process did not receive (after a restart, or from another replica).

    Adapters register one per platform with ``Gateway.register``.
    """

    def reply_for(self, key: ThreadKey, address: Mapping[str, str], *, posted: str | None) -> ReplyStream:
        """A reply to the thread at ``address`` (an ``IncomingMessage.reply_address``). ``posted`` names a message
        an interrupted attempt already posted there: the reply finishes or replaces it instead of posting anew."""
        ...

    def fetch_for(self, key: ThreadKey, source: str) -> Fetch:
        """Download an attachment again from its ``Attachment.source``."""
        ...
