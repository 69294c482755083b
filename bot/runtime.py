"""The process-wide objects, built once and passed explicitly: settings, store, one OpenAI client, one HTTP
session, the metrics and health report, the engine, the turn handler, the shared commands, and the gateway adapters
talk to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
from openai import AsyncOpenAI

from bot.channel_settings import ChannelCommand
from bot.commands import Commands
from bot.engine import ConversationsEngine
from bot.engines import EngineRouter, ProviderConversations
from bot.gateway import Gateway
from bot.health import Health
from bot.local_engine import LocalEngine, stored_channel_value
from bot.metrics import Metrics
from bot.openai_http import openai_http_client
from bot.providers import Providers
from bot.settings import Settings
from bot.store import Store, open_store
from bot.turns import TurnHandler


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything the core holds. Adapters get only ``gateway``; the rest is the core's (and tests')."""

    settings: Settings
    store: Store
    openai: AsyncOpenAI
    http: aiohttp.ClientSession
    engine: ConversationsEngine
    turns: TurnHandler
    commands: Commands
    gateway: Gateway
    metrics: Metrics
    health: Health
    router: EngineRouter  # what turns and commands use: OpenAI or a provider's model, per channel


def build_http_session(settings: Settings) -> aiohttp.ClientSession:
    """The process's HTTP session: OpenAI (its streams hold a connection per turn), Slack and file downloads."""
    connector = aiohttp.TCPConnector(limit=max(settings.max_concurrent_turns, 100) + 100)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120))


def build_openai_client(
    settings: Settings, http: aiohttp.ClientSession | None = None, *, metrics: Metrics | None = None
) -> AsyncOpenAI:
    return AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value() or "missing-key",
        base_url=settings.openai_base_url or None,
        timeout=settings.openai_timeout_secs,
        max_retries=settings.openai_max_retries,
        http_client=openai_http_client(settings, http, metrics=metrics),
    )


def build_router(
    settings: Settings, store: Store, http: aiohttp.ClientSession, metrics: Metrics, engine: ConversationsEngine
) -> EngineRouter:
    """The engine per turn: OpenAI, a provider on Conversations (its own client, on the same HTTP session), or
    the local engine (plain HTTP on that session)."""
    providers = Providers(settings, http)
    openai_style: dict[str, ConversationsEngine] = {}
    clients: list[AsyncOpenAI] = []
    for name, provider in providers.by_name.items():
        if provider.config.api != "openai":
            continue
        client = AsyncOpenAI(
            api_key=provider.key or "missing-key",
            base_url=provider.base_url,
            timeout=settings.openai_timeout_secs,
            max_retries=settings.openai_max_retries,
            http_client=openai_http_client(settings, http, metrics=metrics),
        )
        clients.append(client)
        conversations = ProviderConversations(settings=settings, store=store, client=client, http=http, metrics=metrics)
        conversations.prefix = f"{name}/"
        openai_style[name] = conversations
    local = LocalEngine(
        settings=settings,
        store=store,
        providers=providers,
        tools=engine.tools,
        reader=engine.attachments,
        metrics=metrics,
        channel_value=stored_channel_value(store),
    )
    return EngineRouter(
        settings=settings, store=store, openai=engine, local=local, openai_style=openai_style, clients=clients
    )


@asynccontextmanager
async def open_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """Open the store (raises StoreUnavailable when it can't be reached), then everything that uses it."""
    store = await open_store(settings.database_location, pool_size=settings.database_pool_size)
    try:
        await store.prune_events(settings.dedupe_retention_hours * 3600)
        await store.prune_inbox(settings.dedupe_retention_hours * 3600)
        metrics = Metrics()
        health = Health(settings=settings, store=store, metrics=metrics)
        http = build_http_session(settings)
        client = build_openai_client(settings, http, metrics=metrics)
        try:
            engine = ConversationsEngine(settings=settings, store=store, client=client, http=http, metrics=metrics)
            router = build_router(settings, store, http, metrics, engine)
            channel = ChannelCommand(store=store, choices=engine.choices)
            commands = Commands(
                settings=settings, store=store, engine=router, knowledge=engine.knowledge, channel=channel
            )
            turns = TurnHandler(settings=settings, engine=router, store=store, metrics=metrics)
            gateway = Gateway(
                settings=settings,
                store=store,
                turns=turns,
                commands=commands,
                http=http,
                metrics=metrics,
                health=health,
            )
            await turns.start()
            try:
                yield Runtime(settings, store, client, http, engine, turns, commands, gateway, metrics, health, router)
            finally:
                try:
                    await turns.close()
                finally:
                    await router.close()  # the conversation pools, before the clients they use
        finally:
            await client.close()
            await http.close()
    finally:
        await store.close()
