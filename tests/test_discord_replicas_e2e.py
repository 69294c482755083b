"""Discord with more than one process (issue 9), end to end: the real discord.py against the fake Discord, the real
core against fake OpenAIs. Shards split across two processes on one PostgreSQL database (each guild's events reach
only the process holding its shard, which answers them once); an answer cut off mid-way is asked again with a 🔁
reaction by a process that never received the message (its reply address and attachment URL come from the durable
inbox), and the answer is written into the message the cut attempt had posted instead of a second one."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest

from adapters.discord.convert import Reaction, ReplyAddress, reaction_meaning
from adapters.discord.settings import DiscordSettings
from adapters.discord.setup import make_client, shard_plan
from bot.errors import StartupError
from tests.fakes.discord_server import FakeDiscord, shard_of
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.helpers import section
from tests.test_discord_e2e import Harness, RunningBot, answered, thread_of

RETRY = "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}"
LONG = " ".join(f"word{i}" for i in range(400))  # ~7 s at this pace: the cut always comes in the middle


@pytest.fixture
async def other_openai(openai_warm: str) -> AsyncIterator[FakeOpenAI]:
    """A second fake OpenAI: each replica asks its own, so an answer's text says which replica gave it."""
    fake = FakeOpenAI()
    await fake.start()
    yield fake
    await fake.close()
    assert fake.violations == []


def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)


def questions(openai: FakeOpenAI) -> list[str]:
    return [r.json["input"][0]["content"][0]["text"] for r in openai.requests if r.path == "/v1/responses"]


# --- shards split across processes -------------------------------------------------------------------------
async def test_two_replicas_with_a_shard_each_answer_each_guild_once_from_the_shard_that_holds_it(
    tmp_path: Path,
    fake_discord: FakeDiscord,
    fake_openai: FakeOpenAI,
    other_openai: FakeOpenAI,
    pg_database_url: str,
) -> None:
    home = shard_of(fake_discord.guild_id, 2)
    away_guild, away_channel = fake_discord.add_guild("Away", shard=(1 - home, 2))
    assert shard_of(away_guild, 2) != home
    openai_for = {home: fake_openai, 1 - home: other_openai}
    harnesses: list[Harness] = []
    bots: dict[int, RunningBot] = {}
    try:
        for shard in (0, 1):
            (tmp_path / str(shard)).mkdir()
            harness = Harness(tmp_path / str(shard), fake_discord, openai_for[shard])
            harnesses.append(harness)
            openai_for[shard].script(*[Reply(text=f"Answer from shard {shard}.")] * 2)
            bots[shard] = await harness.start(
                discord_shard_count=2, discord_shard_ids=[str(shard)], database=pg_database_url, lease_secs=60
            )
        assert sorted(identify["shard"] for identify in fake_discord.identifies) == [[0, 2], [1, 2]]

        here = await fake_discord.user_message(fake_discord.channel_id, "question at home", mention_bot=True)
        away = await fake_discord.user_message(away_channel, "question away", mention_bot=True)
        dm = fake_discord.dm_channel(fake_discord.alice)
        in_dm = await fake_discord.user_message(dm, "question in a DM")
        await fake_discord.wait_for(lambda: len(fake_discord.threads_created) == 2, 10, "two threads")
        for thread, shard in ((int(here["id"]), home), (int(away["id"]), 1 - home), (dm, 0)):
            await answered(fake_discord, bots[shard], thread, f"Answer from shard {shard}.")

        for payload, shard in ((here, home), (away, 1 - home), (in_dm, 0)):
            got = [d.shard for d in fake_discord.deliveries if d.event == "MESSAGE_CREATE" and d.data is payload]
            assert got == [(shard, 2)], "a guild's message reaches only the session of its shard, a DM shard 0's"
        for thread, shard in ((int(here["id"]), home), (int(away["id"]), 1 - home), (dm, 0)):
            (message,) = fake_discord.bot_messages_in(thread)
            assert message["content"] == f"Answer from shard {shard}.", "answered once, by the shard's replica"
        assert sorted(questions(openai_for[0])) == sorted(
            ["question in a DM", "question at home" if home == 0 else "question away"]
        )
        assert questions(openai_for[1]) == ["question away" if home == 0 else "question at home"]
    finally:
        for harness in harnesses:
            await harness.close()


# --- 🔁: an interrupted answer asked again from the inbox --------------------------------------------------------
async def cut_mid_answer(bot: RunningBot) -> None:
    """The process goes away while an answer streams: the runtime shuts down first (the turn is cut and its thread
    told, while the gateway connection still stands), then the adapter."""
    bot.stopped = True
    await bot.stack.aclose()
    await bot.adapter.close()
    await bot.task


