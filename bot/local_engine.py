"""The engine for servers without conversations (Ollama, vLLM, llama.cpp, LM Studio…): ``chat`` (streamed
``/v1/chat/completions``) and stateless ``responses`` providers.

The thread's memory is its history in the store (``Store.add_history``): each turn sends the instructions, the
history that fits the model's context budget (``bot.history``) and the new message. Text streams through the same
renderer as the OpenAI engine; function tools come from the same registry, run in parallel, rounds capped by
``THREADLINE_TOOL_ROUNDS``. What only OpenAI offers (image generation, file search, the code interpreter, speech)
is refused in one line naming the provider; voice notes may be transcribed by OpenAI when a setting allows it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bot.answer_format import JSON, JSON_INSTRUCTION
from bot.attachments_in import INLINE_TEXT_LIMIT, AttachmentReader
from bot.channel_settings import CHANNEL_INSTRUCTIONS
from bot.errors import AttachmentError, UserFacingError
from bot.history import entry, estimate_tokens, fit, input_budget, messages_of
from bot.knowledge import parse_kb
from bot.ledger import charge
from bot.media import normalize_image
from bot.metrics import Metrics
from bot.protocols import ReplyStream, is_stop_request
from bot.providers import Provider, Providers
from bot.render import TurnRender
from bot.settings import Settings
from bot.show_work import wants_show_work
from bot.store import Store
from bot.stream_events import Completed, TextDelta, ToolCall, Usage, call_title, decode
from bot.tools.registry import ToolContext, ToolRegistry
from bot.types import AttachmentKind, IncomingMessage, TaskStep, ThreadKey, TurnKind
from bot.voice_mode import voice_mode

log = logging.getLogger("threadline.local")

# Per-thread preferences: the summary of dropped turns, and whether the thread was told that context was dropped.
LOCAL_SUMMARY = "local_summary"
LOCAL_DROPPED = "local_dropped"
ROUND_CAP_NOTE = "\n\n_(I stopped after {rounds} rounds of tool calls without a final answer. Ask again to go on.)_"
SUMMARY_PROMPT = (
    "Summarise the conversation below in at most five sentences, keeping names, numbers and decisions. "
    "Answer with the summary only."
)
SUMMARY_MAX_CHARS = 2000  # counted in the budget as it is kept (about 500 tokens)
SUMMARY_LEAD = "Earlier in this conversation: "
TEXT_MIMES = {"application/json", "application/xml", "application/x-yaml", "text/csv"}

# (platform, channel, key) → the channel's value of a per-channel setting (``seed``, ``temperature``), if set.
ChannelValue = Callable[[str, str, str], Awaitable[str | None]]


async def no_channel_values(platform: str, channel: str, key: str) -> str | None:
    return None


def stored_channel_value(store: Store) -> ChannelValue:
    """Per-channel settings as ``channel set KEY VALUE`` stored them (``bot.channel_settings``)."""

    async def value(platform: str, channel: str, name: str) -> str | None:
        for setting in await store.channel_settings(platform, channel):
            if setting.name == name:
                return setting.value
        return None

    return value


def openai_only(feature: str, model: str, provider: str) -> UserFacingError:
    return UserFacingError(
        f"{feature} needs OpenAI, and this channel's model `{model}` runs on {provider}. "
        "Pick an OpenAI model with `model NAME` to use it."
    )


@dataclass(slots=True)
class _Turn:
    """What the turn adds to the history (kept when it ends, or is stopped), and the current round's text."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    round_text: list[str] = field(default_factory=list)


