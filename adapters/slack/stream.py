"""One answer rendered in a Slack thread: native streaming with a chat.update fallback, split long answers,
files in between, and the assistant status line.

Text is coalesced and pushed at most every ``slack_stream_interval_secs`` (native) or
``slack_update_interval_secs`` (fallback edits of one message). A native stream that cannot start, or that dies
mid-answer (``message_not_in_streaming_state``), continues as one posted message edited with ``chat.update`` on
the same ts, so nothing already shown is lost or repeated. When the live message outgrows the limit it is cut
with ``bot.text_split.split_message`` (paragraph boundaries, code fences never broken) and the rest continues in
a new message; at the end every message is reconciled to exactly ``split_message(answer)``.

Slack's agent messaging (2026) on top: the thread's agent session goes to ``processing`` when the turn starts (which
gives people Slack's stop button) and back to ``active`` when it ends; tool work shows as ``task_update`` chunks in
the stream; and the answer's last message carries feedback buttons. Each degrades on its own where Slack refuses
it: no session (the status line alone, as before), steps on the status line, an answer without buttons.

For the durable inbox the reply reports its first message (``on_posted``, the ``Checkpointed`` protocol) before it
puts more into it. A reply built with ``posted`` (a retry after a crash) takes over that message instead of
posting a second one: it ends the stream the interrupted attempt may have left open, then edits the message with
the new answer as it grows (always with blocks, which replace whatever blocks it held, buttons included).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_chat_stream import AsyncChatStream
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.budget import WorkspaceBudget
from adapters.slack.convert import FEEDBACK_ACTION_ID
from adapters.slack.settings import SlackSettings
from bot.audio_encode import AudioFormat
from bot.text_split import split_message
from bot.types import OutgoingFile, TaskStep

log = logging.getLogger("threadline.slack.stream")

Uploader = Callable[[OutgoingFile], Awaitable[bool]]

_FENCE_LINE = re.compile(r"^\s*(`{3,}|~{3,})\s*$")
EMPTY_ANSWER = "_(The model returned an empty answer.)_"

SESSION_METHOD = "agents.sessions.setStatus"
TASK_DISPLAY_MODE = "timeline"  # each step as its own line in the message, rather than one plan
# Errors that mean this workspace has no agent sessions for the app (an older app, a missing scope…).
SESSION_REFUSALS = frozenset(
    {"unknown_method", "not_allowed", "missing_scope", "not_allowed_token_type", "method_deprecated"}
)
# The session works but its stop button cannot: the app is not subscribed to agent_session_stopped.
SESSION_UNSTOPPABLE = "missing_agent_session_stopped_event_subscription"
CHUNK_REFUSALS = frozenset({"invalid_chunks", "invalid_arguments"})  # a stream that takes text only
# A final message refused with its buttons or session status (blocks or arguments the workspace doesn't know).
FINALS_REFUSALS = frozenset({"invalid_blocks", "invalid_blocks_format", "invalid_arguments"})


def feedback_blocks() -> list[dict[str, Any]]:
    """Slack's feedback buttons (a ``context_actions`` block holding ``feedback_buttons``); a click comes back as
    ``block_actions`` with the button's value, ``good`` or ``bad``."""

    def button(emoji: str, label: str, value: str) -> dict[str, Any]:
        return {"text": {"type": "plain_text", "text": emoji}, "accessibility_label": label, "value": value}

    buttons = {
        "type": "feedback_buttons",
        "action_id": FEEDBACK_ACTION_ID,
        "positive_button": button("👍", "Good answer", "good"),
        "negative_button": button("👎", "Bad answer", "bad"),
    }
    return [{"type": "context_actions", "elements": [buttons]}]


def _error(exc: SlackApiError) -> str:
    return str(exc.response.get("error", "unknown_error"))


