"""Real Discord payloads (tests/fixtures/realworld/discord, sources in sources.txt there) through discord.py's own
gateway parsing into the real adapter: each one is a MESSAGE_CREATE on the fake Discord's websocket, and the test
asserts what the core receives (the conversation, the text, the attachments) or that it was ignored.

The world matches the payloads: the bot is 344487830824943618 (the bot the Type19 capture replies to, "Reacton"),
in guild 185949590652977152 with a text channel 563557393640849437 (where that capture was posted). The hybrid
payloads name their channel by role (THREAD_OWNED, FORUM_THREAD, VOICE_TEXT, NEWS_CHANNEL, UNCACHED); those
channels are built from the channel shapes in ``_channel_shapes.json``. Payloads captured from REST have no
``guild_id``, so discord.py (like Discord's gateway for a DM) takes them as DMs.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest

from adapters.discord.adapter import DiscordAdapter
from adapters.discord.settings import DiscordSettings
from bot.gateway import Outcome
from bot.types import ThreadKey
from tests.fakes.discord_server import FakeDiscord
from tests.helpers import RecordingGateway, section

FIXTURES = Path(__file__).parent / "fixtures" / "realworld" / "discord"
BOT_ID = 344487830824943618
GUILD_ID = 185949590652977152
TEXT_ID = 563557393640849437
SOMEONE = 41771983423143937  # the owner of the thread shape: not the bot
LOREM = "What is Lorem Ipsum?\nLorem Ipsum is simply dummy text of the printing and typesetting industry."
REACTON_CARD = (
    "Channels: 136 · Emojis: 75 · Guilds: 6 · Members: 4 · Messages: 136 · Presences: 4 · Roles: 12299 · Users: 1"
    " · VoiceStates: 2"
)


@dataclass(frozen=True)
class Expect:
    """What the core receives: in ``where`` (a channel role, "dm", or None when the message is ignored), as
    (guild channel, thread) or the DM channel; ``text`` exactly, or as its start with ``prefix``."""

    where: str | None
    text: str = ""
    prefix: bool = False
    attachments: tuple[str, ...] = ()
    why: str = ""


REPLY_TO_OUR_CARD = f"[replying to your message: {REACTON_CARD}]\ncool."
CASES: dict[str, Expect] = {
    "apidocs_crosspost": Expect("dm", "Big news! In this #big-news channel!", why="channel named by mention_channels"),
    "apidocs_example_message": Expect("dm", "Supa Hot"),
    "d4j_gw_type0_plain": Expect(None, why="a guild the bot is not in"),
    "d4j_gw_type19_reply_to_bot": Expect("TEXT", REPLY_TO_OUR_CARD, why="a ping by reply: the bot's card quoted"),
    "d4j_gw_type6_pin": Expect(None, why="a pin notice, not a message"),
    "d4j_rest_forward_by_bot": Expect(None, why="a bot's"),
    "d4j_rest_sticker_only": Expect("dm", "[sticker: Scared]", why="the deprecated stickers field"),
    "hybrid_crosspost_in_guild": Expect(None, why="a guild the bot is not in"),
    "hybrid_forward_by_human_dm": Expect("dm", f"[forwarded] {LOREM}", prefix=True),
    "hybrid_forward_in_owned_thread": Expect("THREAD_OWNED", f"[forwarded] {LOREM}", prefix=True),
    "hybrid_reply_ping_in_forum_thread": Expect("FORUM_THREAD", REPLY_TO_OUR_CARD),
    "hybrid_reply_ping_in_news_channel": Expect("NEWS_CHANNEL", REPLY_TO_OUR_CARD),
    "hybrid_reply_ping_in_uncached": Expect("UNCACHED", REPLY_TO_OUR_CARD, why="looked up over REST"),
    "hybrid_reply_ping_in_voice_text": Expect("VOICE_TEXT", REPLY_TO_OUR_CARD),
    "hybrid_sticker_in_owned_thread": Expect("THREAD_OWNED", "[sticker: Scared]"),
    "hybrid_voice_message_dm": Expect("dm", "", attachments=("voice",)),
    "hybrid_voice_message_owned_thread": Expect("THREAD_OWNED", "", attachments=("voice",)),
}


def test_every_real_payload_has_a_row() -> None:
    assert sorted(CASES) == sorted(p.stem for p in FIXTURES.glob("*.json") if not p.stem.startswith("_"))


@dataclass
class World:
    fake: FakeDiscord
    adapter: DiscordAdapter
    gateway: RecordingGateway
    channels: dict[str, int]  # role → channel id
    parents: dict[int, int]  # thread id → its parent channel
    handled: asyncio.Queue[int]


def _scaffold(fake: FakeDiscord) -> tuple[dict[str, int], dict[int, int]]:
    """The guild's channels, from the real channel shapes (ids of our own, the guild's id)."""
    shapes = json.loads((FIXTURES / "_channel_shapes.json").read_text(encoding="utf-8"))

    def place(shape: str, cid: int, **changes: Any) -> int:
        fake.channels[cid] = {**copy.deepcopy(shapes[shape]), "id": str(cid), "guild_id": str(GUILD_ID), **changes}
        return cid

    category = place("Guild Category Channel", fake.new_id())
    text = place("Guild Text Channel", TEXT_ID, parent_id=str(category))
    forum = place("Guild Forum Channel", fake.new_id(), parent_id=str(category))
    channels = {
        "TEXT": text,
        "NEWS_CHANNEL": place("Guild News Channel", fake.new_id(), parent_id=str(category)),
        "VOICE_TEXT": place("Guild Voice Channel", fake.new_id()),
        "THREAD_OWNED": place("Thread Channel", fake.new_id(), parent_id=str(text), owner_id=str(BOT_ID)),
        "FORUM_THREAD": place("Thread Channel", fake.new_id(), parent_id=str(forum), owner_id=str(SOMEONE)),
    }
    parents = {channels["THREAD_OWNED"]: text, channels["FORUM_THREAD"]: forum}
    return channels, parents


@pytest.fixture
async def world() -> AsyncIterator[World]:
    fake = await FakeDiscord(bot_id=BOT_ID, guild_id=GUILD_ID).start()
    channels, parents = _scaffold(fake)
    async with aiohttp.ClientSession() as http:
        gateway = RecordingGateway(http, outcome=Outcome.ANSWERED)
        settings = section(
            DiscordSettings,
            discord_bot_token=fake.token,
            discord_api_base=fake.api_base,
            discord_gateway_url=fake.gateway_url,
            discord_guild_ready_timeout_secs=0.05,
            discord_ack_reaction="",
            discord_sync_commands=False,
        )
        adapter = DiscordAdapter(gateway, settings)  # type: ignore[arg-type]
        handled: asyncio.Queue[int] = asyncio.Queue()

        async def on_message(message: discord.Message) -> None:  # the adapter's handler, then a receipt
            await adapter.on_message(message)
            handled.put_nowait(message.id)

        adapter.client.event(on_message)
        task = asyncio.create_task(adapter.run())
        await asyncio.wait_for(adapter.ready.wait(), 10)
        # A thread discord.py has not cached (it appeared while the bot was away): only REST knows it.
        uncached = fake.new_id()
        fake.channels[uncached] = fake._thread(uncached, TEXT_ID, SOMEONE, "unarchived meanwhile")
        channels["UNCACHED"], parents[uncached] = uncached, TEXT_ID
        try:
            yield World(fake, adapter, gateway, channels, parents, handled)
        finally:
            await adapter.close()
            await asyncio.wait_for(task, 5)
            await fake.close()


def _key_for(world: World, where: str, message_id: int) -> ThreadKey:
    guild = str(GUILD_ID)
    if where in ("TEXT", "NEWS_CHANNEL"):  # a mention in a channel: the thread it opens has the message's id
        return ThreadKey("discord", guild, str(world.channels[where]), str(message_id))
    channel = world.channels[where]
    if where == "VOICE_TEXT":
        return ThreadKey("discord", guild, str(channel), str(channel))
    return ThreadKey("discord", guild, str(world.parents[channel]), str(channel))


@pytest.mark.parametrize("name", sorted(CASES))
async def test_a_real_payload_reaches_the_core_as_expected(world: World, name: str) -> None:
    payload = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    expect = CASES[name]
    if payload["channel_id"] in world.channels:  # a hybrid names its channel by role
        payload["channel_id"] = str(world.channels[payload["channel_id"]])
    await world.fake.dispatch("MESSAGE_CREATE", payload)
    assert await asyncio.wait_for(world.handled.get(), 10) == int(payload["id"]), "discord.py read it"

    submitted = world.gateway.submitted
    assert world.gateway.commands == []
    if expect.where is None:
        assert submitted == [], expect.why
        return
    (incoming,) = submitted
    if expect.where == "dm":
        channel = payload["channel_id"]
        assert incoming.key == ThreadKey("discord", "dm", channel, channel) and incoming.is_dm
    else:
        assert incoming.key == _key_for(world, expect.where, int(payload["id"])) and not incoming.is_dm
    if expect.prefix:
        assert incoming.text.startswith(expect.text) and len(incoming.text) > len(expect.text)
    else:
        assert incoming.text == expect.text, expect.why
    assert tuple(a.kind.value for a in incoming.attachments) == expect.attachments
    assert incoming.user_id == payload["author"]["id"]
    assert incoming.dedupe_keys == (f"discord:msg:{payload['id']}",)


async def test_the_forward_carries_the_whole_snapshot(world: World) -> None:
    payload = json.loads((FIXTURES / "hybrid_forward_by_human_dm.json").read_text(encoding="utf-8"))
    await world.fake.dispatch("MESSAGE_CREATE", payload)
    await asyncio.wait_for(world.handled.get(), 10)
    (incoming,) = world.gateway.submitted
    assert incoming.text == "[forwarded] " + payload["message_snapshots"][0]["message"]["content"]


async def test_a_channel_the_guild_cache_lacks_is_named_from_mention_channels(world: World) -> None:
    payload = json.loads((FIXTURES / "apidocs_crosspost.json").read_text(encoding="utf-8"))
    payload |= {"guild_id": str(GUILD_ID), "channel_id": str(TEXT_ID), "mentions": [world.fake.bot_user]}
    payload["member"] = {"roles": [], "joined_at": "2024-01-01T00:00:00+00:00", "deaf": False, "mute": False}
    payload["content"] = f"<@{BOT_ID}> {payload['content']}"
    await world.fake.dispatch("MESSAGE_CREATE", payload)
    await asyncio.wait_for(world.handled.get(), 10)
    (incoming,) = world.gateway.submitted
    assert incoming.text == "Big news! In this #big-news channel!"
