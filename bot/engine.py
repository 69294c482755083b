"""The engine on OpenAI Conversations + Responses: one conversation per platform thread, streamed turns.

Thread memory lives on OpenAI's side; the store keeps only thread key → conversation id. Each turn sends just
the new message, so request size stays flat as a thread grows. The tools a turn offers come from the tool registry
(``bot.tools.registry``); stream events are decoded into neutral events (``bot.stream_events``) that the renderer
(``bot.render``) shows; function calls run in a loop of responses on the same conversation (``_respond``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx2
import openai
from openai import AsyncOpenAI

from bot.answer_format import JSON, JSON_INSTRUCTION, json_text_format
from bot.attachments_in import AttachmentReader, TurnInput
from bot.errors import UserFacingError
from bot.imaging import (
    QUALITIES,
    SIZES,
    ImageMaker,
    MadeImage,
    asks_for_change,
    asks_for_change_of_thread_image,
    check_mask,
)
from bot.media import normalize_image
from bot.openai_errors import api_error_message
from bot.protocols import ReplyStream, is_stop_request
from bot.render import TurnRender
from bot.settings import Settings
from bot.speech import SpeechError, speaker_for
from bot.sse import sse_events
from bot.store import Store, StoredImage, UsageRow
from bot.stream_events import Completed, Started, ToolCall, call_title, completed_from, decode
from bot.tools.registry import ToolContext, ToolRegistry
from bot.types import (
    AttachmentKind,
    IncomingMessage,
    OutgoingFile,
    PartKind,
    TaskStep,
    ThreadKey,
    TurnKind,
)
from bot.voice_mode import speakable, voice_mode

log = logging.getLogger("threadline.engine")

STOPPED_USAGE_TIMEOUT_SECS = 3.0
SETTLE_TIMEOUT_SECS = 3.0
CONTEXT_LOST_NOTE = "_(I had lost this thread's earlier context, so I started a fresh conversation.)_\n\n"
ROUND_CAP_NOTE = "\n\n_(I stopped after {rounds} rounds of tool calls without a final answer. Ask again to go on.)_"


# Per-thread preference: what the last turn was about ("image" or "chat"); a change request right after an
# image turn edits that image.
LAST_TURN = "last_turn"


@dataclass(frozen=True, slots=True)
class EditRequest:
    image: MadeImage
    mask: bytes | None
    instruction: str


@dataclass(slots=True)
class _Unanswered:
    """Function calls of a response whose outputs the server has not stored yet (``outputs`` once run)."""

    conversation: str
    calls: list[ToolCall]
    outputs: list[str] | None = None


@dataclass(slots=True)
class _TurnState:
    """What a turn that ends early needs: the open response (to read its usage back) and calls left unanswered
    (the conversation would refuse the next message until each has an output)."""

    response_id: str | None = None
    unanswered: _Unanswered | None = None


class _ConversationGone(Exception):
    """The server no longer knows the stored conversation id."""


class ConversationsEngine:
    def __init__(self, *, settings: Settings, store: Store, client: AsyncOpenAI, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.tools = ToolRegistry.from_settings(settings, http)
        self.json_format = json_text_format(settings.json_schema_file)
        self.attachments = AttachmentReader(settings=settings, store=store, client=client)
        self.speaker = speaker_for(
            client, model=settings.tts_model, voice=settings.tts_voice, timeout_secs=settings.speech_timeout_secs
        )
        self.images = ImageMaker(
            client=client, model=settings.image_model, partial_images=settings.image_partial_previews
        )

    async def forget(self, key: ThreadKey) -> None:
        await self.store.forget_conversation(key)

    async def model_for(self, platform: str, channel: str) -> str:
        return await self.store.channel_model(platform, channel) or self.settings.model

    async def run_turn(self, message: IncomingMessage, reply: ReplyStream) -> None:
        model = await self.model_for(message.key.platform, message.key.channel)
        imagine = message.kind is TurnKind.IMAGINE
        fence = "json" if message.answer_format == JSON and not imagine else None
        render = TurnRender(reply, "drawing…" if imagine else "thinking…", fence=fence)
        state = _TurnState()
        try:
            if imagine:
                await self._imagine(message, model, render)
            elif (request := await self._edit_request(message, render)) is not None:
                await self._edit(message, model, render, request)
            else:
                await self._run_turn(message, reply, model, render, state)
            await render.close_fence()
            await render.ensure_started()
            await reply.finish()
        except asyncio.CancelledError as exc:
            await render.abandon(stopped=True)
            if not is_stop_request(exc):
                await self._settle_unanswered(state, "Not run: the answer was interrupted.")
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # the user's stop ends this turn only: the thread's lane goes on
            await self._finish_stopped(message, model, render, state)
        except BaseException:
            await render.abandon(stopped=False)
            await self._settle_unanswered(state, "Not run: the answer ended with an error.")
            raise

    async def _finish_stopped(
        self, message: IncomingMessage, model: str, render: TurnRender, state: _TurnState
    ) -> None:
        """The answer so far stays and ends with "(stopped)"; the model stream is already closed. The usage of the
        cut response is read back from the server (best effort, a few seconds at most)."""
        log.info("turn in %s stopped by the user", message.key)
        await render.append("\n\n_(stopped)_" if render.started else "_(stopped)_")
        await render.reply.finish()
        await self._settle_unanswered(state, "Not run: the user stopped the answer.")
        if state.response_id is None:
            return
        try:
            async with asyncio.timeout(STOPPED_USAGE_TIMEOUT_SECS):
                response = await self.client.responses.retrieve(state.response_id)
        except (openai.OpenAIError, TimeoutError) as exc:
            log.info("no usage for the stopped response %s: %s", state.response_id, type(exc).__name__)
            return
        await self._record_usage(completed_from(response.model_dump()), message, model)

    async def _run_turn(
        self, message: IncomingMessage, reply: ReplyStream, model: str, render: TurnRender, state: _TurnState
    ) -> None:
        if message.attachments:
            await render.settle()  # the attachments' own statuses come after "thinking…"
        turn = await self._guard(self.attachments.build(message, reply), model)
        conversation = await self._conversation(message, model)
        try:
            await self._respond(conversation, model, turn, message, render, state)
        except _ConversationGone:
            log.warning("conversation %s is gone on the server; starting a new one", conversation)
            state.unanswered = None
            conversation = await self._conversation(message, model, fresh=True)
            await render.append(CONTEXT_LOST_NOTE)
            try:
                await self._respond(conversation, model, turn, message, render, state)
            except _ConversationGone as exc:
                raise UserFacingError("OpenAI lost this conversation twice in a row. Please try again.") from exc
        await self._speak_if_wanted(message, turn, render)
        await self.store.set_thread_pref(message.key, LAST_TURN, "image" if turn.had_image else "chat")

    async def _guard(self, call: Any, model: str) -> Any:
        try:
            return await call
        except openai.OpenAIError as exc:
            raise UserFacingError(api_error_message(exc, model=model)) from exc

    async def _conversation(self, message: IncomingMessage, model: str, *, fresh: bool = False) -> str:
        record = None if fresh else await self.store.thread(message.key)
        if record and record.conversation_id:
            return record.conversation_id
        metadata = {
            "platform": message.key.platform,
            "workspace": message.key.workspace[:512],
            "channel": message.key.channel[:512],
            "thread": message.key.thread[:512],
        }
        conversation = await self._guard(self.client.conversations.create(metadata=metadata), model)
        await self.store.save_conversation(message.key, conversation_id=conversation.id, model=model)
        return str(conversation.id)

    # --- images on request ---------------------------------------------------------------------------------
    async def _imagine(self, message: IncomingMessage, model: str, render: TurnRender) -> None:
        prompt = message.text.strip()
        if not prompt:
            raise UserFacingError("Tell me what to draw, for example `imagine a red bicycle`.")

        async def preview(index: int, image: MadeImage) -> None:
            await render.preview(
                OutgoingFile(PartKind.IMAGE, f"preview-{index + 1}.{image.fmt}", image.mime, image.data)
            )

        size = message.image_size if message.image_size in SIZES else "auto"
        quality = message.image_quality if message.image_quality in QUALITIES else "auto"
        made = await self.images.generate(prompt, size=size, quality=quality, preview=preview)
        await self._deliver_image(message, model, render, made, request=f"Draw: {prompt}", caption=prompt)

    async def _edit_request(self, message: IncomingMessage, render: TurnRender) -> EditRequest | None:
        """An edit when an image comes with an instruction that asks for a change (a second PNG is its mask), or
        when a text follow-up asks for a change to the thread's latest image."""
        images = [a for a in message.attachments if a.kind is AttachmentKind.IMAGE]
        if images and len(images) == len(message.attachments) and len(images) <= 2 and asks_for_change(message.text):
            await render.settle()
            await render.set_status("reading the image…")
            base = normalize_image(await self.attachments.read(images[0]), images[0].filename)
            mask = None
            if len(images) == 2:
                mask = await self.attachments.read(images[1])
                check_mask(base.data, mask, mask_name=images[1].filename)
            return EditRequest(MadeImage(base.data, base.mime.split("/")[1]), mask, message.text.strip())
        if message.attachments:
            return None
        last_turn = await self.store.thread_pref(message.key, LAST_TURN)
        if not asks_for_change_of_thread_image(message.text, last_turn_was_image=last_turn == "image"):
            return None
        stored = await self.store.last_thread_image(message.key)
        if stored is None:
            return None
        return EditRequest(MadeImage(stored.data, stored.mime.split("/")[1]), None, message.text.strip())

    async def _edit(self, message: IncomingMessage, model: str, render: TurnRender, request: EditRequest) -> None:
        await render.set_status("editing the image…")
        made = await self.images.edit(request.instruction, request.image, request.mask)
        await self._deliver_image(
            message, model, render, made, request=f"Edit the image: {request.instruction}", caption=request.instruction
        )

    async def _deliver_image(
        self, message: IncomingMessage, model: str, render: TurnRender, made: MadeImage, *, request: str, caption: str
    ) -> None:
        """Post the image, keep it as the thread's latest image, and put the request and the image into the
        thread's conversation so later messages can talk about it."""
        await render.append(f"🎨 {caption}")
        await render.attach(OutgoingFile(PartKind.IMAGE, made.filename, made.mime, made.data, title=caption[:80]))
        await self.store.save_thread_image(message.key, StoredImage(made.data, made.mime, "generated", time.time()))
        await self.store.set_thread_pref(message.key, LAST_TURN, "image")
        file_id = await self.attachments.upload_image(message.key, made.data, made.filename, made.mime)
        items: list[dict[str, Any]] = [
            {"role": "user", "content": [{"type": "input_text", "text": request}]},
            {"role": "assistant", "content": "Here is the image (it is shown to the user below)."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "[The image threadline made for the request above]"},
                    {"type": "input_image", "file_id": file_id, "detail": "auto"},
                ],
            },
        ]
        conversation = await self._conversation(message, model)
        try:
            await self.client.conversations.items.create(conversation, items=items)  # type: ignore[arg-type]
        except openai.NotFoundError:
            conversation = await self._conversation(message, model, fresh=True)
            await self._guard(self.client.conversations.items.create(conversation, items=items), model)  # type: ignore[arg-type]
        except openai.OpenAIError as exc:
            log.warning("could not add the image to the conversation: %s", type(exc).__name__)
        await self.store.touch(message.key)

    # --- a chat turn: rounds of responses until the model answers -------------------------------------------
    async def _respond(
        self,
        conversation: str,
        model: str,
        turn: TurnInput,
        message: IncomingMessage,
        render: TurnRender,
        state: _TurnState,
    ) -> None:
        """The turn loop: when a response ends with function calls, run them and answer with their outputs in a
        new response on the same conversation, until the model answers or ``THREADLINE_TOOL_ROUNDS`` is reached."""
        context = ToolContext(code_file_ids=turn.code_file_ids)
        request: dict[str, Any] = {
            "model": model,
            "conversation": conversation,
            "instructions": self.settings.instructions,
            "stream": True,
        }
        if tools := self.tools.tools_for(context):
            request["tools"] = tools
        if message.answer_format == JSON:
            request["instructions"] = f"{self.settings.instructions}\n\n{JSON_INSTRUCTION}"
            request["text"] = {"format": self.json_format}
        items: list[dict[str, Any]] = [{"role": "user", "content": turn.content}]
        rounds = 0
        while True:
            calls, completed = await self._round({**request, "input": items}, message, model, render, state)
            if not calls:
                break
            pending = state.unanswered = _Unanswered(conversation, calls)
            if completed.incomplete_reason is not None or rounds >= self.settings.tool_rounds:
                await self._close_steps(calls, render)
                if completed.incomplete_reason is None:
                    log.info("turn in %s reached its %d rounds of tool calls", message.key, rounds)
                    await render.append(ROUND_CAP_NOTE.format(rounds=rounds))
                limit = f"Not run: this answer reached its limit of {rounds} rounds of tool calls."
                await self._settle_unanswered(state, limit)
                break
            rounds += 1
            pending.outputs = await self.tools.run(calls, context)
            await self._close_steps(calls, render)
            items = [
                {"type": "function_call_output", "call_id": call.call_id, "output": output}
                for call, output in zip(calls, pending.outputs, strict=True)
            ]
            await render.new_round()
        await self.store.touch(message.key)
        for citation in render.citations:
            if citation.kind == "container_file_citation":
                await self._attach_container_file(render, citation.container_id, citation.file_id, citation.filename)

    async def _round(
        self,
        request: dict[str, Any],
        message: IncomingMessage,
        model: str,
        render: TurnRender,
        state: _TurnState,
    ) -> tuple[list[ToolCall], Completed]:
        """One streamed response: its events rendered, its usage recorded; returns the function calls it made."""
        calls: list[ToolCall] = []
        completed: Completed | None = None
        streaming = False
        try:
            # The SDK's generic post: same auth, retries and errors as responses.create, without its per-request
            # parameter transform and per-event models (most of the CPU of a turn; README, Performance).
            raw = await self.client.post("/responses", cast_to=httpx2.Response, body=request, stream=True)
            try:
                async for event in sse_events(raw.aiter_lines()):
                    streaming = True
                    for neutral in decode(event):
                        if isinstance(neutral, Started):
                            state.response_id = neutral.response_id
                        elif isinstance(neutral, ToolCall):
                            calls.append(neutral)
                        elif isinstance(neutral, Completed):
                            completed = neutral
                            await self._completed(neutral, message, model, render, state)
                        else:
                            await render.apply(neutral)
            finally:
                await raw.aclose()
        except openai.NotFoundError as exc:
            if "conversation" in str(exc).lower():
                raise _ConversationGone(request["conversation"]) from exc
            raise UserFacingError(api_error_message(exc, model=model)) from exc
        except openai.OpenAIError as exc:
            raise UserFacingError(api_error_message(exc, model=model)) from exc
        except json.JSONDecodeError as exc:
            log.warning("OpenAI sent an event that is not JSON: %s", exc)
            raise UserFacingError("OpenAI sent a garbled answer. Please ask again.") from exc
        except httpx2.HTTPError as exc:
            if not streaming:
                raise UserFacingError("I couldn't reach OpenAI (connection error). Please try again shortly.") from exc
            log.warning("stream from OpenAI broke: %s", type(exc).__name__)
            raise UserFacingError("The connection to OpenAI dropped mid-answer. Please ask again.") from exc
        if completed is None:
            raise UserFacingError("The answer stopped before it was complete. Please ask again.")
        return calls, completed

    async def _completed(
        self, completed: Completed, message: IncomingMessage, model: str, render: TurnRender, state: _TurnState
    ) -> None:
        """A response ended: its usage is recorded (once: a stop after this reads nothing back), and the outputs
        it carried are now stored on the server."""
        state.response_id = None
        state.unanswered = None
        await self._record_usage(completed, message, model)
        reason = completed.incomplete_reason
        if reason == "max_output_tokens":
            await render.append("\n\n_(The answer was cut short: it reached the length limit.)_")
        elif reason is not None:
            await render.append(f"\n\n_(The answer was cut short: {reason}.)_")

    @staticmethod
    async def _close_steps(calls: list[ToolCall], render: TurnRender) -> None:
        for call in calls:
            await render.step(TaskStep(call.step_id, call_title(call.name), done=True))

    async def _settle_unanswered(self, state: _TurnState, reason: str) -> None:
        """Give every function call the server still waits on an output (what it returned, else ``reason``), so the
        thread's next message is not refused. Best effort, a few seconds at most."""
        pending, state.unanswered = state.unanswered, None
        if pending is None:
            return
        outputs = pending.outputs or [reason] * len(pending.calls)
        items = [
            {"type": "function_call_output", "call_id": call.call_id, "output": output}
            for call, output in zip(pending.calls, outputs, strict=True)
        ]
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT_SECS):
                await self.client.conversations.items.create(pending.conversation, items=items)  # type: ignore[arg-type]
        except (openai.OpenAIError, TimeoutError) as exc:
            log.warning("could not store the outputs of %d tool call(s): %s", len(items), type(exc).__name__)

    async def _record_usage(self, completed: Completed, message: IncomingMessage, model: str) -> None:
        usage = completed.usage
        if usage is None:
            return
        await self.store.record_usage(
            UsageRow(
                platform=message.key.platform,
                user=message.user_id,
                channel=message.key.channel,
                thread=message.key.thread,
                model=completed.model or model,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
            )
        )

    async def _attach_container_file(self, render: TurnRender, container_id: str, file_id: str, filename: str) -> None:
        try:
            content = await self.client.containers.files.content.retrieve(file_id, container_id=container_id)
            data = await content.aread()
        except openai.OpenAIError as exc:
            log.warning("could not fetch container file %s: %s", file_id, type(exc).__name__)
            await render.append(f"\n\n_(I made {filename} but could not fetch it.)_")
            return
        is_image = filename.lower().endswith((".png", ".jpg", ".jpeg", ".gif", ".webp"))
        kind = PartKind.IMAGE if is_image else PartKind.FILE
        mime = (
            f"image/{filename.rsplit('.', 1)[-1].lower().replace('jpg', 'jpeg')}"
            if is_image
            else "application/octet-stream"
        )
        await render.attach(OutgoingFile(kind, filename, mime, data, title=filename))

    async def _speak_if_wanted(self, message: IncomingMessage, turn: TurnInput, render: TurnRender) -> None:
        mode = await voice_mode(self.store, message.key, self.settings.voice_replies)
        if mode == "never" or (mode == "auto" and not turn.had_voice):
            return
        text = speakable("".join(render.text))
        if not text:
            return
        await render.set_status("recording a voice reply…")
        try:
            spoken = await self.speaker.speak(text, audio_format=render.reply.audio_format)
        except SpeechError as exc:
            log.warning("spoken reply failed: %s", exc)
            await render.append("\n\n_(I couldn't record a voice reply this time.)_")
            return
        part = OutgoingFile(
            PartKind.AUDIO, spoken.filename, spoken.mime, spoken.data, duration_secs=spoken.duration_secs
        )
        await render.attach(part)