async def test_a_retry_reaction_asks_an_interrupted_answer_again_in_place_from_another_process(
    tmp_path: Path, fake_discord: FakeDiscord, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    harness = Harness(tmp_path, fake_discord, fake_openai)
    try:
        bot = await harness.start()
        fake_openai.script(Reply(text=LONG, token_interval=0.02, chunk=8), Reply(text="Second try."))
        notes = fake_discord.attachment(b"the meeting moved to Tuesday", "notes.txt", "text/plain")
        mention = await fake_discord.user_message(
            fake_discord.channel_id, "summarise my notes", mention_bot=True, attachments=[notes]
        )
        await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
        tid = thread_of(fake_discord)
        assert tid == int(mention["id"])
        await fake_discord.wait_for(lambda: bool(fake_discord.text_in(tid)), 10, "the answer to start")
        await cut_mid_answer(bot)
        cut, notice = fake_discord.bot_messages_in(tid)
        assert LONG.startswith(cut["content"]) and cut["content"] != LONG
        assert "was interrupted" in notice["content"]
        assert [w.nonce for w in fake_discord.writes_in(tid) if w.kind == "send"] == [
            f"{tid}.0",
            f"{tid}.w0",
        ], "the notice is a note of the turn, counted apart from the answer's parts"

        bot = await harness.start(allowed_users=[fake_discord.alice["id"]])  # a process that never saw the mention
        with caplog.at_level(logging.INFO, logger="threadline.discord"):
            await fake_discord.user_reaction(notice, RETRY, user=fake_discord.bob)
            await fake_discord.wait_for(lambda: logged(caplog, "who may not use the bot here"), 5, "bob's 🔁")
            await fake_discord.user_reaction(notice, RETRY)
            await answered(fake_discord, bot, tid, "Second try.")
            again, still = fake_discord.bot_messages_in(tid)
            assert again["id"] == cut["id"] and again["content"] == "Second try.", "written into the cut message"
            assert still["id"] == notice["id"] and fake_discord.nonce_hits == 1
            assert questions(fake_openai) == ["summarise my notes"] * 2, "bob's 🔁 retried nothing; alice's once"
            assert fake_discord.cdn_hits.count(notes["url"].split("/cdn/", 1)[1]) == 2, "fetched again by its URL"
            await fake_discord.wait_for(lambda: fake_discord.reactions_on(int(again["id"])) == ["👍", "👎"], 5)

            before = (len(fake_discord.writes), len(fake_discord.messages), len(fake_discord.reactions))
            await fake_discord.user_reaction(again, RETRY)
            await fake_discord.wait_for(lambda: logged(caplog, "found no interrupted answer"), 5, "a second 🔁")
            await bot.idle()
        assert (len(fake_discord.writes), len(fake_discord.messages), len(fake_discord.reactions)) == before
        assert len(questions(fake_openai)) == 2, "nothing to retry: nothing asked, nothing posted"
    finally:
        await harness.close()


# --- settings and addresses --------------------------------------------------------------------------------------
def discord_settings(**values: Any) -> DiscordSettings:
    return section(DiscordSettings, discord_bot_token="t", **values)


def test_shard_settings_are_checked_at_start_up_with_a_clear_error() -> None:
    assert shard_plan(discord_settings()) == (None, None)
    assert shard_plan(discord_settings(discord_shard_count=4)) == (4, None)
    assert shard_plan(discord_settings(discord_shard_count=4, discord_shard_ids="3, 1")) == (4, [1, 3])
    with pytest.raises(StartupError, match="DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT"):
        shard_plan(discord_settings(discord_shard_ids="0"))
    with pytest.raises(StartupError, match=r"from 0 to 1 \(DISCORD_SHARD_COUNT is 2\), not '2'"):
        shard_plan(discord_settings(discord_shard_count=2, discord_shard_ids="0,2"))
    with pytest.raises(StartupError, match="not '-1'"):
        shard_plan(discord_settings(discord_shard_count=2, discord_shard_ids="-1"))
    with pytest.raises(StartupError, match="at least 1"):
        shard_plan(discord_settings(discord_shard_count=0))


def test_a_shard_count_makes_a_client_that_runs_only_its_own_shards() -> None:
    client = make_client(discord_settings(discord_shard_count=3, discord_shard_ids="2"))
    assert isinstance(client, discord.AutoShardedClient)
    assert (client.shard_count, client.shard_ids) == (3, [2])
    everything = make_client(discord_settings(discord_shard_count=3))
    assert isinstance(everything, discord.AutoShardedClient) and everything.shard_ids is None
    assert not isinstance(make_client(discord_settings()), discord.AutoShardedClient)


def test_a_reply_address_is_strings_only_and_reads_back() -> None:
    address = ReplyAddress(
        channel=5, guild=7, turn=5, message=5, parent=9, create_thread=True, thread_name="A question"
    )
    encoded = address.encode()
    assert all(isinstance(v, str) for v in encoded.values())
    assert ReplyAddress.decode(encoded) == address
    dm = ReplyAddress(channel=3, guild=None, turn=4)
    assert ReplyAddress.decode(dm.encode()) == dm
    with pytest.raises(ValueError, match="numeric 'channel'"):
        ReplyAddress.decode({**encoded, "channel": "general"})
    with pytest.raises(ValueError, match="needs its guild, message and parent"):
        ReplyAddress.decode({**encoded, "parent": ""})
    assert reaction_meaning(RETRY) is Reaction.RETRY and reaction_meaning(RETRY + "\ufe0f") is Reaction.RETRY
