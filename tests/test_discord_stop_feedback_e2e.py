"""Stop and feedback on Discord, end to end (the real discord.py against the fake Discord, the real core against
the fake OpenAI): a ⏹ reaction or ``/stop`` stops a long answer (the model stream is closed, the answer so far
ends with "(stopped)", the thread goes on); the bot adds 👍 and 👎 to each finished answer and stores what users
click; refused users' reactions and the bot's own count for nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import discord
import pytest

from adapters.discord.convert import Reaction, dm_key, guild_key, reaction_meaning
from adapters.discord.setup import gateway_intents
from bot.store import FeedbackRow, Store
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.test_discord_e2e import Harness, RunningBot, answered, thread_of

LONG = " ".join(f"word{i}" for i in range(400))  # ~7 s at this pace: a stop always comes in the middle
STOP = "\u23f9\ufe0f"  # ⏹️ as Discord's picker sends it
STOP_BARE = "\u23f9"  # ⏹ without the variation selector
EPHEMERAL = 64


@pytest.fixture
async def harness(tmp_path: Path, fake_discord: FakeDiscord, fake_openai: FakeOpenAI) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, fake_discord, fake_openai)
    yield h
    await h.close()


def long_then(after: str) -> tuple[Reply, Reply]:
    return Reply(text=LONG, token_interval=0.02, chunk=8), Reply(text=after)


async def first_words(fake: FakeDiscord, channel_id: int) -> dict[str, Any]:
    """The bot's first message in the channel, once the answer has begun streaming there."""
    await fake.wait_for(lambda: bool(fake.bot_messages_in(channel_id)), 10, "the answer to start")
    return fake.bot_messages_in(channel_id)[0]


async def stopped_answer(fake: FakeDiscord, bot: RunningBot, openai: FakeOpenAI, channel_id: int) -> None:
    """The answer in the channel ends with "(stopped)", says nothing the model did not stream, and its stream
    was closed before the model finished."""
    await fake.wait_for(lambda: "_(stopped)_" in fake.text_in(channel_id), 10, "the stopped answer")
    await bot.idle()
    messages = [m for m in fake.bot_messages_in(channel_id) if not m["flags"] & EPHEMERAL]  # /stop's answer
    final = messages[-1]["content"]
    assert final.endswith("\n\n_(stopped)_") and LONG not in fake.text_in(channel_id)
    said = "\n".join(m["content"] for m in messages).removesuffix("\n\n_(stopped)_")
    assert said and LONG.startswith(said), "the answer so far stays, nothing is added after the stop"
    (cut,) = [turn for turn in openai.responses_by_id.values() if not turn.finished]
    assert cut.sent_text.startswith(said), "the model stream was closed before the model finished"


def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)


async def feedback_once(store: Store, *, value: str | None = None) -> FeedbackRow:
    """The one feedback row stored, once there is one (with ``value``, if given)."""
    async with asyncio.timeout(5):
        while True:
            rows = await store.recent_feedback(10)
            if rows and (value is None or rows[0].value == value):
                (row,) = rows
                return row
            await asyncio.sleep(0.01)


