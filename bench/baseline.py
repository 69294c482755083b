"""The baseline for the cost measure, in bench only: what most chat bots do today.

It keeps each thread's history itself and re-sends all of it with every turn to a stateless
``responses.create`` (no conversation, ``store=False``), images inline as base64 data URLs. It plugs into the
same TurnHandler as threadline's engine (the ``TurnEngine`` protocol), so only the model traffic differs.
"""

from __future__ import annotations

import base64
from typing import Any, cast

from openai import AsyncOpenAI

from bot.protocols import ReplyStream
from bot.types import AttachmentKind, IncomingMessage, ThreadKey


class HistoryResendEngine:
    """Baseline engine: full history in every request."""

    def __init__(self, *, client: AsyncOpenAI, model: str, instructions: str) -> None:
        self.client = client
        self.model = model
        self.instructions = instructions
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.input_tokens: list[int] = []  # what the model billed, per turn

    async def forget(self, key: ThreadKey) -> None:
        self.history.pop(str(key), None)

    async def model_for(self, platform: str, channel: str) -> str:
        return self.model

    async def run_turn(self, message: IncomingMessage, reply: ReplyStream) -> None:
        items = self.history.setdefault(str(message.key), [])
        content: list[dict[str, Any]] = [{"type": "input_text", "text": message.text}]
        for attachment in message.attachments:
            if attachment.kind is AttachmentKind.IMAGE:
                data = base64.b64encode(await attachment.fetch()).decode()
                url = f"data:{attachment.mime};base64,{data}"
                content.append({"type": "input_image", "image_url": url, "detail": "auto"})
        items.append({"role": "user", "content": content})
        await reply.set_status("thinking…")
        stream = await self.client.responses.create(
            model=self.model,
            instructions=self.instructions,
            input=cast(Any, items),  # our dicts are valid input items; the SDK's unions are too narrow
            store=False,
            stream=True,
        )
        answer: list[str] = []
        started = False
        async for event in stream:
            if event.type == "response.output_text.delta":
                if not started:
                    started = True
                    await reply.start()
                answer.append(event.delta)
                await reply.append(event.delta)
            elif event.type == "response.completed" and event.response.usage is not None:
                self.input_tokens.append(event.response.usage.input_tokens)
        items.append({"role": "assistant", "content": "".join(answer)})
        if not started:
            await reply.start()
        await reply.finish()
