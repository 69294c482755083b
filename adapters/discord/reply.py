"""One answer rendered on Discord: the first words are posted at once, then the same message is edited with
coalesced text at most once per ``edit_interval`` seconds, and the answer continues in new messages past 2,000
characters. Every send and edit goes through the adapter's per-channel throttle. Files follow the text in order;
spoken replies go out as native voice messages. The typing indicator runs from the first status to the end.

If the thread is deleted while the answer is being written (Discord answers 404 Unknown Channel), the answer
ends: ``ChannelGone`` goes up to the turn handler, which logs it in one line, and nothing more is sent there.

When the answer has finished (not failed), ``final_message`` names its last message: the adapter adds the 👍/👎
feedback reactions there, where a reader of the whole answer ends up.

Every message it creates carries a nonce made of the turn's id and the part's index, sent with ``enforce_nonce``:
a send whose answer was lost (the connection dropped, a gateway timeout) is retried with the same nonce, and
Discord returns the message it already made instead of posting it twice. The same holds across processes: an
answer resumed after a crash, or by another replica, has the same nonces, so its first post returns the message
the interrupted attempt made (within Discord's nonce window, a few minutes), and the reply edits that message
(whatever it held) into the new answer instead of posting a second one. Warnings (an error, "interrupted") count
apart (``Nonces.note``), so they never land on an answer's part.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
import discord

from adapters.discord.convert import message_nonce
from adapters.discord.throttle import ChannelThrottle, OverBudget
from adapters.discord.voice import VoiceMessageError, send_voice_message
from bot.audio_encode import AudioFormat
from bot.errors import UserFacingError
from bot.text_split import split_message
from bot.types import OutgoingFile, PartKind, TaskStep

log = logging.getLogger("threadline.discord")

MESSAGE_LIMIT = 2000
EMPTY_ANSWER = "_(The model returned an empty answer.)_"
UNKNOWN_CHANNEL = 10003  # Discord's code for a channel (or thread) that no longer exists
SEND_ATTEMPTS = 3
RETRY_DELAY_SECS = 0.5  # before the second attempt; twice that before the third
# A request that may or may not have reached Discord (discord.py itself retries 5xx a few times first).
RETRYABLE: tuple[type[BaseException], ...] = (aiohttp.ClientConnectionError, TimeoutError, discord.DiscordServerError)

T = TypeVar("T")


class ChannelGone(UserFacingError):
    """The thread or channel of the answer was deleted: the turn ends here, with nowhere left to say so."""


OpenChannel = Callable[[], Awaitable[discord.abc.Messageable]]
EarlyReply = Callable[[str], Awaitable[None]]


class Nonces:
    """The nonces of the messages one turn creates, in order: ``turn_id`` (the message or interaction the turn
    answers) and the part's index; warnings are counted apart (``note``). Shared by everything that posts for the
    turn (its early reply too)."""

    def __init__(self, turn_id: int | None = None) -> None:
        self.turn_id = secrets.randbits(63) if turn_id is None else turn_id
        self._next = 0
        self._notes = 0

    def next(self) -> str:
        nonce = message_nonce(self.turn_id, self._next)
        self._next += 1
        return nonce

    def note(self) -> str:
        nonce = message_nonce(self.turn_id, self._notes, note=True)
        self._notes += 1
        return nonce


def upload_limit(channel: object) -> int:
    """Bytes one upload may have here: the guild's limit (boosts raise it), else Discord's default."""
    guild = getattr(channel, "guild", None)
    if guild is not None:
        return int(guild.filesize_limit)
    return discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES


def _mb(size: int) -> str:
    return f"{size / 1048576:.1f} MB"


@dataclass
class _Posted:
    message: discord.Message
    content: str
    written_at: float


class DiscordReply:
    audio_format = AudioFormat.OGG_OPUS  # a native voice message needs Ogg/Opus

    def __init__(
        self,
        *,
        open_channel: OpenChannel,
        throttle: ChannelThrottle,
        http: discord.http.HTTPClient,
        edit_interval: float,
        typing_interval: float,
        early_reply: EarlyReply | None = None,
        nonces: Nonces | None = None,
        on_finished: Callable[[DiscordReply], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._open = open_channel
        self._on_finished = on_finished
        self._nonces = nonces or Nonces()
        self._throttle = throttle
        self._http = http
        self._edit_interval = edit_interval
        self._typing_interval = typing_interval
        self._early_reply = early_reply
        self._clock = clock
        self._channel_obj: discord.abc.Messageable | None = None
        self._channel_lock = asyncio.Lock()
        self._text = ""
        self._posted: list[_Posted] = []
        self._renderer: asyncio.Task[None] | None = None
        self._typing: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._anything_sent = False
        self._last: tuple[int, int] | None = None  # (channel id, message id) of the newest message posted
        self._finished = False
        self._done = False
        self._gone = False

    # --- ReplyStream ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self._channel()

    async def append(self, delta: str) -> None:
        if self._error is not None:
            raise self._error
        self._text += delta
        if self._renderer is None or self._renderer.done():
            self._renderer = asyncio.create_task(self._render(), name="discord-render")

    async def attach(self, part: OutgoingFile) -> None:
        await self._flush()
        self._text, self._posted = "", []  # text after a file continues below it, in new messages
        channel = await self._channel()
        limit = upload_limit(channel)
        if len(part.data) > limit:
            log.info("not attaching %s: %d bytes is over the upload limit %d", part.filename, len(part.data), limit)
            await self._send(
                channel,
                content=f"_({part.filename} is {_mb(len(part.data))}, over the {_mb(limit)} upload limit here, "
                "so I couldn't attach it.)_",
            )
            return
        if part.kind is PartKind.AUDIO and await self._send_voice(channel, part):
            return
        await self._send(channel, upload=part)

    async def step(self, step: TaskStep) -> None:
        """Discord has no steps: the typing indicator stands for work in progress."""
        if not step.done:
            await self.set_status(step.status)

    async def preview(self, part: OutgoingFile) -> None:
        """Discord shows the finished image only: a preview would cost a write of the channel's few per 5 s."""
        await self.set_status("drawing…")

    async def set_status(self, status: str) -> None:
        channel = await self._channel()
        if self._typing is None and not self._done:
            self._typing = asyncio.create_task(self._keep_typing(channel), name="discord-typing")

    async def finish(self) -> None:
        try:
            await self._flush()
            if not self._anything_sent:
                await self._send(await self._channel(), content=EMPTY_ANSWER)
            self._finished = True
        finally:
            await self._stop_typing()
        if self._on_finished is not None and self.final_message is not None:
            self._on_finished(self)

    @property
    def answer_ref(self) -> str | None:
        """The answer's last message id once it has finished: a 🔍 reaction on it shows the answer's code."""
        final = self.final_message
        return str(final[1]) if final is not None else None

    @property
    def final_message(self) -> tuple[int, int] | None:
        """(channel id, message id) of the answer's last message once it has finished; None before, or when it
        failed (a warning is not an answer to rate)."""
        return self._last if self._finished and not self._gone else None

    async def fail(self, message: str) -> None:
        await self._stop_typing()
        if self._gone:
            return
        text = f"⚠️ {message}"
        if self._channel_obj is None and self._early_reply is not None:
            await self._early_reply(text)
            return
        with contextlib.suppress(Exception):
            await self._flush()
        with contextlib.suppress(ChannelGone):
            await self._send(await self._channel(), content=text, nonce=self._nonces.note())

    # --- internals ------------------------------------------------------------------------------------------
    async def _channel(self) -> discord.abc.Messageable:
        async with self._channel_lock:
            if self._channel_obj is None:
                self._channel_obj = await self._open()
            return self._channel_obj

    @contextlib.contextmanager
    def _unless_gone(self) -> Iterator[None]:
        """Turn Discord's 404 Unknown Channel for a write into ``ChannelGone`` (and remember it)."""
        try:
            yield
        except discord.NotFound as exc:
            if exc.code != UNKNOWN_CHANNEL:
                raise
            self._gone = True
            raise ChannelGone("the thread was deleted while I was answering") from None

    async def _send(
        self,
        channel: discord.abc.Messageable,
        *,
        content: str | None = None,
        upload: OutgoingFile | None = None,
        nonce: str | None = None,
    ) -> discord.Message:
        """Post a new message (text, or a file) with the turn's next nonce (or ``nonce``). A text that Discord
        answers with an older message of that nonce (an interrupted attempt's) is written into it."""
        nonce = nonce or self._nonces.next()
        cid = _channel_id(channel)

        async def send() -> discord.Message:
            file = discord.File(io.BytesIO(upload.data), filename=upload.filename) if upload else None
            return await channel.send(content=content, file=file, nonce=nonce)  # type: ignore[arg-type]

        message = await self._retrying(cid, send)
        if upload is None and content is not None and not _shows(message, content):
            sent = message
            message = await self._retrying(cid, lambda: sent.edit(content=content))
        self._posted_new(cid, message.id)
        return message

    def _posted_new(self, channel_id: int, message_id: int) -> None:
        self._anything_sent = True
        self._last = (channel_id, message_id)

    async def _retrying(self, channel_id: int, call: Callable[[], Awaitable[T]], *, slot_held: bool = False) -> T:
        """Run one write, again (in a new throttle slot) when its outcome is unknown; a post carries the same
        nonce each time, so Discord makes it once. ``slot_held``: the caller holds the slot of the first try."""
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                if slot_held and attempt == 1:
                    with self._unless_gone():
                        return await call()
                async with self._throttle.write(channel_id):
                    with self._unless_gone():
                        return await call()
            except RETRYABLE as exc:
                if attempt == SEND_ATTEMPTS:
                    raise
                log.info("a write to Discord may not have arrived (%s); trying again", type(exc).__name__)
                await asyncio.sleep(RETRY_DELAY_SECS * attempt)
        raise AssertionError("unreachable")

    async def _send_voice(self, channel: discord.abc.Messageable, part: OutgoingFile) -> bool:
        """Send a native voice message; False (after a log line) when the plain-file fallback should run."""
        nonce = self._nonces.next()
        cid = _channel_id(channel)
        try:
            sent = await self._retrying(
                cid, lambda: send_voice_message(self._http, cid, part.data, part.duration_secs, nonce=nonce)
            )
        except (VoiceMessageError, discord.HTTPException) as exc:
            log.warning("voice message failed (%s); sending the audio as a file", exc)
            return False
        message_id = str(sent.get("id"))
        self._anything_sent = True
        if message_id.isdigit():
            self._posted_new(cid, int(message_id))
        return True

    async def _flush(self) -> None:
        """Render all text appended so far (honouring the edit interval and the throttle)."""
        while self._renderer is not None and not self._renderer.done():
            await asyncio.shield(self._renderer)
        if self._text.strip():
            self._renderer = asyncio.create_task(self._render(), name="discord-render")
            await self._renderer
        if self._error is not None:
            raise self._error

    def _pending(self) -> tuple[int, str] | None:
        """The first message that differs from the text: (index, wanted content), or None when in sync."""
        chunks = split_message(self._text, MESSAGE_LIMIT) if self._text.strip() else []
        for index, chunk in enumerate(chunks):
            if index >= len(self._posted) or self._posted[index].content != chunk:
                return index, chunk
        return None

    def _edit_wait(self, index: int) -> float:
        """Seconds until message ``index`` may be edited again (0 for a new message)."""
        if index >= len(self._posted):
            return 0.0
        return max(0.0, self._posted[index].written_at + self._edit_interval - self._clock())

    async def _render(self) -> None:
        try:
            channel = await self._channel()
            while (pending := self._pending()) is not None:
                if wait := self._edit_wait(pending[0]):
                    await asyncio.sleep(wait)  # coalesce: whatever arrives meanwhile goes into this edit
                    continue
                async with self._throttle.write(_channel_id(channel)):
                    # More text may have arrived while waiting for the throttle: write the latest.
                    while (pending := self._pending()) and (wait := self._edit_wait(pending[0])):  # noqa: ASYNC110 (time)
                        await asyncio.sleep(wait)
                    if pending is None:
                        return
                    await self._write(channel, *pending)
        except Exception as exc:
            if not isinstance(exc, ChannelGone):  # that one is the turn's end, logged once by the turn handler
                log.warning("could not render the answer on Discord: %s", exc)
            self._error = exc

    async def _write(self, channel: discord.abc.Messageable, index: int, content: str) -> None:
        """Edit message ``index`` or post it (the caller holds a throttle slot for the first try)."""
        cid = _channel_id(channel)
        if index < len(self._posted):
            message = self._posted[index].message
            edited = await self._retrying(cid, lambda: message.edit(content=content), slot_held=True)
            self._posted[index] = _Posted(edited, content, self._clock())
        else:
            nonce = self._nonces.next()
            sent = await self._retrying(cid, lambda: channel.send(content=content, nonce=nonce), slot_held=True)
            # An interrupted attempt's message of this nonce comes back as it was: the next render edits it.
            shown = content if _shows(sent, content) else str(sent.content or "")
            self._posted.append(_Posted(sent, shown, self._clock()))
            self._posted_new(cid, sent.id)

    async def _keep_typing(self, channel: discord.abc.Messageable) -> None:
        while True:
            try:
                await self._http.send_typing(_channel_id(channel))
            except OverBudget:
                pass  # many answers at once: their text needs the requests more than this indicator does
            except discord.HTTPException as exc:
                if isinstance(exc, discord.NotFound) and exc.code == UNKNOWN_CHANNEL:
                    self._gone = True
                    return
                log.debug("typing indicator failed: %s", exc)
            await asyncio.sleep(self._typing_interval)

    async def _stop_typing(self) -> None:
        self._done = True
        task, self._typing = self._typing, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _shows(message: discord.Message, content: str) -> bool:
    """Whether Discord's copy of a message holds this text (Discord trims the ends of what it is sent)."""
    return isinstance(message.content, str) and message.content.strip() == content.strip()


def _channel_id(channel: discord.abc.Messageable) -> int:
    return int(channel.id)  # type: ignore[attr-defined]
