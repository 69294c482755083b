"""Hostile and odd input, end to end through the fakes: Slack HTTP mode answers garbage with 400 and keeps its logs
bounded, a bare mention gets the help text without a model call, and an answer survives its question being edited
or deleted (or its Discord thread being deleted) while it is written."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from adapters.slack.http_guard import BAD_SIGNATURE, MALFORMED, RejectionLog
from bot.commands import HELP
from bot.types import ThreadKey
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.slack_server import FakeSlack
from tests.test_discord_e2e import Harness, answered, thread_of
from tests.test_slack_e2e import CHANNEL, SlackBot, SlackHarness, responses

MARKER = "ATTACKER-CHOSEN-TEXT-7f3a"


@pytest.fixture
async def slack(tmp_path: Path, fake_slack: FakeSlack, fake_openai: FakeOpenAI) -> AsyncIterator[SlackHarness]:
    harness = SlackHarness(tmp_path, fake_slack, fake_openai)
    yield harness
    await harness.close()


@pytest.fixture
async def discord_harness(tmp_path: Path, fake_discord: FakeDiscord, fake_openai: FakeOpenAI) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path, fake_discord, fake_openai)
    yield harness
    await harness.close()


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log lines that carry a traceback or are errors: none of these tests may cause one."""
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def start_http(slack: SlackHarness, caplog: pytest.LogCaptureFixture, **overrides: Any) -> SlackBot:
    """An HTTP-mode bot with every logger at INFO, as in production (bolt's loggers take the root's level when
    the app is built, so this comes first); the log is cleared of start-up lines."""
    caplog.set_level(logging.INFO)
    bot = await slack.start("http", **overrides)
    caplog.clear()
    return bot


# --- 1. malformed but signed requests get 400 -----------------------------------------------------------------------


async def test_a_signed_body_that_is_not_json_gets_400_and_no_traceback(
    slack: SlackHarness, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_http(slack, caplog)
    status, _ = await slack.fake.deliver_raw(bot.events_url, "{not json")
    await bot.stop()

    assert status == 400
    assert tracebacks(caplog) == []
    lines = [r.getMessage() for r in caplog.records if "reject" in r.getMessage()]
    assert lines == [f"rejected a request {MALFORMED} (not JSON); more rejections are summarised once a minute"]
    assert fake_openai.requests == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("[1, 2, 3]", "application/json"),
        ('{"type": "event_callback", "event": null}', "application/json"),
        ('{"type": "event_callback", "event": "app_mention"}', "application/json"),
        ('{"type": "event_callback", "team": 5, "event": {"type": "app_mention"}}', "application/json"),
        ('{"type": {"nested": "type"}}', "application/json"),
        ("payload=%7Bnot%20json", "application/x-www-form-urlencoded"),
        ('{"type": "event_callback"}', "application/json; charset=no-such-charset"),
    ],
)
async def test_any_malformed_signed_request_gets_400_with_one_line(
    slack: SlackHarness, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture, body: str, content_type: str
) -> None:
    bot = await start_http(slack, caplog)
    status, _ = await slack.fake.deliver_raw(bot.events_url, body, content_type=content_type)
    await bot.stop()

    assert status == 400
    assert tracebacks(caplog) == []
    assert len([r for r in caplog.records if "reject" in r.getMessage()]) == 1
    assert fake_openai.requests == []


