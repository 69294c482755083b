"""The engine the turn handler sees: it picks, per turn, the OpenAI engine or the local one from the channel's
model (``NAME/model`` names a provider, anything else is OpenAI), so the handler and the gateway stay unaware.

``api = "openai"`` providers (Conversations + Responses on another server) get a ``ConversationsEngine`` of their
own, on an ``AsyncOpenAI`` that shares the process's HTTP session.
"""

from __future__ import annotations

from openai import AsyncOpenAI

from bot.engine import ConversationsEngine
from bot.local_engine import LocalEngine
from bot.protocols import ReplyStream
from bot.settings import Settings
from bot.store import Store
from bot.types import IncomingMessage, ThreadKey


class ProviderConversations(ConversationsEngine):
    """The OpenAI engine on a provider's server: the ``NAME/`` prefix is the provider's, not the model's."""

    prefix: str = ""

    async def model_for(self, platform: str, channel: str) -> str:
        return (await super().model_for(platform, channel)).removeprefix(self.prefix)


class EngineRouter:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        openai: ConversationsEngine,
        local: LocalEngine,
        openai_style: dict[str, ConversationsEngine] | None = None,
        clients: list[AsyncOpenAI] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.openai = openai
        self.local = local
        self.openai_style = dict(openai_style or {})
        self.clients = list(clients or [])

    async def model_for(self, platform: str, channel: str) -> str:
        return await self.store.channel_model(platform, channel) or self.settings.model

    async def run_turn(self, message: IncomingMessage, reply: ReplyStream) -> None:
        model = await self.model_for(message.key.platform, message.key.channel)
        name, _ = self.settings.provider_of(model)
        if name is None:
            await self.openai.run_turn(message, reply)
        elif name in self.openai_style:
            await self.openai_style[name].run_turn(message, reply)
        else:
            await self.local.run_turn(message, reply, model)

    async def forget(self, key: ThreadKey) -> None:
        await self.openai.forget(key)
        await self.local.forget(key)

    async def describe_model(self, platform: str, channel: str) -> str:
        """The channel's model, with its seed and temperature when it is a chat-style provider's."""
        model = await self.model_for(platform, channel)
        name, _ = self.settings.provider_of(model)
        if name is None or name in self.openai_style:
            return f"`{model}`"
        sampling = await self.local.sampling(platform, channel)
        extras = ", ".join(f"{key} {value}" for key, value in sampling.items())
        return f"`{model}` (on {name}{'; ' + extras if extras else ''})"

    async def close(self) -> None:
        try:
            for engine in self.openai_style.values():
                await engine.close()
            await self.openai.close()
        finally:
            for client in self.clients:
                await client.close()