def _warnings(response: Any) -> set[str]:
    """A successful call's warnings (``warning``, and ``response_metadata.warnings``)."""
    found = {str(response.get("warning") or "")}
    metadata = response.get("response_metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("warnings"), list):
        found.update(str(w) for w in metadata["warnings"])
    return found - {""}


@dataclass(frozen=True, slots=True)
class ReplyTarget:
    """Where an answer goes, and who it is for (native streams in channels name their recipient)."""

    channel: str
    thread_ts: str
    recipient_user_id: str
    recipient_team_id: str


@dataclass(frozen=True, slots=True)
class AgentSession:
    """The thread's agent session as one turn uses it. ``title`` names the session when this turn creates it (the
    thread's first turn); ``on_refused`` hears once that Slack refused sessions, so the adapter stops asking in
    that workspace."""

    title: str | None = None
    on_refused: Callable[[str], None] | None = None


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
    inherited: bool = False  # posted by an interrupted attempt: always written with blocks, to replace its own


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
        budget: WorkspaceBudget,
        status_enabled: bool = True,
        on_status_unavailable: Callable[[str], None] | None = None,
        session: AgentSession | None = None,
        feedback: bool = True,
        posted: str | None = None,
    ) -> None:
        self.on_posted: Callable[[str], Awaitable[None]] | None = None  # set by the core (Checkpointed)
        self._reported = False
        self._client = client
        self._target = target
        self._opts = options
        self._upload = upload
        self._budget = budget  # shared with every answer in the workspace
        self._reserved: str | None = None  # a method whose slot the live flush already holds
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
        self._session = session  # None: no agent session (none wanted, or Slack refused it)
        self._session_asked = False
        self._session_open = False  # processing was (or may have been) set: the end moves it back to active
        self._steps_native = True  # steps go into the stream as task_update chunks while Slack takes them
        self._feedback = feedback
        self._feedback_shown = False
        self._turn = False  # a model turn's answer (it set a status), not a short reply such as the help text
        self._last_text: _Message | None = None  # the newest settled message with text: buttons go there
        # The interrupted attempt's message, until this answer first writes into it (or drops it).
        self._inherited: _Message | None = None
        if posted:
            self._inherited = _Message(ts=posted, inherited=True)
            self._run.messages.append(self._inherited)

    @property
    def answer_ref(self) -> str | None:
        """The answer's last text message as ``channel:ts`` (once it is posted): the message a 🔍 reaction names
        to see the answer's code (``show work``)."""
        message = self._last_text
        return f"{self._target.channel}:{message.ts}" if message is not None and message.ts else None

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
            await self._drop_inherited()
            self._run = _TextRun()
            uploaded = await self._upload(part)
            if uploaded:
                self._mark_new_message()
        if not uploaded:
            await self.append(f"_(I made {part.filename} but Slack would not take the upload.)_\n\n")

    async def step(self, step: TaskStep) -> None:
        """A ``task_update`` chunk in the native stream ("Running code", in progress, then complete). Where the
        answer cannot carry chunks (posted and edited, or Slack refuses them), a started step is the status line."""
        self._raise_background_error()
        if self._closed:
            return
        if self._steps_native and await self._stream_step(step):
            return
        if not step.done:
            await self.set_status(step.status)

    async def preview(self, part: OutgoingFile) -> None:
        """Slack files can't be replaced in place, so a preview is a status line; the final image is uploaded."""
        await self.set_status("drawing… (a first sketch is ready)")

    async def set_status(self, status: str) -> None:
        """The status line ("is thinking…"). The engine's first call of a turn is a status, so that is when the
        agent session goes to processing; short replies that set none (help, refusals) open no session and get
        no feedback buttons."""
        self._turn = True
        await self._open_session()
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
            await self._settle_run(self._run, final=True)
            if not self._posted:
                await self._post(EMPTY_ANSWER, final=True)
            elif self._buttons_wanted:
                await self._decorate_last_text()  # the answer ended with a file: the buttons go on its last text
        await self._close_session()
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
        await self._close_session()
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
        method = self._live_method(run.messages[-1])
        # Wait for the workspace's budget before reading the text: what arrives meanwhile goes into this call.
        await self._budget.acquire(method, channel=self._target.channel)
        self._reserved = method
        try:
            text = run.live_text()
            if len(text) > self._opts.limit:
                await self._roll_over(run)
            else:
                await self._push(run.messages[-1], text)
        finally:
            self._reserved = None

    def _live_method(self, message: _Message) -> str:
        """The call the next push of the live message makes."""
        if message.stream is not None:
            return "chat.appendStream" if message.stream.ts else "chat.startStream"
        if message.ts is not None:
            return "chat.update"
        return "chat.startStream" if self._starts_natively() else "chat.postMessage"

    def _starts_natively(self) -> bool:
        """Whether a new message starts a native stream. Once the workspace has spent Tier 2 on other answers, the
        rest of this answer is posted and edited instead of waiting up to a minute for a start."""
        channel = self._target.channel
        reserved = self._reserved == "chat.startStream"
        if self._native and not reserved and not self._budget.available("chat.startStream", channel=channel):
            log.info("no chat.startStream budget left in %s; posting and editing instead", channel)
            self._native = False
        return self._native

    async def _spend(self, method: str) -> None:
        """Take one call's slot from the workspace's budget (the live flush may hold it already)."""
        if self._reserved == method:
            self._reserved = None
            return
        await self._budget.acquire(method, channel=self._target.channel)

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
        streaming = message.stream is not None or (message.ts is None and self._starts_natively())
        if not (streaming and await self._stream_append(message, text)):
            await self._show(message, text)

    async def _open_stream(self, message: _Message) -> AsyncChatStream:
        if message.stream is None:
            message.stream = await self._client.chat_stream(
                channel=self._target.channel,
                thread_ts=self._target.thread_ts,
                recipient_user_id=self._target.recipient_user_id,
                recipient_team_id=self._target.recipient_team_id,
                task_display_mode=TASK_DISPLAY_MODE,
                buffer_size=1,  # threadline coalesces by time itself; every append is one API call
            )
        return message.stream

    async def _stream_append(self, message: _Message, text: str) -> bool:
        stream = await self._open_stream(message)
        is_new = stream.ts is None
        first_text = not message.shown  # a stream that a step started holds no text yet
        await self._spend("chat.startStream" if is_new else "chat.appendStream")
        try:
            await stream.append(markdown_text=text[len(message.shown) :])
        except SlackApiError as exc:
            self._fall_back(message, exc)
            return False
        message.ts = stream.ts
        message.shown = text
        self._after_edit(message, self._opts.stream_interval, is_new=is_new or first_text)
        if is_new:
            await self._report(stream.ts)
        return True

    async def _stream_step(self, step: TaskStep) -> bool:
        """Send the step as a chunk of the live message's stream (starting one if need be); False where it can't
        go there. Text that came before the step is pushed first, so the two keep their order."""
        async with self._lock:
            if self._closed:
                return True
            run = self._run
            if self._has_pending():
                await self._flush_live(run)
            if not run.messages:
                run.messages.append(_Message())
            message = run.messages[-1]
            if message.stream is None and not (message.ts is None and self._starts_natively()):
                return False  # the live message is posted and edited: it has no chunks
            stream = await self._open_stream(message)
            is_new = stream.ts is None
            await self._spend("chat.startStream" if is_new else "chat.appendStream")
            chunk = {
                "type": "task_update",
                "id": step.id,
                "title": step.title,
                "status": "complete" if step.done else "in_progress",
            }
            try:
                await stream.append(chunks=[chunk])
            except SlackApiError as exc:
                if _error(exc) not in CHUNK_REFUSALS:
                    self._fall_back(message, exc)
                    return False
                self._steps_native = False
                if stream.ts is None:
                    message.stream = None  # it never started: the text starts its own stream later
                log.info("Slack refused task steps in %s (%s); steps go on the status line", self._channel, _error(exc))
                return False
            message.ts = stream.ts
            if is_new:
                self._status_pending = False  # Slack clears the status line when the bot posts
                await self._report(stream.ts)
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

    async def _show(self, message: _Message, text: str, *, final: bool = False) -> None:
        """Post the message once, then edit it in place, at least ``update_interval`` apart. The answer's ``final``
        message gets the feedback buttons."""
        is_new = message.ts is None or message is self._inherited  # the inherited one becomes this answer's
        if message.ts is not None:
            wait = message.last_edit + self._opts.update_interval - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)
        with_buttons = final and self._feedback and self._turn
        try:
            await self._send(message, text, with_buttons=with_buttons)
        except SlackApiError as exc:
            if not with_buttons or _error(exc) not in FINALS_REFUSALS:
                raise
            self._refuse_feedback(exc)
            await self._send(message, text, with_buttons=False)
        else:
            self._feedback_shown = self._feedback_shown or with_buttons
        message.shown = text
        self._after_edit(message, self._opts.update_interval, is_new=is_new)

    async def _send(self, message: _Message, text: str, *, with_buttons: bool) -> None:
        """One chat.postMessage or chat.update. Blocks don't mix with ``markdown_text``, so a message with buttons
        holds its text in a markdown block (``text`` is the notification's fallback)."""
        content: dict[str, Any] = {"markdown_text": text}
        if with_buttons or message.inherited:
            buttons = feedback_blocks() if with_buttons else []
            content = {"text": text, "blocks": [{"type": "markdown", "text": text}, *buttons]}
        if message is self._inherited and not await self._take_over(message):
            message.ts = None  # it is gone: the answer starts a message of its own
        if message.ts is None:
            await self._spend("chat.postMessage")
            response = await self._client.chat_postMessage(
                channel=self._target.channel, thread_ts=self._target.thread_ts, **content
            )
            message.ts = str(response["ts"])
            await self._report(message.ts)
        else:
            await self._spend("chat.update")
            await self._client.chat_update(channel=self._target.channel, ts=message.ts, **content)

    def _refuse_feedback(self, exc: SlackApiError) -> None:
        self._feedback = False
        log.info(
            "Slack refused the feedback buttons in %s (%s); the answer goes without them", self._channel, _error(exc)
        )

    def _after_edit(self, message: _Message, interval: float, *, is_new: bool) -> None:
        now = asyncio.get_running_loop().time()
        message.last_edit = now
        self._next_at = now + interval
        if is_new:
            self._mark_new_message()

    async def _stop_stream(self, message: _Message, text: str | None, *, final: bool = False) -> None:
        """End a native stream, appending ``text`` (which extends what is shown) if given. The answer's ``final``
        message ends with the feedback buttons, and moves the agent session back to active."""
        stream = message.stream
        if stream is None:
            return
        rest = text[len(message.shown) :] if text is not None else ""
        first_text = bool(rest) and not message.shown  # a stream that a step started holds no text yet
        if stream.ts is None and not rest:
            message.stream = None  # never started: nothing to end
            return
        finals: dict[str, Any] = {}
        if final and self._feedback and self._turn:
            finals["blocks"] = feedback_blocks()
        if final and self._session_open:
            finals["session_status"] = "active"
        is_new = stream.ts is None
        if is_new:
            await self._spend("chat.startStream")  # stop() starts the stream first
        await self._spend("chat.stopStream")
        try:
            await stream.stop(markdown_text=rest or None, **finals)
        except SlackApiError as exc:
            if not (finals and stream.ts is not None and _error(exc) in FINALS_REFUSALS):
                self._fall_back(message, exc)
                return
            # The buttons or the session status were refused: end the stream plainly, without buttons from here
            # on (the session is moved by its own call at the end).
            self._feedback = False
            log.info(
                "Slack refused the end of the answer in %s as sent (%s); ending it plainly", self._channel, _error(exc)
            )
            finals = {}
            await self._spend("chat.stopStream")
            try:
                await self._client.chat_stopStream(
                    channel=self._target.channel, ts=stream.ts, markdown_text=rest or None
                )
            except SlackApiError as again:
                self._fall_back(message, again)
                return
        self._feedback_shown = self._feedback_shown or "blocks" in finals
        if "session_status" in finals:
            self._session_open = False
        message.ts = stream.ts
        message.stream = None
        if rest and text is not None:
            message.shown = text
        if is_new or first_text:
            self._mark_new_message()
            await self._report(stream.ts)

    async def _settle(self, run: _TextRun, index: int, text: str, *, final: bool = False) -> None:
        """Make message ``index`` of the run show exactly ``text`` and end any stream in it; the answer's
        ``final`` message gets its buttons."""
        if index == len(run.messages):
            run.messages.append(_Message())
        message = run.messages[index]
        if message.settled and message.shown == text and not final:
            return
        if message.stream is not None:
            extends = text.startswith(message.shown)
            await self._stop_stream(message, text if extends else None, final=final and extends)
        buttons_missing = final and self._buttons_wanted
        if message.ts is None or _normalised(message.shown) != _normalised(text) or buttons_missing:
            await self._show(message, text, final=final)
        message.settled = True

    async def _settle_run(self, run: _TextRun, *, final: bool = False) -> None:
        """End the run's messages as ``split_message`` cuts its text; with ``final``, its last one ends the answer."""
        if not run.raw.strip():
            for message in run.messages:
                if message.stream is not None and message.stream.ts is not None:
                    await self._stop_stream(message, None)
            return
        chunks = split_message(run.raw, self._opts.limit)
        for index, chunk in enumerate(chunks):
            await self._settle(run, index, chunk, final=final and index == len(chunks) - 1)
        for extra in run.messages[len(chunks) :]:
            await self._delete(extra)
        del run.messages[len(chunks) :]
        self._last_text = run.messages[-1]

    async def _decorate_last_text(self) -> None:
        """Put the buttons on the answer's last text message, settled before the file that ended the answer. Only
        a nicety: a refusal leaves the answer as it is."""
        message = self._last_text
        if message is None or message.ts is None:
            return
        try:
            await self._show(message, message.shown, final=True)
        except SlackApiError as exc:
            log.info("no feedback buttons on the answer in %s (%s)", self._channel, _error(exc))
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.info("no feedback buttons on the answer in %s (%s)", self._channel, type(exc).__name__)

    async def _delete(self, message: _Message) -> None:
        if message.stream is not None and message.stream.ts is not None:
            await self._stop_stream(message, None)
        ts = message.ts or (message.stream.ts if message.stream else None)
        if ts:
            await self._spend("chat.delete")
            with contextlib.suppress(SlackApiError):
                await self._client.chat_delete(channel=self._target.channel, ts=ts)

    async def _post(self, text: str, *, final: bool = False) -> None:
        """A message of its own (an empty answer's note, a failure line); it replaces the interrupted attempt's
        message when this answer put nothing there."""
        if final or self._inherited is not None:
            await self._show(self._inherited or _Message(), text, final=final)
            return
        await self._spend("chat.postMessage")
        response = await self._client.chat_postMessage(
            channel=self._target.channel, thread_ts=self._target.thread_ts, markdown_text=text
        )
        self._mark_new_message()
        await self._report(str(response.get("ts") or ""))

    async def _report(self, ts: str | None) -> None:
        """The answer's first message exists: the core keeps its ts (so a retry takes it over) before anything
        more goes into it. Errors propagate: the core decides."""
        if not ts or self._reported:
            return
        self._reported = True
        if self.on_posted is not None:
            await self.on_posted(ts)

    async def _take_over(self, message: _Message) -> bool:
        """The first write into the interrupted attempt's message: report it, and end the stream it may have left
        open (Slack documents no edits of a streaming message; one it already ended, or never was, refuses the
        stop, which is fine). False when the message is gone (deleted meanwhile)."""
        self._inherited = None
        ts = message.ts or ""
        await self._spend("chat.stopStream")
        try:
            await self._client.chat_stopStream(channel=self._target.channel, ts=ts)
        except SlackApiError as exc:
            if _error(exc) == "message_not_found":
                log.info("the interrupted answer's message in %s is gone; posting anew", self._channel)
                return False
            log.debug("the interrupted answer's message in %s was not streaming (%s)", self._channel, _error(exc))
        await self._report(ts)
        return True

    async def _drop_inherited(self) -> None:
        """The answer begins with a file: the interrupted attempt's message would stay above it, so it goes."""
        message, self._inherited = self._inherited, None
        if message is not None:
            await self._delete(message)

    def _mark_new_message(self) -> None:
        self._posted = True
        self._status_pending = False

    @property
    def _channel(self) -> str:
        return self._target.channel

    @property
    def _buttons_wanted(self) -> bool:
        """The answer of a model turn still lacks its feedback buttons (and Slack has not refused them)."""
        return self._feedback and self._turn and not self._feedback_shown

    # --- the agent session ---------------------------------------------------------------------------------
    async def _open_session(self) -> None:
        """The turn begins: the session goes to processing (Slack shows its stop button), titled on creation. Only
        when a slot is free at once: a session is a nicety that must not hold the answer back."""
        session = self._session
        if session is None or self._session_asked or self._closed:
            return
        self._session_asked = True
        if not self._budget.available(SESSION_METHOD, channel=self._channel):
            log.info("no %s budget left; the answer in %s has no stop button", SESSION_METHOD, self._channel)
            return
        self._session_open = True  # from here the end moves it back, even if this call is cut short by a stop
        await self._spend(SESSION_METHOD)
        self._session_open = await self._set_session("processing", title=session.title)

    async def _close_session(self) -> None:
        """The turn is over: the session goes back to active, unless chat.stopStream already moved it."""
        if not self._session_open:
            return
        self._session_open = False
        await self._spend(SESSION_METHOD)
        await self._set_session("active")

    async def _set_session(self, status: str, *, title: str | None = None) -> bool:
        """One agents.sessions.setStatus call; False when it did not take. Never raises: the answer goes on."""
        try:
            response = await self._client.agents_sessions_setStatus(
                channel_id=self._channel, thread_ts=self._target.thread_ts, status=status, title=title
            )
        except SlackApiError as exc:
            error = _error(exc)
            if error in SESSION_REFUSALS:
                self._refuse_sessions(error)
            else:
                log.info("could not set the agent session in %s to %s (%s)", self._channel, status, error)
            return False
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.info("could not set the agent session in %s (%s)", self._channel, type(exc).__name__)
            return False
        if SESSION_UNSTOPPABLE in _warnings(response):
            log.warning(
                "Slack warns %s: subscribe the app to agent_session_stopped (manifest.yaml) for a stop button",
                SESSION_UNSTOPPABLE,
            )
            self._refuse_sessions(SESSION_UNSTOPPABLE)
        return True

    def _refuse_sessions(self, reason: str) -> None:
        session, self._session = self._session, None
        log.info("no agent sessions for this app in %s's workspace (%s); the status line alone", self._channel, reason)
        if session is not None and session.on_refused is not None:
            session.on_refused(reason)

    async def _clear_status(self) -> None:
        """Slack clears the status when the bot posts; clear it ourselves if one was set after the last post."""
        if self._status_enabled and self._status_pending:
            self._status_pending = False
            with contextlib.suppress(SlackClientError, aiohttp.ClientError, TimeoutError):
                await self._client.assistant_threads_setStatus(
                    channel_id=self._target.channel, thread_ts=self._target.thread_ts, status=""
                )