async def test_a_well_formed_event_that_is_not_for_us_keeps_bolts_404(
    slack: SlackHarness, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_http(slack, caplog)
    untyped = slack.fake.event_callback({"user": "U0ALICE", "text": "no type here"})
    status, _ = await slack.fake.deliver(bot.events_url, untyped)

    assert status == 404
    assert tracebacks(caplog) == [] and not [r for r in caplog.records if "reject" in r.getMessage()]


async def test_unreadable_signature_headers_are_a_bad_signature_not_a_crash(
    slack: SlackHarness, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_http(slack, caplog)
    body = json.dumps(slack.fake.event_callback(slack.fake.user_event("hi", kind="app_mention")))
    statuses = []
    async with aiohttp.ClientSession() as session:
        for headers in (
            {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=00"},
            {"X-Slack-Request-Timestamp": "1", "X-Slack-Signature": "v0=é"},
        ):
            headers["Content-Type"] = "application/json"
            async with session.post(bot.events_url, data=body.encode(), headers=headers) as response:
                statuses.append(response.status)

    assert statuses == [401, 401]
    assert tracebacks(caplog) == []


# --- 2. bounded logs for rejected requests ---------------------------------------------------------------------------


async def test_500_unsigned_posts_leave_at_most_two_log_lines(
    slack: SlackHarness, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await start_http(slack, caplog)
    bot.adapter.guard.rejections.clock = lambda: 1000.0  # one minute, however long the posting takes
    fake = slack.fake
    statuses = []
    async with aiohttp.ClientSession() as session:
        for i in range(500):
            mention = fake.user_event(f"<@{fake.bot_user_id}> {MARKER} {i}", kind="app_mention")
            body = json.dumps(fake.event_callback(mention)) if i % 5 else "{" + MARKER  # some not even JSON
            status, _ = await fake.deliver_raw(bot.events_url, body, secret="not-the-secret", session=session)
            statuses.append(status)
    await bot.stop()  # the adapter writes out what it still counts

    assert set(statuses) == {401}
    assert not [r for r in caplog.records if MARKER in r.getMessage()], "no request body in any log line"
    about = [r for r in caplog.records if "reject" in r.getMessage() or r.name.startswith("slack_bolt")]
    assert [(r.levelno, r.getMessage()) for r in about] == [
        (logging.INFO, f"rejected a request {BAD_SIGNATURE}; more rejections are summarised once a minute"),
        (logging.WARNING, f"rejected 500 requests {BAD_SIGNATURE} in the last minute"),
    ]
    assert tracebacks(caplog) == [] and fake_openai.requests == []


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_rejections_are_logged_once_then_summarised_at_most_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.rejections")
    clock = Clock()
    rejections = RejectionLog(logging.getLogger("test.rejections"), clock=clock)

    def lines() -> list[tuple[str, str]]:
        found = [(r.levelname, r.getMessage()) for r in caplog.records]
        caplog.clear()
        return found

    rejections.rejected(BAD_SIGNATURE)
    assert lines() == [("INFO", f"rejected a request {BAD_SIGNATURE}; more rejections are summarised once a minute")]
    for second in range(1, 60):  # a flood within the minute: nothing more yet
        clock.now = second
        rejections.rejected(BAD_SIGNATURE)
        rejections.rejected(MALFORMED, "not JSON")
    assert lines() == []

    clock.now = 61  # the flood goes on past the minute: its summary comes out first
    rejections.rejected(BAD_SIGNATURE)
    assert lines() == [("WARNING", f"rejected 119 requests (60 {BAD_SIGNATURE}, 59 {MALFORMED}) in the last minute")]
    clock.now = 90
    rejections.rejected(BAD_SIGNATURE)
    assert lines() == [], "the next summary waits for the next minute"
    clock.now = 125
    rejections.rejected(BAD_SIGNATURE)
    assert lines() == [("WARNING", f"rejected 2 requests {BAD_SIGNATURE} in the last minute")]

    clock.now = 1000  # after a quiet spell, a single rejection is one INFO line again
    rejections.rejected(MALFORMED, "not JSON")
    assert lines() == [
        ("WARNING", f"rejected 1 request {BAD_SIGNATURE} in the last minute"),
        ("INFO", f"rejected a request {MALFORMED} (not JSON); more rejections are summarised once a minute"),
    ]
    rejections.close()
    assert lines() == [], "nothing beyond the INFO line to summarise"


# --- 3. a bare mention gets the help text --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["<@U0BOT>", "  <@U0BOT>   ", None])
async def test_a_bare_mention_gets_the_help_text_and_the_fake_openai_sees_no_request(
    slack: SlackHarness, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture, text: str | None
) -> None:
    fake = slack.fake
    bot = await start_http(slack, caplog)
    mention = fake.user_event("", kind="app_mention")
    mention["text"] = text
    payload = fake.event_callback(mention)
    await bot.deliver(payload)
    (message,) = await bot.answered(CHANNEL, mention["ts"])
    await bot.deliver(payload, retry=1)  # Slack retries the delivery: still one answer
    await bot.runtime.gateway.wait_idle()

    assert message.text == HELP
    assert [m.text for m in fake.thread(CHANNEL, mention["ts"])] == [HELP]
    assert fake_openai.requests == []
    assert not await bot.runtime.store.is_owned(ThreadKey("slack", fake.team_id, CHANNEL, mention["ts"]))
    assert tracebacks(caplog) == []


async def test_a_bare_discord_mention_gets_the_help_text_and_no_model_call(
    discord_harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await discord_harness.start()
    await fake_discord.user_message(fake_discord.channel_id, "", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await answered(fake_discord, bot, tid, HELP)

    assert fake_discord.text_in(tid) == HELP
    assert fake_openai.requests == []


# --- 5. edited or deleted while answering ----------------------------------------------------------------------------

LONG_ANSWER = " ".join(f"word{i}" for i in range(80))


async def test_slack_answer_finishes_when_its_question_is_edited_and_deleted_meanwhile(
    slack: SlackHarness, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    fake = slack.fake
    fake_openai.script(Reply(text=LONG_ANSWER, token_interval=0.02, chunk=8))
    bot = await start_http(slack, caplog)
    mention = fake.user_event(f"<@{fake.bot_user_id}> count for me", kind="app_mention")
    await bot.send(mention)
    await fake.wait_for(lambda: bool(fake.calls_to("chat.appendStream")))  # the answer is being written
    await bot.send(fake.edited_event(mention, f"<@{fake.bot_user_id}> count for me, slowly"))
    await bot.send(fake.deleted_event(mention))
    (message,) = await bot.answered(CHANNEL, mention["ts"])

    assert message.text == LONG_ANSWER and message.via == "stream"
    assert len(responses(fake_openai)) == 1, "the edit is not a new question"
    assert tracebacks(caplog) == []


async def test_discord_answer_finishes_when_its_question_is_edited_and_deleted_meanwhile(
    discord_harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake_openai.script(Reply(text=LONG_ANSWER, token_interval=0.02, chunk=8))
    bot = await discord_harness.start(discord_edit_interval_secs=0.1)
    asked = await fake_discord.user_message(fake_discord.channel_id, "count for me", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await fake_discord.wait_for(lambda: bool(fake_discord.writes_in(tid)), 5, "the first words")
    await fake_discord.edit_user_message(asked, f"<@{fake_discord.bot_id}> count for me, slowly")
    await fake_discord.delete_user_message(asked)
    await answered(fake_discord, bot, tid, LONG_ANSWER)

    assert fake_discord.text_in(tid) == LONG_ANSWER
    assert len([r for r in fake_openai.requests if r.path == "/v1/responses"]) == 1, "the edit is no new question"
    assert tracebacks(caplog) == []


async def test_a_discord_thread_deleted_mid_answer_ends_the_turn_with_one_line(
    discord_harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fake_openai.script(Reply(text=LONG_ANSWER * 3, token_interval=0.02, chunk=8), Reply(text="Still here."))
    bot = await discord_harness.start(discord_edit_interval_secs=0.1, discord_typing_interval_secs=0.05)
    await fake_discord.user_message(fake_discord.channel_id, "count for me", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await fake_discord.wait_for(lambda: bool(fake_discord.writes_in(tid)), 5, "the first words")
    caplog.clear()
    calls_before = len(fake_discord.rest_log)
    await fake_discord.delete_thread(tid)
    await bot.idle()

    after = [path for _, path in fake_discord.rest_log[calls_before:] if path.startswith(f"channels/{tid}")]
    assert len(after) <= 3, f"no retries: {after}"
    assert tracebacks(caplog) == []
    ours = [r for r in caplog.records if r.name.startswith("threadline") and r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in ours] == [
        f"turn in discord:{fake_discord.guild_id}:{fake_discord.channel_id}:{tid} ended with a user-facing error: "
        "the thread was deleted while I was answering"
    ]

    await fake_discord.user_message(fake_discord.channel_id, "are you still there?", mention_bot=True)
    await fake_discord.wait_for(lambda: len(fake_discord.threads_created) == 2, 5, "a second thread")
    await answered(fake_discord, bot, thread_of(fake_discord), "Still here.")


async def test_a_reply_to_a_message_deleted_meanwhile_still_goes_out(
    discord_harness: Harness, fake_discord: FakeDiscord, caplog: pytest.LogCaptureFixture
) -> None:
    bot = await discord_harness.start()
    gone = fake_discord.message_payload(fake_discord.channel_id, "/help", mention_bot=True)
    await fake_discord.dispatch("MESSAGE_CREATE", gone)  # the fake never stored it: deleted before the reply
    await answered(fake_discord, bot, fake_discord.channel_id, HELP)

    assert tracebacks(caplog) == []


async def test_a_gateway_event_discord_py_cannot_read_is_dropped_and_the_bot_stays_up(
    discord_harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bot = await discord_harness.start()
    broken = fake_discord.message_payload(fake_discord.channel_id, "no author", mention_bot=True)
    del broken["author"]
    await fake_discord.dispatch("MESSAGE_CREATE", broken)
    fake_openai.script(Reply(text="Still connected."))
    await fake_discord.user_message(fake_discord.channel_id, "hello?", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    await answered(fake_discord, bot, thread_of(fake_discord), "Still connected.")

    assert not bot.task.done(), "the adapter is still running"
    dropped = [r.getMessage() for r in caplog.records if "could not read" in r.getMessage()]
    assert dropped == ["dropped a Discord MESSAGE_CREATE event that discord.py could not read (AttributeError)"]
    assert tracebacks(caplog) == []
