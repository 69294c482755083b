"""Slack as it is in late 2026, end to end (real slack-bolt and slack-sdk against the fake Slack, the real core
against the fake OpenAI): agent messaging (the Messages tab, app_context_changed, DMs in both shapes), the bot's
mention removed so the sentence still reads, canvases, and mentions inside canvases."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, timedelta

import pytest

from adapters.slack.convert import FILES_READ_MISSING
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.slack_server import LOGIN_PAGE
from tests.slack_recording import drain_bolt_listeners
from tests.test_slack_e2e import ALICE, CHANNEL, DM, SlackHarness, responses, slack, user_text

__all__ = ["slack"]  # the harness fixture, shared with test_slack_e2e


@dataclass
class Clock:
    """The adapter's idea of today, moved by the test."""

    day: date

    def __call__(self) -> date:
        return self.day


# --- agent_view: the Messages tab --------------------------------------------------------------------------------


async def test_opening_the_messages_tab_shows_the_prompts_once_a_day(slack: SlackHarness) -> None:
    fake = slack.fake
    clock = Clock(date(2026, 12, 1))
    bot = await slack.start("http", today=clock, slack_suggested_prompts=["Summarize this doc", "Draw a lighthouse"])

    async def opened(**event: str | None) -> None:
        await bot.send(fake.messages_tab_opened(**event))  # type: ignore[arg-type]
        await drain_bolt_listeners()

    await opened()
    await opened()  # the same person again, the same day
    await bot.send({"type": "app_home_opened", "user": ALICE, "channel": DM, "tab": "home", "event_ts": "1.2"})
    await opened(user="U0BOB", channel="D0BOB")
    clock.day += timedelta(days=1)
    await opened()

    assert [(p["channel_id"], p.get("thread_ts")) for p in fake.prompts_shown] == [
        (DM, None),  # agent_view's Messages tab has no thread: the prompts go to the DM itself
        ("D0BOB", None),
        (DM, None),  # a new day
    ]
    assert len(fake.calls_to("assistant.threads.setSuggestedPrompts")) == 3, "nothing was asked in vain"
    assert fake.prompts_shown[0]["title"] == "Try one of these:"
    assert fake.prompts_shown[0]["prompts"] == [
        {"title": "Summarize this doc", "message": "Summarize this doc"},
        {"title": "Draw a lighthouse", "message": "Draw a lighthouse"},
    ]


async def test_a_messages_tab_event_without_its_dm_posts_nothing_and_says_so(
    slack: SlackHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="threadline.slack")
    fake = slack.fake
    bot = await slack.start("http")
    await bot.send(fake.messages_tab_opened(channel=None))
    await drain_bolt_listeners()
    assert fake.calls_to("assistant.threads.setSuggestedPrompts") == []
    assert "the Messages tab opened without naming its DM (user U0ALICE); no suggested prompts" in caplog.text

    await bot.send(fake.messages_tab_opened())  # the next open that names it still gets them today
    await drain_bolt_listeners()
    assert [p["channel_id"] for p in fake.prompts_shown] == [DM]


async def test_app_context_changed_is_accepted_and_ignored(
    slack: SlackHarness, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="threadline.slack")
    fake = slack.fake
    bot = await slack.start("http")
    event = {
        "type": "app_context_changed",
        "user": ALICE,
        "channel": DM,
        "context": {"entities": [{"type": "slack#/types/channel_id", "value": CHANNEL, "team_id": fake.team_id}]},
        "event_ts": fake.next_ts(),
    }
    await bot.send(event)  # HTTP mode: a 200, not bolt's 404 for an event nobody listens to (Slack would retry)
    await drain_bolt_listeners()

    assert "ignored a Slack app_context_changed event" in caplog.text
    assert [c.method for c in fake.calls] == ["auth.test"] and fake_openai.requests == []


# --- DMs in both shapes ------------------------------------------------------------------------------------------


async def test_dms_work_as_top_level_messages_and_under_an_assistant_thread_root(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    fake = slack.fake
    fake_openai.script(Reply(text="One."), Reply(text="Two."), Reply(text="Three."), Reply(text="Four."))
    bot = await slack.start()
    # agent_view: every top-level DM is the root of its own thread, and the answer goes there
    first = fake.user_event("first question", channel=DM)
    await bot.send(first)
    await bot.answered(DM, first["ts"])
    second = fake.user_event("an unrelated question", channel=DM)
    await bot.send(second)
    await bot.answered(DM, second["ts"])
    # assistant_view: Slack's assistant_app_thread root holds the thread; the person's messages are its replies
    root = fake.next_ts()
    for text in ("in the panel", "and again"):
        await bot.send(fake.user_event(text, channel=DM, thread_ts=root, parent_user_id=ALICE))
    messages = await bot.answered(DM, root, 2)

    assert fake.texts(DM, first["ts"]) == ["One."] and fake.texts(DM, second["ts"]) == ["Two."]
    assert [m.text for m in messages] == ["Three.", "Four."]
    conversations = {b["conversation"] for b in responses(fake_openai)}
    assert len(conversations) == 3, "two top-level DMs, two threads; the panel's replies share one"
    titled = [c.args["thread_ts"] for c in fake.calls_to("assistant.threads.setTitle")]
    assert titled == [first["ts"], second["ts"], root], "each new thread gets a title, once"


# --- the bot's mention -------------------------------------------------------------------------------------------


async def test_the_bots_mention_is_removed_or_named_so_the_sentence_reads(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    fake = slack.fake
    bot = await slack.start()
    asks = [
        f"<@{fake.bot_user_id}>, can you summarise the thread?",
        f"You can count on <@{fake.bot_user_id}> for an honorable mention.",
    ]
    for text in asks:
        mention = fake.user_event(text, kind="app_mention")
        await bot.send(mention)
        await bot.answered(CHANNEL, mention["ts"])

    assert [user_text(b) for b in responses(fake_openai)] == [
        "can you summarise the thread?",
        "You can count on threadline for an honorable mention.",  # auth.test's name for the bot
    ]


# --- canvases ----------------------------------------------------------------------------------------------------


async def test_a_canvas_shared_with_the_bot_is_explained(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    url = fake.host_file("Plan", LOGIN_PAGE, "text/html")  # a canvas downloads as an HTML page
    canvas = fake.file_object("Plan", "application/vnd.slack-docs", url, 453, filetype="quip", pretty_type="Canvas")
    bot = await slack.start()
    dm = fake.user_event("summarise this canvas", channel=DM, files=[canvas])
    await bot.send(dm)
    (message,) = await bot.answered(DM, dm["ts"])

    assert message.text.startswith("⚠️ I can't read Plan: it is a canvas, and I can't read canvases yet.")
    assert FILES_READ_MISSING.format(name="Plan") not in message.text, "not the wrong files:read story"
    assert fake.file_requests == [] and responses(fake_openai) == []


async def test_a_mention_inside_a_canvas_is_logged_and_ignored(
    slack: SlackHarness, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="threadline.slack")
    fake = slack.fake
    bot = await slack.start("http")
    event = fake.user_event(f"<@{fake.bot_user_id}> was mentioned in a canvas", kind="app_mention")
    event |= {"subtype": "document_mention", "document_mention": {"file_id": "F0CANVAS", "section_id": "temp:C:1"}}
    await bot.send(event)
    await drain_bolt_listeners()
    await bot.runtime.gateway.wait_idle()

    assert "ignored a Slack app_mention event: a mention inside a canvas (document_mention)" in caplog.text
    assert fake.messages == [] and fake_openai.requests == []
