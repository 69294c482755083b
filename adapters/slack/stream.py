"""One answer rendered in a Slack thread: native streaming with a chat.update fallback, split long answers,
files in between, and the assistant status line.

Text is coalesced and pushed at most every ``slack_stream_interval_secs`` (native) or
``slack_update_interval_secs`` (fallback edits of one message). A native stream that cannot start, or that dies
mid-answer (``message_not_in_streaming_state``), continues as one posted message edited with ``chat.update`` on
the same ts, so nothing already shown is lost or repeated. When the live message outgrows the limit it is cut
with ``bot.text_split.split_message`` (paragraph boundaries, code fences never broken) and the rest continues in
a new message; at the end every message is reconciled to exactly ``split_message(answer)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.settings import SlackSettings
from bot.audio_encode import AudioFormat
from bot.text_split import split_message
from bot.types import OutgoingFile

log = logging.getLogger("threadline.slack.stream")

Uploader = Callable[[OutgoingFile], Awaitable[bool]]

_FENCE_LINE = re.compile(r"^\s*(`{3,}|~{3,})\s*$")
EMPTY_ANSWER = "_(The model returned an empty answer.)_"


@dataclass(frozen=True, slots=True)
class ReplyTarget:
    """Where an answer goes, and who it is for (native streams in channels name their recipient)."""

    channel: str
    thread_ts: str
    recipient_user_id: str
    recipient_team_id: str


@dataclass(frozen=True, slots=True)
class StreamOptions:
    native: bool = True
    stream_interval: float = 0.65
    update_interval: float = 1.25
    limit: int = 3900

    @classmethod
    def from_settings(cls, settings: SlackSettings) -> StreamOptions:
        return cls(
            native=settings.slack_native_streaming,
            stream_interval=settings.slack_stream_interval_secs,
            update_interval=settings.slack_update_interval_secs,
            limit=settings.slack_message_limit,
        )


@dataclass
class _Message:
    ts: str | None = None
    shown: str = ""  # what Slack shows now
    stream: AsyncChatStream | None = None  # set while the message is a live native stream
    last_edit: float = float("-inf")
    settled: bool = False


@dataclass
class _TextRun:
    """The text between two files: one or more messages."""

    raw: str = ""
    messages: list[_Message] = field(default_factory=list)
    prefix: str = ""  # the live (last) message shows prefix + raw[raw_start:]
    raw_start: int = 0

    def live_text(self) -> str:
        return self.prefix + self.raw[self.raw_start :]


def _normalised(text: str) -> str:
    """Text as it renders, for deciding whether an edit is needed: blank lines and trailing spaces don't count."""
    return "\n".join(line.rstrip() for line in text.split("\n") if line.strip())


def _tail_for_live(chunk: str, raw: str) -> str:
    """The last chunk as the start of a still-growing message: drop the fence closer the splitter added to an
    unclosed fence (the model's own closer will follow), and keep the raw text's trailing whitespace."""
    body, _, last = chunk.rpartition("\n")
    if body and _FENCE_LINE.match(last) and not raw.rstrip().endswith(last.strip()):
        chunk = body
    return chunk.rstrip() + raw[len(raw.rstrip()) :]


def status_line(status: str) -> str:
    """Slack shows the status after the app's name ("threadline is thinking…"), so it starts with "is"."""
    return status if not status or status.startswith("is ") else f"is {status}"


