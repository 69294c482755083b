"""The engine on OpenAI Conversations + Responses: one conversation per platform thread, streamed turns.

Thread memory lives on OpenAI's side; the store keeps only thread key → conversation id. Each turn sends just
the new message, so request size stays flat as a thread grows.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from openai import AsyncOpenAI

from bot.attachments_in import AttachmentReader, TurnInput
from bot.conversation_pool import ConversationPool
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
from bot.metrics import Metrics
from bot.openai_errors import api_error_message, terminal_event_error
from bot.protocols import ReplyStream, is_stop_request
from bot.settings import Settings
from bot.speech import SpeechError, speaker_for
from bot.sse import sse_events
from bot.store import Store, StoredImage, UsageRow
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
CONTEXT_LOST_NOTE = "_(I had lost this thread's earlier context, so I started a fresh conversation.)_\n\n"

# Tool work shown as steps (titles); reasoning is a plain status.
_STEP_BY_ITEM = {
    "code_interpreter_call": "Running code",
    "image_generation_call": "Drawing",
    "file_search_call": "Searching the files",
    "web_search_call": "Searching the web",
    "function_call": "Working",
    "mcp_call": "Calling a tool",
}
_STATUS_BY_ITEM = {"reasoning": "thinking…"}


# Per-thread preference: what the last turn was about ("image" or "chat"); a change request right after an
# image turn edits that image.
LAST_TURN = "last_turn"


@dataclass(frozen=True, slots=True)
class EditRequest:
    image: MadeImage
    mask: bytes | None
    instruction: str


class _ConversationGone(Exception):
    """The server no longer knows the stored conversation id."""


class _TurnRender:
    """Per-turn rendering state: makes sure ``start`` precedes any output, and collects the text.

    The first status ("thinking…") is a platform API call; it runs while the model is asked, and the reply
    sees nothing else until it has returned, so the adapter still gets its calls one at a time, in order.
    """

    def __init__(self, reply: ReplyStream, first_status: str) -> None:
        self.reply = reply
        self.started = False
        self.text: list[str] = []
        self.citations: list[tuple[str, str, str]] = []
        self.response_id: str | None = None
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

    async def set_status(self, status: str) -> None:
        await self.settle()
        await self.reply.set_status(status)

    async def ensure_started(self) -> None:
        await self.settle()
        if not self.started:
            self.started = True
            await self.reply.start()

    async def append(self, delta: str) -> None:
        if delta:
            await self.ensure_started()
            self.text.append(delta)
            await self.reply.append(delta)

    async def attach(self, part: OutgoingFile) -> None:
        await self.ensure_started()
        await self.reply.attach(part)

    async def preview(self, part: OutgoingFile) -> None:
        await self.settle()
        await self.reply.preview(part)

    async def step(self, step: TaskStep) -> None:
        await self.settle()
        await self.reply.step(step)


class ConversationsEngine:
    def __init__(
        self, *, settings: Settings, store: Store, client: AsyncOpenAI, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.metrics = metrics or Metrics()
        self.attachments = AttachmentReader(settings=settings, store=store, client=client)
        self.speaker = speaker_for(
            client, model=settings.tts_model, voice=settings.tts_voice, timeout_secs=settings.speech_timeout_secs
        )
        self.images = ImageMaker(
            client=client, model=settings.image_model, partial_images=settings.image_partial_previews
        )
        self.pool = ConversationPool(client, size=settings.conversation_pool)

    async def close(self) -> None:
        await self.pool.close()

    async def forget(self, key: ThreadKey) -> None:
        await self.store.forget_conversation(key)

    async def model_for(self, platform: str, channel: str) -> str:
        return await self.store.channel_model(platform, channel) or self.settings.model

    async def run_turn(self, message: IncomingMessage, reply: ReplyStream) -> None:
        model = await self.model_for(message.key.platform, message.key.channel)
        render = _TurnRender(reply, "drawing…" if message.kind is TurnKind.IMAGINE else "thinking…")
        try:
            if message.kind is TurnKind.IMAGINE:
                await self._imagine(message, model, render)
            elif (request := await self._edit_request(message, render)) is not None:
                await self._edit(message, model, render, request)
            else:
                await self._run_turn(message, reply, model, render)
            await render.ensure_started()
            await reply.finish()
        except asyncio.CancelledError as exc:
            await render.abandon(stopped=True)
            if not is_stop_request(exc):
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()  # the user's stop ends this turn only: the thread's lane goes on
            await self._finish_stopped(message, model, render)
        except BaseException:
            await render.abandon(stopped=False)
            raise

    async def _finish_stopped(self, message: IncomingMessage, model: str, render: _TurnRender) -> None:
        """The answer so far stays and ends with "(stopped)"; the model stream is already closed. The usage of the
        cut response is read back from the server (best effort, a few seconds at most)."""
        log.info("turn in %s stopped by the user", message.key)
        await render.append("\n\n_(stopped)_" if render.started else "_(stopped)_")
        await render.reply.finish()
        if render.response_id is None:
            return
        try:
            async with asyncio.timeout(STOPPED_USAGE_TIMEOUT_SECS):
                response = await self.client.responses.retrieve(render.response_id)
        except (openai.OpenAIError, TimeoutError) as exc:
            log.info("no usage for the stopped response %s: %s", render.response_id, type(exc).__name__)
            return
        await self._record_usage(response.model_dump(), message, model)

    async def _run_turn(self, message: IncomingMessage, reply: ReplyStream, model: str, render: _TurnRender) -> None:
        if message.attachments:
            await render.settle()  # the attachments' own statuses come after "thinking…"
        turn = await self._guard(self.attachments.build(message, reply), model)
        conversation = await self._conversation(message, model)
        try:
            await self._respond(conversation, model, turn, message, render)
        except _ConversationGone:
            log.warning("conversation %s is gone on the server; starting a new one", conversation)
            conversation = await self._conversation(message, model, fresh=True)
            await render.append(CONTEXT_LOST_NOTE)
            try:
                await self._respond(conversation, model, turn, message, render)
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
        self.pool.warm()  # tops the pool up in the background; a no-op when full or off
        record = None if fresh else await self.store.thread(message.key)
        if record and record.conversation_id:
            return record.conversation_id
        metadata = {
            "platform": message.key.platform,
            "workspace": message.key.workspace[:512],
            "channel": message.key.channel[:512],
            "thread": message.key.thread[:512],
        }
        conversation_id = self.pool.take(metadata)
        if conversation_id is None:
            conversation_id = (await self._guard(self.client.conversations.create(metadata=metadata), model)).id
        await self.store.save_conversation(message.key, conversation_id=conversation_id, model=model)
        return str(conversation_id)

    # --- images on request ---------------------------------------------------------------------------------
    async def _imagine(self, message: IncomingMessage, model: str, render: _TurnRender) -> None:
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

    async def _edit_request(self, message: IncomingMessage, render: _TurnRender) -> EditRequest | None:
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

    async def _edit(self, message: IncomingMessage, model: str, render: _TurnRender, request: EditRequest) -> None:
        await render.set_status("editing the image…")
        made = await self.images.edit(request.instruction, request.image, request.mask)
        await self._deliver_image(
            message, model, render, made, request=f"Edit the image: {request.instruction}", caption=request.instruction
        )

    async def _deliver_image(
        self, message: IncomingMessage, model: str, render: _TurnRender, made: MadeImage, *, request: str, caption: str
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

    def _tools(self, turn: TurnInput) -> list[dict[str, Any]]:
        tools: list[dict[str, Any]] = []
        for name in self.settings.tools:
            if name == "code_interpreter":
                tools.append(
                    {
                        "type": "code_interpreter",
                        "container": {"type": "auto", "file_ids": turn.code_file_ids},
                    }
                )
            elif name == "image_generation":
                tools.append({"type": "image_generation", "model": self.settings.image_model, "partial_images": 1})
            elif name == "web_search":
                tools.append({"type": "web_search"})
            else:
                log.warning("unknown tool %r in settings ignored", name)
        return tools

    async def _respond(
        self, conversation: str, model: str, turn: TurnInput, message: IncomingMessage, render: _TurnRender
    ) -> None:
        request: dict[str, Any] = {
            "model": model,
            "conversation": conversation,
            "instructions": self.settings.instructions,
            "input": [{"role": "user", "content": turn.content}],
            "stream": True,
        }
        tools = self._tools(turn)
        if tools:
            request["tools"] = tools
        completed = False
        streaming = False
        try:
            # The SDK's generic post: same auth, retries and errors as responses.create, without its per-request
            # parameter transform and per-event models (most of the CPU of a turn; README, Performance).
            raw = await self.client.post("/responses", cast_to=httpx2.Response, body=request, stream=True)
            try:
                async for event in sse_events(raw.aiter_lines()):
                    streaming = True
                    completed = await self._on_event(event, message, model, render) or completed
            finally:
                await raw.aclose()
        except openai.NotFoundError as exc:
            if "conversation" in str(exc).lower():
                raise _ConversationGone(conversation) from exc
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
        if not completed:
            raise UserFacingError("The answer stopped before it was complete. Please ask again.")
        await self.store.touch(message.key)
        for container_id, file_id, filename in render.citations:
            await self._attach_container_file(render, container_id, file_id, filename)

    async def _on_event(self, event: dict[str, Any], message: IncomingMessage, model: str, render: _TurnRender) -> bool:
        """Handle one stream event (decoded JSON); True when the response completed (possibly cut short)."""
        kind = event.get("type")
        if kind == "response.created":
            render.response_id = (event.get("response") or {}).get("id") or render.response_id
        elif kind == "response.output_text.delta":
            await render.append(event.get("delta") or "")
        elif kind == "response.output_item.added":
            item = event.get("item") or {}
            title = _STEP_BY_ITEM.get(str(item.get("type")))
            if title:
                await render.step(TaskStep(str(item.get("id") or event.get("output_index")), title))
            elif status := _STATUS_BY_ITEM.get(str(item.get("type"))):
                await render.set_status(status)
        elif kind == "response.output_item.done":
            item = event.get("item") or {}
            if title := _STEP_BY_ITEM.get(str(item.get("type"))):
                await render.step(TaskStep(str(item.get("id") or event.get("output_index")), title, done=True))
            if item.get("type") == "image_generation_call" and item.get("result"):
                fmt = item.get("output_format") or "png"
                data = base64.b64decode(item["result"])
                await render.attach(OutgoingFile(PartKind.IMAGE, f"image.{fmt}", f"image/{fmt}", data))
        elif kind == "response.output_text.annotation.added":
            ann = event.get("annotation") or {}
            if ann.get("type") == "container_file_citation":
                cited = (ann["container_id"], ann["file_id"], ann.get("filename") or "file")
                if cited not in render.citations:
                    render.citations.append(cited)
        elif kind == "response.completed":
            await self._record_usage(event.get("response") or {}, message, model)
            return True
        elif kind == "response.incomplete":
            response = event.get("response") or {}
            await self._record_usage(response, message, model)
            reason = (response.get("incomplete_details") or {}).get("reason") or "unknown"
            if reason == "max_output_tokens":
                await render.append("\n\n_(The answer was cut short: it reached the length limit.)_")
            else:
                await render.append(f"\n\n_(The answer was cut short: {reason}.)_")
            return True
        elif kind == "response.failed":
            error = (event.get("response") or {}).get("error") or {}
            raise terminal_event_error("failed", error.get("code"), error.get("message"))
        elif kind == "error":
            raise terminal_event_error("reported an error", event.get("code"), event.get("message"))
        return False

    async def _record_usage(self, response: dict[str, Any], message: IncomingMessage, model: str) -> None:
        usage = response.get("usage")
        if not usage:
            return
        self.metrics.tokens(
            message.key.platform,
            response.get("model") or model,
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
            cached_tokens=int((usage.get("input_tokens_details") or {}).get("cached_tokens") or 0),
        )
        await self.store.record_usage(
            UsageRow(
                platform=message.key.platform,
                user=message.user_id,
                channel=message.key.channel,
                thread=message.key.thread,
                model=response.get("model") or model,
                input_tokens=int(usage.get("input_tokens") or 0),
                output_tokens=int(usage.get("output_tokens") or 0),
                cached_input_tokens=int((usage.get("input_tokens_details") or {}).get("cached_tokens") or 0),
            )
        )

    async def _attach_container_file(self, render: _TurnRender, container_id: str, file_id: str, filename: str) -> None:
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

    async def _speak_if_wanted(self, message: IncomingMessage, turn: TurnInput, render: _TurnRender) -> None:
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