class LocalEngine:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        providers: Providers,
        tools: ToolRegistry,
        reader: AttachmentReader,
        metrics: Metrics | None = None,
        channel_value: ChannelValue = no_channel_values,
    ) -> None:
        self.settings = settings
        self.store = store
        self.providers = providers
        self.tools = tools
        self.reader = reader
        self.metrics = metrics or Metrics()
        self.channel_value = channel_value

    async def forget(self, key: ThreadKey) -> None:
        await self.store.forget_history(key)
        await self.store.set_thread_pref(key, LOCAL_SUMMARY, None)
        await self.store.set_thread_pref(key, LOCAL_DROPPED, None)

    async def sampling(self, platform: str, channel: str) -> dict[str, Any]:
        """The channel's ``seed`` and ``temperature`` (per-channel settings), as request fields."""
        found: dict[str, Any] = {}
        for name, kind in (("seed", int), ("temperature", float)):
            value = await self.channel_value(platform, channel, name)
            if value not in (None, ""):
                try:
                    found[name] = kind(str(value))
                except ValueError:
                    log.warning("ignored the %s %r of %s channel %s", name, value, platform, channel)
        return found

    async def run_turn(self, message: IncomingMessage, reply: ReplyStream, model: str) -> None:
        name, model_id = self.settings.provider_of(model)
        if name is None:
            raise ValueError(f"{model} is not a provider's model")
        provider = self.providers.get(name)
        render = TurnRender(reply, "thinking…", fence="json" if message.answer_format == JSON else None)
        turn = _Turn()
        try:
            self._refuse_openai_only(message, model, name)
            user = await self._user_message(message, reply, render, provider, model)
            await self._answer(message, provider, model_id, model, user, render, turn)
            await self._speech_note(message, render, name)
            await render.close_fence()
            await render.ensure_started()
            await reply.finish()
            await self._keep(message.key, turn)
        except asyncio.CancelledError as exc:
            await render.abandon(stopped=True)
            if not is_stop_request(exc):
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            await render.append("\n\n_(stopped)_" if render.started else "_(stopped)_")
            await reply.finish()
            if turn.messages and turn.messages[-1].get("role") != "assistant" and turn.round_text:
                turn.messages.append({"role": "assistant", "content": "".join(turn.round_text)})
            await self._keep(message.key, turn)
        except BaseException:
            await render.abandon(stopped=False)
            raise

    async def _keep(self, key: ThreadKey, turn: _Turn) -> None:
        if turn.messages:
            await self.store.add_history(key, [entry(m) for m in turn.messages])
            await self.store.touch(key)

    # --- what needs OpenAI ---------------------------------------------------------------------------------
    @staticmethod
    def _refuse_openai_only(message: IncomingMessage, model: str, provider: str) -> None:
        if message.kind is TurnKind.IMAGINE:
            raise openai_only("Drawing images", model, provider)
        if parse_kb(message.text) is not None:
            raise openai_only("The knowledge base (file search)", model, provider)
        if wants_show_work(message):
            raise openai_only("Show work (the code interpreter)", model, provider)

    async def _speech_note(self, message: IncomingMessage, render: TurnRender, provider: str) -> None:
        mode = await voice_mode(self.store, message.key, self.settings.voice_replies)
        voice = any(a.kind is AttachmentKind.VOICE for a in message.attachments)
        if mode == "always" or (mode == "auto" and voice):
            await render.append(f"\n\n_(Spoken replies need OpenAI; {provider} answers in text.)_")

    async def _user_message(
        self, message: IncomingMessage, reply: ReplyStream, render: TurnRender, provider: Provider, model: str
    ) -> dict[str, Any]:
        texts = [message.text] if message.text.strip() else []
        images: list[dict[str, Any]] = []
        if message.attachments:
            await render.settle()
        for att in message.attachments:
            self.reader.check_size(att)
            if att.kind is AttachmentKind.IMAGE:
                if not provider.config.vision:
                    raise AttachmentError(
                        f"`{model}` can't see images: the provider {provider.name} has no vision. "
                        "Send text, or switch this channel to a model that can (`model NAME`)."
                    )
                await reply.set_status("reading the image…")
                image = normalize_image(await self.reader.read(att), att.filename)
                url = f"data:{image.mime};base64,{base64.b64encode(image.data).decode()}"
                images.append({"type": "image_url", "image_url": {"url": url}})
            elif att.kind in {AttachmentKind.VOICE, AttachmentKind.AUDIO}:
                if not (self.settings.local_openai_transcription and self.settings.openai_api_key.get_secret_value()):
                    raise openai_only("Transcribing voice notes and audio", model, provider.name)
                data = await self.reader.read(att)
                await reply.set_status("transcribing…")
                text = await self.reader._transcribe(att, data, reply)  # OpenAI hears it; the local model answers
                label = "Voice note" if att.kind is AttachmentKind.VOICE else f"Audio file {att.filename}"
                texts.append(f"[{label}, transcribed]: {text}")
            elif att.mime.split(";", 1)[0].lower().startswith("text/") or att.mime in TEXT_MIMES:
                data = await self.reader.read(att)
                body = data[:INLINE_TEXT_LIMIT].decode("utf-8", errors="replace")
                texts.append(f"[File {att.filename}]\n{body}")
            else:
                raise openai_only(f"Reading {att.filename} (file search, the code interpreter)", model, provider.name)
        text = "\n\n".join(texts) or "(empty message)"
        if images:
            return {"role": "user", "content": [{"type": "text", "text": text}, *images]}
        return {"role": "user", "content": text}

    # --- the history that fits ---------------------------------------------------------------------------------
    async def _context(
        self,
        key: ThreadKey,
        provider: Provider,
        model_id: str,
        model: str,
        system: dict[str, Any],
        user: dict[str, Any],
        render: TurnRender,
    ) -> list[dict[str, Any]]:
        """The messages to send: instructions (with the summary of dropped turns), history that fits, the new
        message. Turns that no longer fit are removed from the store (summarised first when asked)."""
        context = await self.providers.context_tokens(provider, model_id)
        summary = await self.store.thread_pref(key, LOCAL_SUMMARY)
        instructions = system["content"]
        if summary:
            system = {**system, "content": f"{instructions}\n\n{SUMMARY_LEAD}{summary}"}
        budget = input_budget(context) - estimate_tokens(system) - estimate_tokens(user)
        if budget < 0:
            raise UserFacingError(f"That message is too long for `{model}` ({context} tokens of context).")
        fitted = fit(await self.store.history(key), budget)
        if fitted.dropped:
            summarised = False
            if self.settings.local_summarize:
                summarised = await self._summarise(key, provider, model_id, summary, messages_of(fitted.dropped))
                if summarised:
                    summary = await self.store.thread_pref(key, LOCAL_SUMMARY)
                    system = {**system, "content": f"{instructions}\n\n{SUMMARY_LEAD}{summary}"}
            await self.store.forget_history(key, through=fitted.dropped[-1].seq)
            if not await self.store.thread_pref(key, LOCAL_DROPPED):
                await self.store.set_thread_pref(key, LOCAL_DROPPED, "1")
                what = "summarised" if summarised else "dropped"
                await render.append(
                    f"_(This thread no longer fits in `{model}`'s context, so I {what} its oldest messages.)_\n\n"
                )
        return [system, *messages_of(fitted.kept), user]

    async def _summarise(
        self, key: ThreadKey, provider: Provider, model_id: str, summary: str | None, dropped: list[dict[str, Any]]
    ) -> bool:
        lines = [f"Summary so far: {summary}"] if summary else []
        for message in dropped:
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(str(p.get("text") or "[image]") for p in content if isinstance(p, dict))
            if content:
                lines.append(f"{message.get('role')}: {content}")
        transcript = "\n".join(lines)
        try:
            if provider.config.api == "responses":
                body: dict[str, Any] = {"model": model_id, "instructions": SUMMARY_PROMPT, "input": transcript}
                answer = await self.providers.request(provider, "POST", "/responses", {**body, "store": False})
                text = "".join(
                    str(part.get("text") or "")
                    for item in answer.get("output") or []
                    for part in item.get("content") or []
                    if isinstance(part, dict) and part.get("type") == "output_text"
                )
            else:
                messages = [{"role": "system", "content": SUMMARY_PROMPT}, {"role": "user", "content": transcript}]
                answer = await self.providers.request(
                    provider, "POST", "/chat/completions", {"model": model_id, "messages": messages}
                )
                text = str(((answer.get("choices") or [{}])[0].get("message") or {}).get("content") or "")
        except UserFacingError as exc:
            log.warning("could not summarise dropped turns in %s: %s", key, exc)
            return False
        if not text.strip():
            return False
        await self.store.set_thread_pref(key, LOCAL_SUMMARY, text.strip()[:SUMMARY_MAX_CHARS])
        return True

    # --- the turn loop -----------------------------------------------------------------------------------------
    async def _answer(
        self,
        message: IncomingMessage,
        provider: Provider,
        model_id: str,
        model: str,
        user: dict[str, Any],
        render: TurnRender,
        turn: _Turn,
    ) -> None:
        instructions = self.settings.instructions
        if persona := await self.channel_value(message.key.platform, message.key.channel, "instructions"):
            instructions = f"{instructions}\n\n{CHANNEL_INSTRUCTIONS}\n{persona}"  # as the OpenAI engine does
        if message.answer_format == JSON:
            instructions = f"{instructions}\n\n{JSON_INSTRUCTION}"
        system = {"role": "system", "content": instructions}
        messages = await self._context(message.key, provider, model_id, model, system, user, render)
        turn.messages.append(user)
        offered = provider.config.tools and bool(self.tools.functions)
        sampling = await self.sampling(message.key.platform, message.key.channel)
        rounds = 0
        while True:
            turn.round_text = []
            if provider.config.api == "responses":
                calls = await self._responses_round(
                    provider, model_id, model, messages, offered, sampling, message, render, turn
                )
            else:
                calls = await self._chat_round(
                    provider, model_id, model, messages, offered, sampling, message, render, turn
                )
            text = "".join(turn.round_text)
            if not calls or rounds >= self.settings.tool_rounds:
                if calls:
                    for call in calls:
                        await render.step(TaskStep(call.call_id, call_title(call.name), done=True))
                    log.info("turn in %s reached its %d rounds of tool calls", message.key, rounds)
                    await render.append(ROUND_CAP_NOTE.format(rounds=rounds))
                turn.messages.append({"role": "assistant", "content": text})
                return
            rounds += 1
            assistant: dict[str, Any] = {"role": "assistant"}
            if text:
                assistant["content"] = text
            assistant["tool_calls"] = [
                {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in calls
            ]
            outputs = await self.tools.run(calls, ToolContext())
            for call in calls:
                await render.step(TaskStep(call.call_id, call_title(call.name), done=True))
            added = [assistant] + [
                {"role": "tool", "tool_call_id": c.call_id, "content": out}
                for c, out in zip(calls, outputs, strict=True)
            ]
            turn.messages += added
            messages += added
            await render.new_round()

    def _chat_tools(self) -> list[dict[str, Any]]:
        return [
            {"type": "function", "function": {k: spec[k] for k in ("name", "description", "parameters") if k in spec}}
            for spec in (tool.spec() for tool in self.tools.functions.values())
        ]

    async def _chat_round(
        self,
        provider: Provider,
        model_id: str,
        model: str,
        messages: list[dict[str, Any]],
        offered: bool,
        sampling: dict[str, Any],
        message: IncomingMessage,
        render: TurnRender,
        turn: _Turn,
    ) -> list[ToolCall]:
        body: dict[str, Any] = {
            "model": model_id,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            **sampling,
        }
        if offered:
            body["tools"] = self._chat_tools()
        slots: dict[int, dict[str, str]] = {}
        usage: Usage | None = None
        finish: str | None = None
        async for chunk in self.providers.stream(provider, "/chat/completions", body):
            if isinstance(found := chunk.get("usage"), dict):
                details = found.get("prompt_tokens_details") or {}
                usage = Usage(
                    int(found.get("prompt_tokens") or 0),
                    int(found.get("completion_tokens") or 0),
                    int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
                )
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if content := delta.get("content"):
                    turn.round_text.append(str(content))
                    await render.answer(str(content))
                for part in delta.get("tool_calls") or []:
                    slot = slots.setdefault(int(part.get("index", len(slots))), {"id": "", "name": "", "args": ""})
                    slot["id"] = slot["id"] or str(part.get("id") or "")
                    function = part.get("function") or {}
                    slot["name"] = slot["name"] or str(function.get("name") or "")
                    slot["args"] += str(function.get("arguments") or "")
                finish = choice.get("finish_reason") or finish
        await self._record_usage(Completed(None, model, usage), message, model)
        if finish == "length":
            await render.append("\n\n_(The answer was cut short: it reached the length limit.)_")
        calls = [
            ToolCall(slot["id"] or f"call_{index}", slot["name"], slot["args"] or "{}")
            for index, slot in sorted(slots.items())
            if slot["name"]
        ]
        for call in calls:
            await render.step(TaskStep(call.call_id, call_title(call.name)))
        return calls

    async def _responses_round(
        self,
        provider: Provider,
        model_id: str,
        model: str,
        messages: list[dict[str, Any]],
        offered: bool,
        sampling: dict[str, Any],
        message: IncomingMessage,
        render: TurnRender,
        turn: _Turn,
    ) -> list[ToolCall]:
        body: dict[str, Any] = {
            "model": model_id,
            "instructions": messages[0]["content"],
            "input": responses_input(messages[1:]),
            "stream": True,
            "store": False,
        }
        if "temperature" in sampling:
            body["temperature"] = sampling["temperature"]
        if offered:
            body["tools"] = [tool.spec() for tool in self.tools.functions.values()]
        calls: list[ToolCall] = []
        async for event in self.providers.stream(provider, "/responses", body):
            for neutral in decode(event):
                if isinstance(neutral, TextDelta):
                    turn.round_text.append(neutral.text)
                    await render.answer(neutral.text)
                elif isinstance(neutral, ToolCall):
                    calls.append(neutral)
                elif isinstance(neutral, Completed):
                    await self._record_usage(neutral, message, model)
                    if neutral.incomplete_reason:
                        await render.append(f"\n\n_(The answer was cut short: {neutral.incomplete_reason}.)_")
                else:
                    await render.apply(neutral)
        return calls

    async def _record_usage(self, completed: Completed, message: IncomingMessage, model: str) -> None:
        """Charged to the channel's model id (``NAME/model``), whatever name the provider reports."""
        await charge(self.store, self.metrics, message, model, completed.usage)


def responses_input(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat messages (the stored history) as stateless Responses input items."""
    items: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role == "user":
            parts = content if isinstance(content, list) else [{"type": "text", "text": str(content or "")}]
            items.append({"role": "user", "content": [_input_part(part) for part in parts]})
        elif role == "assistant":
            if content:
                items.append({"role": "assistant", "content": str(content)})
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call.get("id"),
                        "name": function.get("name"),
                        "arguments": function.get("arguments") or "{}",
                    }
                )
        elif role == "tool":
            items.append(
                {"type": "function_call_output", "call_id": message.get("tool_call_id"), "output": str(content)}
            )
    return items


def _input_part(part: dict[str, Any]) -> dict[str, Any]:
    if part.get("type") == "image_url":
        return {"type": "input_image", "image_url": (part.get("image_url") or {}).get("url"), "detail": "auto"}
    return {"type": "input_text", "text": str(part.get("text") or "")}