# --- stop -------------------------------------------------------------------------------------------------------
async def test_a_stop_reaction_on_the_answer_stops_it_and_the_thread_goes_on(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    fake_openai.script(*long_then("Next answer."))
    await fake_discord.user_message(fake_discord.channel_id, "talk a lot", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await fake_discord.user_reaction(await first_words(fake_discord, tid), STOP)
    await stopped_answer(fake_discord, bot, fake_openai, tid)

    await fake_discord.user_message(tid, "and now?")
    await answered(fake_discord, bot, tid, "Next answer.")
    assert len(fake_openai.conversations) == 1, "the thread keeps its conversation"
    assert all(turn.finished for turn in list(fake_openai.responses_by_id.values())[1:])


async def test_a_stop_reaction_on_the_message_being_answered_stops_it_in_a_dm(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    dm = fake_discord.dm_channel(fake_discord.alice)
    fake_openai.script(*long_then("DM goes on."))
    asked = await fake_discord.user_message(dm, "talk a lot")
    await first_words(fake_discord, dm)
    await fake_discord.user_reaction(asked, STOP_BARE)  # on the user's own message, no variation selector
    await stopped_answer(fake_discord, bot, fake_openai, dm)
    await fake_discord.user_message(dm, "still there?")
    await answered(fake_discord, bot, dm, "DM goes on.")


async def test_a_stop_reaction_on_the_mention_in_the_channel_stops_the_answer_in_its_thread(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    """A mention's thread grows from the mention (the thread's id is the message's), so the mention, in the
    channel, is the message being answered too."""
    bot = await harness.start()
    fake_openai.script(*long_then("Thread goes on."))
    mention = await fake_discord.user_message(fake_discord.channel_id, "talk a lot", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await first_words(fake_discord, tid)
    await fake_discord.user_reaction(mention, STOP)
    await stopped_answer(fake_discord, bot, fake_openai, tid)
    await fake_discord.user_message(tid, "and now?")
    await answered(fake_discord, bot, tid, "Thread goes on.")


async def test_slash_stop_stops_the_answer_and_says_so_only_to_the_user(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    fake_openai.script(*long_then("After the stop."))
    await fake_discord.user_message(fake_discord.channel_id, "talk a lot", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await first_words(fake_discord, tid)
    await fake_discord.slash("stop", [], channel_id=tid)
    await stopped_answer(fake_discord, bot, fake_openai, tid)

    await fake_discord.slash("stop", [], channel_id=tid)  # nothing runs any more
    await fake_discord.slash("stop", [])  # in the channel: each answer runs in its own thread
    await fake_discord.wait_for(lambda: len(fake_discord.interaction_callbacks) == 3, 5, "three answers")
    answers = [cb["data"]["content"] for cb in fake_discord.interaction_callbacks]
    assert answers[:2] == ["Stopping the answer.", "Nothing is running here."]
    assert answers[2].startswith("Use /stop inside the thread")
    assert all(cb["data"]["flags"] == EPHEMERAL for cb in fake_discord.interaction_callbacks), "ephemeral"

    await fake_discord.user_message(tid, "and now?")
    await answered(fake_discord, bot, tid, "After the stop.")


async def test_a_stop_reaction_when_nothing_runs_posts_nothing(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await harness.start()
    fake_openai.script(Reply(text="Short answer."))
    await fake_discord.user_message(fake_discord.channel_id, "hi", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await answered(fake_discord, bot, tid, "Short answer.")
    answer = fake_discord.bot_messages_in(tid)[-1]
    await fake_discord.wait_for(lambda: len(fake_discord.reactions_on(int(answer["id"]))) == 2, 5, "👍 and 👎")
    before = (len(fake_discord.writes), len(fake_discord.messages), list(fake_discord.reactions))

    with caplog.at_level(logging.INFO, logger="threadline.gateway"):
        await fake_discord.user_reaction(answer, STOP)
        await fake_discord.wait_for(lambda: logged(caplog, "nothing was running"), 5, "the stop to be handled")
    assert (len(fake_discord.writes), len(fake_discord.messages), list(fake_discord.reactions)) == before
    assert fake_discord.interaction_callbacks == [] and len(fake_openai.responses_by_id) == 1


async def test_a_refused_users_stop_reaction_is_ignored(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await harness.start(allowed_users=[fake_discord.alice["id"]])
    medium = " ".join(f"word{i}" for i in range(80))
    fake_openai.script(Reply(text=medium, token_interval=0.02, chunk=8))
    await fake_discord.user_message(fake_discord.channel_id, "talk a bit", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    with caplog.at_level(logging.INFO, logger="threadline.discord"):
        await fake_discord.user_reaction(await first_words(fake_discord, tid), STOP, user=fake_discord.bob)
        await fake_discord.wait_for(lambda: logged(caplog, "who may not use the bot here"), 5, "bob's ⏹ handled")
    await answered(fake_discord, bot, tid, medium)
    assert "(stopped)" not in fake_discord.text_in(tid)
    assert all(turn.finished for turn in fake_openai.responses_by_id.values())


# --- feedback ---------------------------------------------------------------------------------------------------
async def test_a_finished_answer_gets_thumbs_and_a_users_thumbs_down_is_stored(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start(allowed_users=[fake_discord.alice["id"]])
    fake_openai.script(Reply(text="x" * 2500))  # two messages: the reactions go on the last
    asked = await fake_discord.user_message(fake_discord.channel_id, "a long one", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await answered(fake_discord, bot, tid, "x" * 500)
    first, last = fake_discord.bot_messages_in(tid)
    await fake_discord.wait_for(lambda: len(fake_discord.reactions) == 2, 5, "the feedback reactions")
    assert fake_discord.reactions == [(tid, int(last["id"]), "👍"), (tid, int(last["id"]), "👎")]

    # Ignored, in this order: bob may not use the bot; a 👍 on a user's message is not feedback; a 👎 on the
    # answer's first message is. (The bot's own 👍 and 👎 came back as reaction events too.)
    await fake_discord.user_reaction(last, "👎", user=fake_discord.bob)
    await fake_discord.user_reaction(asked, "👍")
    await fake_discord.user_reaction(last, "👎🏽")  # a skin tone is still a 👎
    row = await feedback_once(bot.runtime.store)
    key = guild_key(fake_discord.guild_id, fake_discord.channel_id, tid)
    assert (row.key, row.turn, row.user, row.value) == (str(key), last["id"], fake_discord.alice["id"], "bad")
    assert first["id"] != last["id"]

    await fake_discord.user_reaction(last, "👍")  # a change of mind replaces the row
    assert (await feedback_once(bot.runtime.store, value="good")).turn == last["id"]


async def test_feedback_in_a_dm(harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI) -> None:
    bot = await harness.start()
    dm = fake_discord.dm_channel(fake_discord.bob)
    fake_openai.script(Reply(text="DM answer."))
    await fake_discord.user_message(dm, "hi", author=fake_discord.bob)
    await answered(fake_discord, bot, dm, "DM answer.")
    (answer,) = fake_discord.bot_messages_in(dm)
    await fake_discord.wait_for(lambda: fake_discord.reactions_on(int(answer["id"])) == ["👍", "👎"], 5, "👍 👎")
    await fake_discord.user_reaction(answer, "👍", user=fake_discord.bob)
    row = await feedback_once(bot.runtime.store)
    assert (row.key, row.turn, row.user, row.value) == (str(dm_key(dm)), answer["id"], fake_discord.bob["id"], "good")


async def test_with_the_setting_off_no_reactions_are_added_but_users_feedback_still_counts(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start(discord_feedback_reactions=False)
    fake_openai.script(Reply(text="Plain answer."))
    await fake_discord.user_message(fake_discord.channel_id, "hi", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await answered(fake_discord, bot, tid, "Plain answer.")
    (answer,) = fake_discord.bot_messages_in(tid)
    await fake_discord.user_reaction(answer, "👎")
    assert (await feedback_once(bot.runtime.store)).value == "bad"
    await bot.stop()  # shutdown waits for feedback reactions still being added: none were
    assert fake_discord.reactions == []


async def test_feedback_reactions_wait_for_the_budget_and_are_never_dropped(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake_discord.global_limit = (10, 0.2)  # a small global limit, so 20 answers at once press on it
    bot = await harness.start(discord_global_max_requests=10, discord_global_window_secs=0.2)
    asked = [
        await fake_discord.user_message(fake_discord.channel_id, f"question {n}", mention_bot=True) for n in range(20)
    ]
    for n, message in enumerate(asked):
        await answered(fake_discord, bot, int(message["id"]), f"«question {n}»")
    finals = [int(fake_discord.bot_messages_in(int(m["id"]))[-1]["id"]) for m in asked]
    await fake_discord.wait_for(lambda: len(fake_discord.reactions) == 40, 30, "every feedback reaction")
    assert all(fake_discord.reactions_on(mid) == ["👍", "👎"] for mid in finals)
    assert fake_discord.global_rate_limited == 0 and fake_discord.rate_limited == 0


# --- units ------------------------------------------------------------------------------------------------------
def test_reaction_meaning_accepts_the_variation_selector_and_skin_tones() -> None:
    assert reaction_meaning(STOP) is reaction_meaning(STOP_BARE) is Reaction.STOP
    assert reaction_meaning("👍") is reaction_meaning("👍🏿") is Reaction.GOOD
    assert reaction_meaning("👎🏻") is Reaction.BAD
    assert [reaction_meaning(e) for e in ("👀", "⏸️", "stop", None, "")] == [None] * 5


def test_the_reaction_intents_are_asked_for_and_need_no_portal_toggle() -> None:
    intents = gateway_intents()
    assert intents.guild_reactions and intents.dm_reactions
    privileged = discord.Intents(members=True, presences=True, message_content=True)
    assert intents.value & privileged.value == discord.Intents(message_content=True).value, (
        "Message Content stays the only privileged intent"
    )
