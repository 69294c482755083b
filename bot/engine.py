"""The engine on OpenAI Conversations + Responses: one conversation per platform thread, streamed turns.

Thread memory lives on OpenAI's side; the store keeps only thread key → conversation id. Each turn sends just
the new message, so request size stays flat as a thread grows. The tools a turn offers come from the tool registry
(``bot.tools.registry``); stream events are decoded into neutral events (``bot.stream_events``) that the renderer
(``bot.render``) shows; function calls run in a loop of responses on the same conversation (``_respond``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx2
import openai
from openai import AsyncOpenAI

from bot.answer_format import JSON, JSON_INSTRUCTION, json_text_format
from bot.attachments_in import AttachmentReader, TurnInput
from bot.channel_settings import ChannelConfig, Choices, channel_config
from bot.containers import Containers, ThreadContainer, container_instructions, gone_error, output_file
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
from bot.knowledge import KnowledgeBase, parse_kb
from bot.ledger import charge
from bot.media import normalize_image
from bot.metrics import Metrics
from bot.openai_direct import turn_calls
from bot.openai_errors import api_error_message
from bot.protocols import ReplyStream, is_stop_request
from bot.render import TurnRender
from bot.retrieval import Retrieval, TurnSearch
from bot.settings import Settings
from bot.show_work import answer_ref, show_work, wants_show_work
from bot.speech import SpeechError, speaker_for
from bot.sse import sse_events
from bot.store import AnswerRecord, Store, StoredImage, StoreUnavailable, thread_scope
from bot.stream_events import CodeRan, Completed, Started, ToolCall, call_title, completed_from, decode
from bot.tools.registry import ToolContext, ToolRegistry, includes_for
from bot.types import (
    AttachmentKind,
    IncomingMessage,
    OutgoingFile,
    PartKind,
    TaskStep,
    ThreadKey,
    TurnKind,
)
from bot.upload_routing import asks_for_analysis
from bot.voice_mode import Mode, speakable, voice_mode

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
    (the conversation would refuse the next message until each has an output). Also the thread's container, the
    containers code ran in, and each finished response with whether it ran code (kept for ``show work``). And the
    channel's settings the turn applies (``bot.channel_settings``)."""

    channel: ChannelConfig
    response_id: str | None = None
    unanswered: _Unanswered | None = None
    container: ThreadContainer | None = None
    ran_in: set[str] = field(default_factory=set)
    code_now: bool = False
    responses: list[tuple[str, bool]] = field(default_factory=list)


class _ConversationGone(Exception):
    """The server no longer knows the stored conversation id."""


class _ContainerGone(Exception):
    """A response refused the thread's container (expired or deleted)."""