class SlackReply:
    """The ReplyStream of one Slack message. Text API calls run under one lock, in order."""

    audio_format = AudioFormat.M4A  # plays inline in Slack on desktop and mobile

    def __init__(
        self,
        *,
        client: AsyncWebClient,
        target: ReplyTarget,
        options: StreamOptions,
        upload: Uploader,
        status_enabled: bool = True,
        on_status_unavailable: Callable[[str], None] | None = None,
    ) -> None:
        self._client = client
        self._target = target
        self._opts = options
        self._upload = upload
        self._native = options.native
        self._run = _TextRun()
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._timer_sleeping = False
        self._next_at = 0.0
        self._closed = False
        self._background_error: BaseException | None = None
        self._posted = False
        self._status_enabled = status_enabled
        self._on_status_unavailable = on_status_unavailable
        self._status = ""
        self._status_pending = False  # a status was set after the newest message: clear it at the end

    # --- ReplyStream -----------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._raise_background_error()

    async def append(self, delta: str) -> None:
        self._raise_background_error()
        if delta and not self._closed:
            self._run.raw += delta
            self._schedule()

    async def attach(self, part: OutgoingFile) -> None:
        self._raise_background_error()
        self._cancel_sleeping_timer()
        async with self._lock:
            await self._settle_run(self._run)
            self._run = _TextRun()
            uploaded = await self._upload(part)
            if uploaded:
                self._mark_new_message()
        if not uploaded:
            await self.append(f"_(I made {part.filename} but Slack would not take the upload.)_\n\n")

    async def preview(self, part: OutgoingFile) -> None:
        """Slack files can't be replaced in place, so a preview is a status line; the final image is uploaded."""
        await self.set_status("drawing… (a first sketch is ready)")

    async def set_status(self, status: str) -> None:
        if not self._status_enabled or status == self._status or self._closed:
            return
        self._status = status
        try:
            await self._client.assistant_threads_setStatus(
                channel_id=self._target.channel, thread_ts=self._target.thread_ts, status=status_line(status)
            )
        except SlackApiError as exc:
            error = exc.response.get("error", "unknown_error")
            if error == "ratelimited":
                return  # a status is a nicety: skip this one, keep the next
            # The status line exists in assistant threads (and, with chat:write, channel threads); elsewhere the
            # answer simply streams without it.
            self._status_enabled = False
            if self._on_status_unavailable is not None:
                self._on_status_unavailable(self._target.channel)
            log.info("no status line in %s (%s); answering without it", self._target.channel, error)
            return
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.info("could not set the status in %s (%s)", self._target.channel, type(exc).__name__)
            return
        self._status_pending = bool(status)

    async def finish(self) -> None:
        self._raise_background_error()
        self._cancel_sleeping_timer()
        async with self._lock:
            self._closed = True
            await self._settle_run(self._run)
            if not self._posted:
                await self._post(EMPTY_ANSWER)
        await self._clear_status()

    async def fail(self, message: str) -> None:
        self._cancel_sleeping_timer()
        async with self._lock:
            self._closed = True
            try:
                await self._settle_run(self._run)
            except Exception:
                log.exception("could not finish the partial answer in %s", self._target.channel)
            await self._post(f"⚠️ {message}")
        await self._clear_status()

    # --- scheduling ------------------------------------------------------------------------------------------
    def _raise_background_error(self) -> None:
        if self._background_error is not None:
            error, self._background_error = self._background_error, None
            raise error

    def _schedule(self) -> None:
        if self._timer is not None and not self._timer.done():
            return
        delay = max(0.0, self._next_at - asyncio.get_running_loop().time())
        self._timer_sleeping = True
        self._timer = asyncio.create_task(self._tick(delay), name=f"slack-flush:{self._target.thread_ts}")

    def _cancel_sleeping_timer(self) -> None:
        """Cancel a pending flush only while it sleeps, never in the middle of a Slack call."""
        if self._timer is not None and self._timer_sleeping:
            self._timer.cancel()
            self._timer = None
            self._timer_sleeping = False

    async def _tick(self, delay: float) -> None:
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            return
        self._timer_sleeping = False
        try:
            async with self._lock:
                if self._closed:
                    return
                await self._flush_live(self._run)
        except Exception as exc:
            log.warning("streaming to %s failed: %s", self._target.channel, exc)
            self._background_error = exc
            return
        self._timer = None
        if not self._closed and self._has_pending():
            self._schedule()

    def _has_pending(self) -> bool:
        text = self._run.live_text()
        shown = self._run.messages[-1].shown if self._run.messages else ""
        return bool(text.strip()) and text != shown

    # --- rendering -------------------------------------------------------------------------------------------
    async def _flush_live(self, run: _TextRun) -> None:
        if not run.messages:
            run.messages.append(_Message())
        text = run.live_text()
        if len(text) > self._opts.limit:
            await self._roll_over(run)
        else:
            await self._push(run.messages[-1], text)

    async def _roll_over(self, run: _TextRun) -> None:
        """The live message outgrew the limit: settle all but the last chunk, continue with the last."""
        if not run.raw.strip():
            return
        chunks = split_message(run.raw, self._opts.limit)
        for index, chunk in enumerate(chunks[:-1]):
            await self._settle(run, index, chunk)
        keep = len(chunks) - 1
        leftover = run.messages[keep:]
        del run.messages[keep:]
        for extra in leftover[1:]:
            await self._delete(extra)
        live = leftover[0] if leftover else _Message()
        if live.stream is not None:
            await self._stop_stream(live, None)
        live.settled = False
        run.messages.append(live)
        run.prefix, run.raw_start = _tail_for_live(chunks[-1], run.raw), len(run.raw)
        await self._push(live, run.live_text())

    async def _push(self, message: _Message, text: str) -> None:
        """Show ``text`` in the live message: append to its stream, or post/edit it."""
        if text == message.shown or not text.strip():
            return
        streaming = message.stream is not None or (self._native and message.ts is None)
        if not (streaming and await self._stream_append(message, text)):
            await self._show(message, text)

    async def _stream_append(self, message: _Message, text: str) -> bool:
        if message.stream is None:
            message.stream = await self._client.chat_stream(
                channel=self._target.channel,
                thread_ts=self._target.thread_ts,
                recipient_user_id=self._target.recipient_user_id,
                recipient_team_id=self._target.recipient_team_id,
                buffer_size=1,  # threadline coalesces by time itself; every append is one API call
            )
        is_new = message.stream.ts is None
        try:
            await message.stream.append(markdown_text=text[len(message.shown) :])
        except SlackApiError as exc:
            self._fall_back(message, exc)
            return False
        message.ts = message.stream.ts
        message.shown = text
        self._after_edit(message, self._opts.stream_interval, is_new=is_new)
        return True

    def _fall_back(self, message: _Message, exc: SlackApiError) -> None:
        error = exc.response.get("error", "unknown_error")
        started = message.stream is not None and message.stream.ts is not None
        log.warning(
            "native streaming %s in %s (%s); continuing with chat.update",
            "died mid-answer" if started else "could not start",
            self._target.channel,
            error,
        )
        if message.stream is not None:
            message.ts = message.stream.ts
        message.stream = None
        self._native = False

    async def _show(self, message: _Message, text: str) -> None:
        """Post the message once, then edit it in place, at least ``update_interval`` apart."""
        is_new = message.ts is None
        if message.ts is None:
            response = await self._client.chat_postMessage(
                channel=self._target.channel, thread_ts=self._target.thread_ts, markdown_text=text
            )
            message.ts = str(response["ts"])
        else:
            wait = message.last_edit + self._opts.update_interval - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._client.chat_update(channel=self._target.channel, ts=message.ts, markdown_text=text)
        message.shown = text
        self._after_edit(message, self._opts.update_interval, is_new=is_new)

    def _after_edit(self, message: _Message, interval: float, *, is_new: bool) -> None:
        now = asyncio.get_running_loop().time()
        message.last_edit = now
        self._next_at = now + interval
        if is_new:
            self._mark_new_message()

    async def _stop_stream(self, message: _Message, text: str | None) -> None:
        """End a native stream, appending ``text`` (which extends what is shown) if given."""
        stream = message.stream
        if stream is None:
            return
        rest = text[len(message.shown) :] if text is not None else ""
        if stream.ts is None and not rest:
            message.stream = None  # never started: nothing to end
            return
        is_new = stream.ts is None
        try:
            await stream.stop(markdown_text=rest or None)
        except SlackApiError as exc:
            self._fall_back(message, exc)
            return
        message.ts = stream.ts
        message.stream = None
        if rest and text is not None:
            message.shown = text
        if is_new:
            self._mark_new_message()

    async def _settle(self, run: _TextRun, index: int, text: str) -> None:
        """Make message ``index`` of the run show exactly ``text`` and end any stream in it."""
        if index == len(run.messages):
            run.messages.append(_Message())
        message = run.messages[index]
        if message.settled and message.shown == text:
            return
        if message.stream is not None:
            extends = text.startswith(message.shown)
            await self._stop_stream(message, text if extends else None)
        if message.ts is None or _normalised(message.shown) != _normalised(text):
            await self._show(message, text)
        message.settled = True

    async def _settle_run(self, run: _TextRun) -> None:
        if not run.raw.strip():
            for message in run.messages:
                if message.stream is not None and message.stream.ts is not None:
                    await self._stop_stream(message, None)
            return
        chunks = split_message(run.raw, self._opts.limit)
        for index, chunk in enumerate(chunks):
            await self._settle(run, index, chunk)
        for extra in run.messages[len(chunks) :]:
            await self._delete(extra)
        del run.messages[len(chunks) :]

    async def _delete(self, message: _Message) -> None:
        if message.stream is not None and message.stream.ts is not None:
            await self._stop_stream(message, None)
        ts = message.ts or (message.stream.ts if message.stream else None)
        if ts:
            with contextlib.suppress(SlackApiError):
                await self._client.chat_delete(channel=self._target.channel, ts=ts)

    async def _post(self, text: str) -> None:
        await self._client.chat_postMessage(
            channel=self._target.channel, thread_ts=self._target.thread_ts, markdown_text=text
        )
        self._mark_new_message()

    def _mark_new_message(self) -> None:
        self._posted = True
        self._status_pending = False

    async def _clear_status(self) -> None:
        """Slack clears the status when the bot posts; clear it ourselves if one was set after the last post."""
        if self._status_enabled and self._status_pending:
            self._status_pending = False
            with contextlib.suppress(SlackClientError, aiohttp.ClientError, TimeoutError):
                await self._client.assistant_threads_setStatus(
                    channel_id=self._target.channel, thread_ts=self._target.thread_ts, status=""
                )