class ConversationsEngine:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        client: AsyncOpenAI,
        http: aiohttp.ClientSession,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.metrics = metrics or Metrics()
        self.calls = turn_calls(settings, client, http, self.metrics)  # a turn's response and new conversation
        self.tools = ToolRegistry.from_settings(settings, http)
        self.choices = Choices.of(settings, self.tools)
        self.json_format = json_text_format(settings.json_schema_file)
        self.attachments = AttachmentReader(settings=settings, store=store, client=client)
        self.retrieval = Retrieval(settings=settings, store=store, client=client)
        self.containers = Containers(settings=settings, store=store, client=client)
        self.knowledge = KnowledgeBase(
            settings=settings, store=store, retrieval=self.retrieval, reader=self.attachments
        )
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
        await self.retrieval.forget(thread_scope(key))
        await self.containers.forget(key)

    async def model_for(self, platform: str, channel: str) -> str:
        return await self.store.channel_model(platform, channel) or self.settings.model

    async def channel_config(self, key: ThreadKey) -> ChannelConfig:
        """The channel settings a turn in ``key`` applies (instructions, tools and MCP servers off, voice default,
        knowledge base): one store read per turn, besides ``model_for``'s."""
        return await channel_config(self.store, key, self.choices)

    async def run_turn(self, message: IncomingMessage, reply: ReplyStream) -> None:
        model = await self.model_for(message.key.platform, message.key.channel)
        channel = await self.channel_config(message.key)
        imagine = message.kind is TurnKind.IMAGINE
        fence = "json" if message.answer_format == JSON and not imagine else None
        render = TurnRender(reply, "drawing…" if imagine else "thinking…", fence=fence)
        state = _TurnState(channel)
        try:
            if imagine:
                await self._imagine(message, model, render)
            elif wants_show_work(message):
                await render.settle()
                shown = await show_work(self.client, self.store, message.key, message.target)
                await render.append(shown.text)
                for part in shown.files:
                    await render.attach(part)
            elif (kb := parse_kb(message.text)) is not None:
                await render.settle()
                await render.append(await self._guard(self.knowledge.run(kb, message, render), model))
            elif (request := await self._edit_request(message, render)) is not None:
                await self._edit(message, model, render, request)
            else:
                await self._run_turn(message, reply, model, render, state)
            await render.close_fence()
            await render.ensure_started()
            await reply.finish()
            await self._keep_answers(message.key, reply, state)
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
        files, kb = turn.retrieval_files, state.channel.kb
        search = await self._guard(self.retrieval.for_turn(message.key, files, render, knowledge=kb), model)
        await self._searching(turn, search, render)
        state.container = await self._guard(self._thread_container(message, turn, render, state.channel), model)
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
        await self._speak_if_wanted(message, turn, render, state.channel.voice)
        await self.store.set_thread_pref(message.key, LAST_TURN, "image" if turn.had_image else "chat")

    async def _thread_container(
        self, message: IncomingMessage, turn: TurnInput, render: TurnRender, channel: ChannelConfig
    ) -> ThreadContainer | None:
        """The thread's container when the code interpreter is offered: made on first need (files for it, or a
        message asking for analysis), else the one the thread has; None leaves the interpreter an "auto" one."""
        if "code_interpreter" not in self.tools.hosted or "code_interpreter" in channel.disabled:
            return None
        await self.containers.add_files(message.key, turn.interpreter_files)
        need = bool(turn.interpreter_files) or asks_for_analysis(message.text)
        container = await self.containers.for_turn(message.key, render.set_status, create=need)
        if container is not None and container.missing:
            names = ", ".join(container.missing)
            await render.append(f"_(OpenAI no longer has {names}; send it again if I should use it.)_\n\n")
        return container

    @staticmethod
    async def _searching(turn: TurnInput, search: TurnSearch, render: TurnRender) -> None:
        """The turn searches its stores; the model hears which documents came with this message (and which could
        not be indexed), the user hears about problems."""
        turn.vector_store_ids = list(search.vector_store_ids)
        indexed = search.indexed
        if indexed.searchable:
            names = ", ".join(indexed.searchable)
            note = f"[Documents attached, searchable with file search: {names}]"
            turn.content.append({"type": "input_text", "text": note})
        if notes := indexed.notes():
            turn.content.append({"type": "input_text", "text": "[" + " ".join(notes) + "]"})
            await render.append("".join(f"_({note})_\n" for note in notes) + "\n")

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
            conversation_id = await self._guard(self.calls.create_conversation(metadata), model)
        await self.store.save_conversation(message.key, conversation_id=conversation_id, model=model)
        return str(conversation_id)

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
        context = ToolContext(
            code_file_ids=turn.code_file_ids, vector_store_ids=turn.vector_store_ids, disabled=state.channel.disabled
        )
        request: dict[str, Any] = {"model": model, "conversation": conversation, "stream": True}

        def prepare() -> None:
            """The request's tools and instructions for the thread's container as it is now."""
            nonlocal context
            container = state.container
            context = dataclasses.replace(context, container_id=container.id if container else None)
            instructions = state.channel.instructions
            if container is not None:
                instructions = f"{instructions}\n\n{container_instructions(container)}"
            request["instructions"] = instructions
            if tools := self.tools.tools_for(context):
                request["tools"] = tools
                if include := includes_for(tools):
                    request["include"] = include
            if message.answer_format == JSON:
                request["instructions"] = f"{instructions}\n\n{JSON_INSTRUCTION}"
                request["text"] = {"format": self.json_format}

        prepare()
        items: list[dict[str, Any]] = [{"role": "user", "content": turn.content}]
        rounds = 0
        renewed = False
        while True:
            try:
                calls, completed = await self._round({**request, "input": items}, message, model, render, state)
            except _ContainerGone as exc:
                if renewed or state.container is None:
                    raise UserFacingError("The code interpreter is unavailable right now. Please try again.") from exc
                renewed = True
                stale = state.container.id
                state.container = await self._guard(self.containers.renew(message.key, stale, render.set_status), model)
                prepare()
                continue
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
        await render.cite_sources()
        await self.store.touch(message.key)
        await self._deliver_outputs(render, state)

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
            # Straight on the aiohttp session with the SDK's auth, retries and errors (bot.openai_direct): no
            # per-request SDK pipeline, parameter transform or per-event models (README, Performance).
            raw = await self.calls.stream("/responses", request)
            try:
                async for event in sse_events(raw.aiter_lines()):
                    streaming = True
                    for neutral in decode(event):
                        if isinstance(neutral, Started):
                            state.response_id = neutral.response_id
                        elif isinstance(neutral, CodeRan):
                            state.code_now = True
                            state.ran_in.add(neutral.container_id)
                        elif isinstance(neutral, ToolCall):
                            calls.append(neutral)
                        elif isinstance(neutral, Completed):
                            completed = neutral
                            await self._completed(neutral, message, model, render, state)
                        else:
                            await render.apply(neutral)
            finally:
                await raw.aclose()
        except (openai.NotFoundError, openai.BadRequestError) as exc:
            if state.container is not None and gone_error(exc):
                raise _ContainerGone(state.container.id) from exc
            if isinstance(exc, openai.NotFoundError) and "conversation" in str(exc).lower():
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
        if completed.response_id:
            state.responses.append((completed.response_id, state.code_now))
        state.code_now = False
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
        await charge(self.store, self.metrics, message, completed.model or model, completed.usage)

    async def _deliver_outputs(self, render: TurnRender, state: _TurnState) -> None:
        """Post the files the code made: those its answer cites, then (citations are sometimes missing) new files
        in the thread's container. Only the thread's own container is read (without one, the "auto" containers this
        turn's code ran in): a citation naming any other container, another thread's, is ignored."""
        container = state.container
        allowed = {container.id} if container is not None else state.ran_in
        posted: set[str] = set()
        for citation in render.citations:
            if citation.kind != "container_file_citation" or citation.file_id in posted:
                continue
            if citation.container_id not in allowed:
                log.warning("ignored a citation of %s in a container this turn did not use", citation.file_id)
                continue
            posted.add(citation.file_id)
            await self._attach_container_file(render, citation.container_id, citation.file_id, citation.filename)
            if container is not None and citation.container_id == container.id:
                await self.containers.posted(container.id, citation.file_id, citation.filename)
        if container is None or container.id not in state.ran_in:
            return
        for file_id, path in await self.containers.new_outputs(container, posted):
            await self._attach_container_file(render, container.id, file_id, path)
            await self.containers.posted(container.id, file_id, path)

    async def _attach_container_file(self, render: TurnRender, container_id: str, file_id: str, filename: str) -> None:
        try:
            data = await self.containers.fetch(container_id, file_id)
        except openai.OpenAIError as exc:
            log.warning("could not fetch container file %s: %s", file_id, type(exc).__name__)
            await render.append(f"\n\n_(I made {filename.rsplit('/', 1)[-1]} but could not fetch it.)_")
            return
        await render.attach(output_file(filename, data))

    async def _keep_answers(self, key: ThreadKey, reply: ReplyStream, state: _TurnState) -> None:
        """Remember the answer's responses (those that ran code, and any the platform showed in a message a
        reaction can name), for ``show work``."""
        ref = answer_ref(reply)
        if not state.responses or not (ref or any(code for _, code in state.responses)):
            return
        ref = ref or f"turn:{state.responses[0][0]}"
        now = time.time()
        try:
            for response_id, code in state.responses:
                await self.store.save_answer(AnswerRecord(key, response_id, ref, code, now))
        except StoreUnavailable as exc:  # the answer is out; only show work will miss it
            log.warning("could not keep the answer's responses in %s: %s", key, exc)

    async def _speak_if_wanted(
        self, message: IncomingMessage, turn: TurnInput, render: TurnRender, default: Mode
    ) -> None:
        mode = await voice_mode(self.store, message.key, default)
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
