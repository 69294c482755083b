"""The Slack adapter end to end: the real slack-bolt and slack-sdk against the fake Slack (Web API, Socket Mode
websocket, signed HTTP events, file host, upload URL), the real core and openai SDK against the fake OpenAI."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from adapters.slack import SlackSettings, build
from adapters.slack.adapter import SlackAdapter
from adapters.slack.convert import FILES_READ_MISSING, SLASH_RESET_HELP
from bot.commands import HELP
from bot.runtime import Runtime, open_runtime
from bot.text_split import split_message
from bot.types import ThreadKey
from tests.fakes import media
from tests.fakes.openai_server import FakeOpenAI, Reply, audio_seconds
from tests.fakes.realtime import read_seconds
from tests.fakes.slack_server import LOGIN_PAGE, FakeMessage, FakeSlack
from tests.helpers import split_settings, stop_adapter

CHANNEL = "C0GENERAL"
DM = "D0ALICE"
ALICE = "U0ALICE"


@dataclass
class SlackBot:
    """One running adapter on its own runtime."""

    adapter: SlackAdapter
    runtime: Runtime
    task: asyncio.Task[None]
    stack: AsyncExitStack
    fake: FakeSlack

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.adapter.http_port}/slack/events"

    async def send(self, event: dict[str, Any], *, event_id: str | None = None, retry: int = 0) -> dict[str, Any]:
        """Deliver one event the way the adapter's mode receives it; returns the event callback sent."""
        payload = self.fake.event_callback(event, event_id=event_id)
        await self.deliver(payload, retry=retry)
        return payload

    async def deliver(self, payload: dict[str, Any], *, retry: int = 0) -> None:
        if self.adapter.http_mode:
            status, _ = await self.fake.deliver(self.events_url, payload, retry_num=retry or None)
            assert status == 200
        else:
            await self.fake.send_envelope(payload, retry_attempt=retry)

    async def command(self, text: str, *, channel: str = CHANNEL) -> str:
        form = self.fake.slash_command(text, channel=channel)
        if self.adapter.http_mode:
            status, body = await self.fake.deliver(self.events_url, form, form=True)
            assert status == 200
            ack = json.loads(body)
        else:
            ack = await self.fake.send_envelope(form, kind="slash_commands")
        assert ack["response_type"] == "ephemeral"
        return str(ack["text"])

    async def answered(self, channel: str, thread_ts: str, count: int = 1) -> list[FakeMessage]:
        """Wait until the thread holds ``count`` finished bot messages and the bot is idle; return them."""

        def done() -> bool:
            messages = self.fake.thread(channel, thread_ts)
            return len(messages) >= count and not any(m.streaming for m in messages)

        await self.fake.wait_for(done)
        await self.runtime.gateway.wait_idle()
        return self.fake.thread(channel, thread_ts)

    async def stop(self) -> None:
        await stop_adapter(self.adapter, self.task, self.runtime, self.stack)


class SlackHarness:
    def __init__(self, tmp_path: Path, fake: FakeSlack, openai: FakeOpenAI) -> None:
        self.tmp_path, self.fake, self.openai = tmp_path, fake, openai
        self.bots: list[SlackBot] = []

    def settings(self, mode: str, **overrides: Any) -> Any:
        values: dict[str, Any] = {
            "slack_bot_token": self.fake.bot_token,
            "slack_api_url": self.fake.api_url,
            "slack_file_origins": [self.fake.origin],
            "slack_stream_interval_secs": 0.02,
            "slack_update_interval_secs": 0.05,
        }
        if mode == "http":
            values |= {"slack_signing_secret": self.fake.signing_secret, "slack_http_port": 0}
            values["slack_http_host"] = "127.0.0.1"
        else:
            values["slack_app_token"] = self.fake.app_token
        values.update(overrides)
        return split_settings(self.tmp_path, self.openai.base_url, SlackSettings, **values)

    async def start(
        self, mode: str = "socket", *, today: Callable[[], date] | None = None, **overrides: Any
    ) -> SlackBot:
        """A running adapter; ``today`` replaces its clock for once-a-day decisions."""
        stack = AsyncExitStack()
        core, slack = self.settings(mode, **overrides)
        runtime = await stack.enter_async_context(open_runtime(core))
        adapter = build(runtime.gateway, slack) if today is None else SlackAdapter(runtime.gateway, slack, today=today)
        task = asyncio.create_task(adapter.run())
        ready = asyncio.create_task(adapter.ready.wait())
        await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            await stack.aclose()
            task.result()
        assert adapter.ready.is_set(), "the Slack adapter did not get ready"
        if mode == "socket":
            await self.fake.wait_connected()
        bot = SlackBot(adapter, runtime, task, stack, self.fake)
        self.bots.append(bot)
        return bot

    async def close(self) -> None:
        for bot in self.bots:
            await bot.stop()


@pytest.fixture
async def slack(tmp_path: Path, fake_slack: FakeSlack, fake_openai: FakeOpenAI) -> AsyncIterator[SlackHarness]:
    harness = SlackHarness(tmp_path, fake_slack, fake_openai)
    yield harness
    await harness.close()


def rendered(text: str) -> str:
    """What a reader sees: blank lines and trailing spaces don't count."""
    return "\n".join(line.rstrip() for line in text.split("\n") if line.strip())


def fences_balanced(text: str) -> bool:
    return sum(1 for line in text.split("\n") if line.strip().startswith("```")) % 2 == 0


def responses(openai: FakeOpenAI) -> list[dict[str, Any]]:
    return [r.json for r in openai.requests if r.path == "/v1/responses"]


def user_text(body: dict[str, Any]) -> str:
    return str(body["input"][0]["content"][0]["text"])


# --- triggers and streaming ---------------------------------------------------------------------------------


async def test_mention_gets_a_streamed_answer_in_its_thread(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    answer = "A thread is a conversation hanging off one message. Replies stay together, out of the channel."
    fake_openai.script(Reply(text=answer, token_interval=0.01, chunk=6))
    bot = await slack.start()
    mention = fake.user_event(f"<@{fake.bot_user_id}> what is a thread?", kind="app_mention")
    await bot.send(mention)
    (message,) = await bot.answered(CHANNEL, mention["ts"])

    assert message.text == answer and message.via == "stream"
    (start,) = fake.calls_to("chat.startStream")
    assert start.args["thread_ts"] == mention["ts"] and start.args["channel"] == CHANNEL
    assert start.args["recipient_user_id"] == ALICE and start.args["recipient_team_id"] == fake.team_id
    assert len(fake.calls_to("chat.appendStream")) >= 2, "the answer streams in several appends"
    assert len(fake.calls_to("chat.stopStream")) == 1 and not fake.calls_to("chat.update")
    status = fake.calls_to("assistant.threads.setStatus")[0].args
    assert status == {"channel_id": CHANNEL, "thread_ts": mention["ts"], "status": "is thinking…"}
    (conv,) = fake_openai.conversations.values()
    assert conv.metadata == {
        "platform": "slack",
        "workspace": fake.team_id,
        "channel": CHANNEL,
        "thread": mention["ts"],
    }
    assert user_text(responses(fake_openai)[0]) == "what is a thread?", "the bot's own mention is not sent"


async def test_follow_up_in_the_bots_thread_needs_no_mention(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    fake_openai.script(Reply(text="Paris."), Reply(text="About two million people."))
    bot = await slack.start()
    mention = fake.user_event(f"<@{fake.bot_user_id}> capital of France?", kind="app_mention")
    await bot.send(mention)
    await bot.answered(CHANNEL, mention["ts"])

    elsewhere = fake.user_event("unrelated chatter", thread_ts=fake.next_ts())
    await bot.send(elsewhere)
    await bot.send(fake.user_event("how many live there?", thread_ts=mention["ts"]))
    texts = [m.text for m in await bot.answered(CHANNEL, mention["ts"], 2)]

    assert texts == ["Paris.", "About two million people."]
    assert len(fake_openai.conversations) == 1, "the follow-up continues the thread's conversation"
    assert [user_text(b) for b in responses(fake_openai)] == ["capital of France?", "how many live there?"]
    assert fake.thread(CHANNEL, elsewhere["thread_ts"]) == [], "a thread the bot is not in is left alone"


async def test_require_mention_setting_ignores_plain_follow_ups(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    fake_openai.script(Reply(text="First."), Reply(text="Second, because you asked me."))
    bot = await slack.start(slack_require_mention=True)
    mention = fake.user_event(f"<@{fake.bot_user_id}> hi", kind="app_mention")
    await bot.send(mention)
    await bot.answered(CHANNEL, mention["ts"])

    await bot.send(fake.user_event("no mention here", thread_ts=mention["ts"]))
    again = fake.user_event(f"<@{fake.bot_user_id}> and now?", thread_ts=mention["ts"])
    await bot.send(again)  # the message event for the post…
    await bot.send({**again, "type": "app_mention"})  # …and its app_mention
    texts = [m.text for m in await bot.answered(CHANNEL, mention["ts"], 2)]

    assert texts == ["First.", "Second, because you asked me."]
    assert [user_text(b) for b in responses(fake_openai)] == ["hi", "and now?"]


async def test_a_refused_mention_gets_one_polite_line_and_never_claims_the_thread(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    fake = slack.fake
    fake_openai.script(Reply(text="Only for Bob."))
    bot = await slack.start(allowed_users=["U0BOB"])
    mention = fake.user_event(f"<@{fake.bot_user_id}> let me in", kind="app_mention")
    await bot.send(mention)
    (refusal,) = await bot.answered(CHANNEL, mention["ts"])
    assert "not on this bot's list" in refusal.text
    assert not await bot.runtime.store.is_owned(ThreadKey("slack", fake.team_id, CHANNEL, mention["ts"]))

    # An allowed user's plain reply in that thread is not for the bot: the refused mention did not claim it.
    await bot.send(fake.user_event("hello?", user="U0BOB", thread_ts=mention["ts"]))
    dm = fake.user_event("sentinel", channel=DM, user="U0BOB")
    await bot.send(dm)
    await bot.answered(DM, dm["ts"])
    assert len(fake.thread(CHANNEL, mention["ts"])) == 1, "no answer to the plain reply"
    assert [user_text(b) for b in responses(fake_openai)] == ["sentinel"], "only the allowed DM reached the model"


async def test_dm_is_answered_in_its_own_thread_and_titled(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    fake_openai.script(Reply(text="Hello Alice."), Reply(text="Still the same thread."))
    bot = await slack.start()
    dm = fake.user_event("hello bot, please summarise our plan", channel=DM)
    await bot.send(dm)
    (first,) = await bot.answered(DM, dm["ts"])
    await bot.send(fake.user_event("and then?", channel=DM, thread_ts=dm["ts"]))
    messages = await bot.answered(DM, dm["ts"], 2)

    assert first.text == "Hello Alice." and [m.text for m in messages][1] == "Still the same thread."
    assert len(fake_openai.conversations) == 1
    (title,) = fake.calls_to("assistant.threads.setTitle")
    assert title.args == {"channel_id": DM, "thread_ts": dm["ts"], "title": "hello bot, please summarise our plan"}


async def test_assistant_thread_started_shows_the_configured_prompts(slack: SlackHarness) -> None:
    fake = slack.fake
    fake.agent_view = False  # an app created before agent messaging keeps its assistant threads
    bot = await slack.start(slack_suggested_prompts=["Summarize this doc", "Draw a lighthouse"])
    thread_ts = fake.next_ts()
    started = {
        "type": "assistant_thread_started",
        "assistant_thread": {"user_id": ALICE, "channel_id": DM, "thread_ts": thread_ts, "context": {}},
        "event_ts": thread_ts,
    }
    await bot.send(started)
    await fake.wait_for(lambda: bool(fake.calls_to("assistant.threads.setSuggestedPrompts")))

    (call,) = fake.prompts_shown
    assert call["channel_id"] == DM and call["thread_ts"] == thread_ts
    assert call["prompts"] == [
        {"title": "Summarize this doc", "message": "Summarize this doc"},
        {"title": "Draw a lighthouse", "message": "Draw a lighthouse"},
    ]


async def test_bot_posts_edits_and_joins_are_dropped(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    fake_openai.script(Reply(text="Only this one."))
    bot = await slack.start()
    mention = fake.user_event(f"<@{fake.bot_user_id}> start", kind="app_mention")
    await bot.send(mention)
    await bot.answered(CHANNEL, mention["ts"])
    root = mention["ts"]
    ignorable = [
        fake.user_event("from another bot", channel=DM, bot_id="B0OTHER", subtype="bot_message"),
        fake.user_event("my own words", channel=DM, user=fake.bot_user_id),
        fake.user_event("edited", thread_ts=root, subtype="message_changed"),
        fake.user_event("gone", thread_ts=root, subtype="message_deleted"),
        fake.user_event("<@U0BOB> joined", thread_ts=root, subtype="channel_join"),
    ]
    for event in ignorable:
        await bot.send(event)
    shared = fake.user_event("real words", thread_ts=root, subtype="thread_broadcast")
    await bot.send(shared)
    await bot.answered(CHANNEL, root, 2)

    assert [user_text(b) for b in responses(fake_openai)] == ["start", "real words"]


# --- exactly one answer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["http", "socket"])
async def test_a_retried_delivery_gets_exactly_one_answer(
    slack: SlackHarness, fake_openai: FakeOpenAI, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="threadline.gateway")
    fake = slack.fake
    fake_openai.script(Reply(text="Once.", ttft=0.05))
    bot = await slack.start(mode)
    mention = fake.user_event(f"<@{fake.bot_user_id}> say it once", kind="app_mention")
    payload = fake.event_callback(mention)
    await bot.deliver(payload)
    await bot.deliver(payload, retry=1)  # Slack resends the same event (X-Slack-Retry-Num / retry_attempt)
    await fake.wait_for(lambda: "dropped duplicate delivery" in caplog.text)
    messages = await bot.answered(CHANNEL, mention["ts"])

    assert [m.text for m in messages] == ["Once."]
    assert len(responses(fake_openai)) == 1


async def test_app_mention_and_message_for_one_post_get_one_answer(
    slack: SlackHarness, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="threadline.gateway")
    fake = slack.fake
    fake_openai.script(Reply(text="Hi."), Reply(text="Answered once."))
    bot = await slack.start()
    mention = fake.user_event(f"<@{fake.bot_user_id}> hi", kind="app_mention")
    await bot.send(mention)
    await bot.answered(CHANNEL, mention["ts"])

    post = fake.user_event(f"<@{fake.bot_user_id}> again?", thread_ts=mention["ts"])
    await bot.send(post)  # message.channels, in a thread the bot answers
    await bot.send({**post, "type": "app_mention"})  # app_mention for the same post, another event id
    await fake.wait_for(lambda: "dropped duplicate delivery" in caplog.text)
    messages = await bot.answered(CHANNEL, mention["ts"], 2)

    assert [m.text for m in messages] == ["Hi.", "Answered once."]
    assert len(responses(fake_openai)) == 2


async def test_slack_429_is_retried_by_slack_sdk(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    answer = "Rate limits are a fact of life; the SDK waits and tries again."
    fake_openai.script(Reply(text=answer, token_interval=0.01, chunk=8))
    fake.fail("chat.appendStream", "ratelimited", status=429)
    bot = await slack.start()
    mention = fake.user_event(f"<@{fake.bot_user_id}> go", kind="app_mention")
    await bot.send(mention)
    (message,) = await bot.answered(CHANNEL, mention["ts"])

    assert message.text == answer and message.via == "stream"
    assert not fake.calls_to("chat.update"), "the 429 was retried, not turned into a fallback"


# --- streaming fallback and long answers ------------------------------------------------------------------------


async def test_stream_dying_mid_answer_completes_through_chat_update(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    fake = slack.fake
    answer = " ".join(f"word{i}" for i in range(120))
    fake_openai.script(Reply(text=answer, token_interval=0.005, chunk=10))
    fake.stream_dies_after = 2
    bot = await slack.start(slack_update_interval_secs=0.1)
    mention = fake.user_event(f"<@{fake.bot_user_id}> count", kind="app_mention")
    await bot.send(mention)
    (message,) = await bot.answered(CHANNEL, mention["ts"])

    assert message.text == answer, "nothing streamed is lost or repeated"
    assert message.appends == 2 and message.via == "stream"
    updates = fake.calls_to("chat.update")
    assert updates and {u.args["ts"] for u in updates} == {message.ts}, "the same message is edited"
    appends_after = [c for c in fake.calls_to("chat.appendStream") if c.at > updates[0].at]
    assert appends_after == [] and not fake.calls_to("chat.postMessage")
    gaps = [b - a for a, b in zip(message.edits, message.edits[1:], strict=False)]
    assert all(gap >= 0.1 - 0.02 for gap in gaps), f"edits are coalesced at least the interval apart: {gaps}"


async def test_stream_that_cannot_start_posts_once_then_updates(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    answer = "Streaming is off in this workspace, but the answer still arrives piece by piece."
    fake_openai.script(Reply(text=answer, token_interval=0.01, chunk=5))
    fake.fail("chat.startStream", "not_allowed_token_type")
    bot = await slack.start()
    mention = fake.user_event(f"<@{fake.bot_user_id}> hello", kind="app_mention")
    await bot.send(mention)
    (message,) = await bot.answered(CHANNEL, mention["ts"])

    assert message.text == answer and message.via == "post"
    assert len(fake.calls_to("chat.postMessage")) == 1 and len(fake.calls_to("chat.update")) >= 1
    assert not fake.calls_to("chat.appendStream")


async def test_long_answer_is_split_at_paragraphs_without_breaking_fences(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    fake = slack.fake
    code = "\n".join(f"    total += values[{i}]  # step {i}" for i in range(30))
    answer = (
        "\n\n".join(f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 5 for i in range(6))
        + f"\n\n```python\ndef total(values):\n    total = 0\n{code}\n    return total\n```\n\nThat is all."
    )
    fake_openai.script(Reply(text=answer, token_interval=0.002, chunk=40))
    bot = await slack.start(slack_message_limit=500)
    mention = fake.user_event(f"<@{fake.bot_user_id}> write a lot", kind="app_mention")
    await bot.send(mention)
    expected = split_message(answer, 500)
    messages = await bot.answered(CHANNEL, mention["ts"], len(expected))

    assert len(expected) >= 4
    assert [rendered(m.text) for m in messages] == [rendered(c) for c in expected]
    assert all(len(m.text) <= 500 for m in messages)
    assert all(fences_balanced(m.text) for m in messages), "every message is valid Markdown on its own"
    assert messages[0].via == "stream" and messages[0].appends >= 1, "the first part streamed natively"


# --- status line --------------------------------------------------------------------------------------------


async def test_status_line_degrades_quietly_where_slack_refuses_it(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    fake = slack.fake
    fake.status_error_in_channels = "not_allowed"
    fake_openai.script(Reply(text="Still answered."), Reply(text="Again."))
    bot = await slack.start()
    first = fake.user_event(f"<@{fake.bot_user_id}> one", kind="app_mention")
    await bot.send(first)
    await bot.answered(CHANNEL, first["ts"])
    second = fake.user_event(f"<@{fake.bot_user_id}> two", kind="app_mention")
    await bot.send(second)
    (message,) = await bot.answered(CHANNEL, second["ts"])

    assert message.text == "Again."
    assert len(fake.calls_to("assistant.threads.setStatus")) == 1, "not retried in a channel that refused it"


# --- files in --------------------------------------------------------------------------------------------------


async def test_image_in_a_dm_is_downloaded_with_the_token_and_seen(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    fake = slack.fake
    picture = media.png(32, 32)
    url = fake.host_file("cat.png", picture, "image/png")
    fake_openai.script(Reply(text="A red square."))
    bot = await slack.start()
    dm = fake.user_event(
        "what is this?", channel=DM, files=[fake.file_object("cat.png", "image/png", url, len(picture))]
    )
    await bot.send(dm)
    (message,) = await bot.answered(DM, dm["ts"])

    assert message.text == "A red square."
    (request,) = fake.file_requests
    assert request.headers["Authorization"] == f"Bearer {fake.bot_token}"
    (body,) = responses(fake_openai)
    parts = body["input"][0]["content"]
    assert parts[0] == {"type": "input_text", "text": "what is this?"} and parts[1]["type"] == "input_image"
    assert any(r.path == "/v1/files" for r in fake_openai.requests), "the image went to OpenAI as a file"


async def test_file_on_a_foreign_host_never_gets_the_token(
    slack: SlackHarness, foreign_host: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    fake = slack.fake
    url = foreign_host.host_file("secret.pdf", media.pdf(), "application/pdf")
    bot = await slack.start()
    file = fake.file_object("secret.pdf", "application/pdf", url, 1234)
    dm = fake.user_event("read this", channel=DM, files=[file])
    await bot.send(dm)
    (message,) = await bot.answered(DM, dm["ts"])

    assert foreign_host.file_requests == [], "the foreign host was never contacted, so it never saw the token"
    assert message.text.startswith("⚠️ I can't read secret.pdf")
    assert f"http://127.0.0.2:{foreign_host.port}" in message.text and "SLACK_FILE_ORIGINS" in message.text
    assert responses(fake_openai) == [], "the model was not called"


async def test_redirect_to_another_host_is_not_followed(
    slack: SlackHarness, foreign_host: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    fake = slack.fake
    elsewhere = foreign_host.host_file("doc.pdf", media.pdf(), "application/pdf")
    url = fake.host_file("doc.pdf", b"", status=302, location=elsewhere)
    bot = await slack.start()
    dm = fake.user_event("", channel=DM, files=[fake.file_object("doc.pdf", "application/pdf", url, 900)])
    await bot.send(dm)
    (message,) = await bot.answered(DM, dm["ts"])

    assert len(fake.file_requests) == 1 and foreign_host.file_requests == []
    assert "redirected" in message.text and "don't follow redirects" in message.text


async def test_html_login_page_means_files_read_is_missing(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    url = fake.host_file("notes.pdf", LOGIN_PAGE, "text/html")
    bot = await slack.start()
    mention = fake.user_event(
        f"<@{fake.bot_user_id}> summarise",
        kind="app_mention",
        files=[fake.file_object("notes.pdf", "application/pdf", url, 2048)],
    )
    await bot.send(mention)
    (message,) = await bot.answered(CHANNEL, mention["ts"])

    assert message.text == "⚠️ " + FILES_READ_MISSING.format(name="notes.pdf")
    assert "`files:read`" in message.text and responses(fake_openai) == []


async def test_size_is_checked_from_metadata_before_downloading(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    url = fake.host_file("huge.pdf", b"tiny", "application/pdf")
    bot = await slack.start(max_attachment_bytes=1024 * 1024)
    dm = fake.user_event("", channel=DM, files=[fake.file_object("huge.pdf", "application/pdf", url, 50 * 1024 * 1024)])
    await bot.send(dm)
    (message,) = await bot.answered(DM, dm["ts"])

    assert fake.file_requests == [], "nothing was downloaded"
    assert message.text == "⚠️ huge.pdf is 50.0 MB; the limit is 1.0 MB."


async def test_slack_connect_file_goes_through_files_info(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    text = b"name,score\nalice,3\n"
    url = fake.host_file("scores.txt", text, "text/plain")
    fake.file_info["F0CONNECT"] = fake.file_object("scores.txt", "text/plain", url, len(text), id="F0CONNECT")
    fake_openai.script(Reply(text="Alice scored 3."))
    bot = await slack.start()
    stub = {"id": "F0CONNECT", "mode": "file_access", "file_access": "check_file_info", "created": 0, "user": ""}
    dm = fake.user_event("who scored?", channel=DM, files=[stub])
    await bot.send(dm)
    (message,) = await bot.answered(DM, dm["ts"])

    assert message.text == "Alice scored 3."
    assert [c.args["file"] for c in fake.calls_to("files.info")] == ["F0CONNECT"]
    assert len(fake.file_requests) == 1
    (stored,) = fake_openai.files.values()  # a .txt is a document: it went to the thread's file search
    assert stored.filename == "scores.txt" and b"alice,3" in stored.data


# --- files out -------------------------------------------------------------------------------------------------


async def test_generated_image_is_uploaded_into_the_thread(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    picture = media.png(48, 48, (0, 128, 255))
    b64 = base64.b64encode(picture).decode()
    fake_openai.script(Reply(text="Here is your lighthouse.", image_b64=b64, token_interval=0.01, chunk=6))
    bot = await slack.start()
    mention = fake.user_event(f"<@{fake.bot_user_id}> draw a lighthouse", kind="app_mention")
    await bot.send(mention)
    messages = await bot.answered(CHANNEL, mention["ts"], 2)

    (upload,) = fake.uploads.values()
    assert upload.data == picture and upload.filename == "image.png"
    assert upload.channel == CHANNEL and upload.thread_ts == mention["ts"]
    assert [m.via for m in messages] == ["stream", "upload", "stream"], "the step, the picture, then the text"
    drawing = [(c["title"], c["status"]) for c in messages[0].chunks]
    assert drawing == [("Drawing", "in_progress"), ("Drawing", "complete")], "drawing shows as a task step"
    assert messages[2].text == "Here is your lighthouse."
    statuses = [c.args["status"] for c in fake.calls_to("assistant.threads.setStatus")]
    assert statuses[:1] == ["is thinking…"] and "is drawing…" not in statuses, "the step, not the status line"


async def test_slash_imagine_draws_in_a_new_thread_and_a_follow_up_edits_it(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    fake = slack.fake
    bot = await slack.start()
    ack = await fake.send_envelope(fake.slash_command("imagine a red bicycle"), kind="slash_commands")
    assert not ack.get("text"), "the command is acknowledged at once; the picture follows in the channel"
    await fake.wait_for(lambda: len(fake.uploads) == 1)
    await bot.runtime.gateway.wait_idle()
    (root,) = [m for m in fake.messages if m.thread_ts is None]
    assert root.text == "<@U0ALICE> asked me to draw: a red bicycle"
    (upload,) = fake.uploads.values()
    assert upload.channel == CHANNEL and upload.thread_ts == root.ts and upload.filename == "image.png"
    generated = [r for r in fake_openai.requests if r.path == "/v1/images/generations"]
    assert len(generated) == 1 and generated[0].json["prompt"] == "a red bicycle"
    assert generated[0].json["model"] == "gpt-image-2.6-sunburst"

    await bot.send(fake.user_event("now make it blue", thread_ts=root.ts))
    await fake.wait_for(lambda: len(fake.uploads) == 2)
    await bot.runtime.gateway.wait_idle()
    edits = [r for r in fake_openai.requests if r.path == "/v1/images/edits"]
    assert len(edits) == 1 and edits[0].form["prompt"] == "now make it blue"
    assert edits[0].form["image"].data == upload.data, "the edit starts from the image drawn in this thread"
    assert not responses(fake_openai), "neither turn needed the text model"


async def test_slash_imagine_is_refused_before_anything_is_posted(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    bot = await slack.start(allowed_users=["U0BOB"])
    ack = await slack.fake.send_envelope(slack.fake.slash_command("imagine a red bicycle"), kind="slash_commands")
    assert "not on this bot's list" in ack["text"] and ack["response_type"] == "ephemeral"
    await bot.runtime.gateway.wait_idle()
    assert slack.fake.messages == [] and not fake_openai.requests


async def test_voice_clip_is_transcribed_and_answered_with_audio(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    clip = media.ogg_opus_voice(1.0)
    url = fake.host_file("Audio clip.ogg", clip, "audio/ogg")
    voice = fake.file_object("Audio clip.ogg", "audio/ogg", url, len(clip), subtype="slack_audio", duration_ms=1000)
    fake_openai.transcript = "what time is it in Tokyo"
    fake_openai.script(Reply(text="It is evening in Tokyo."))
    bot = await slack.start()
    dm = fake.user_event("", channel=DM, files=[voice])
    await bot.send(dm)
    messages = await bot.answered(DM, dm["ts"], 2)

    assert [m.text for m in messages if m.via != "upload"] == ["It is evening in Tokyo."]
    (upload,) = fake.uploads.values()
    assert upload.filename == "reply.m4a" and upload.data, "a spoken reply, in a format Slack plays inline"
    expected = read_seconds("It is evening in Tokyo.", fake_openai.realtime.chars_per_second)
    assert audio_seconds(upload.data) == pytest.approx(expected, abs=0.1), "the whole answer, read aloud"
    assert upload.thread_ts == dm["ts"] and upload.channel == DM
    assert fake_openai.realtime.connections == 1 and not [r for r in fake_openai.requests if "speech" in r.path]
    assert "what time is it in Tokyo" in user_text(responses(fake_openai)[0])


async def test_code_interpreter_file_is_uploaded_as_a_document(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    report = b"month,total\njan,3\nfeb,5\n"
    fake_openai.script(Reply(text="I made the report.", container_file=("cntr_1", "cfile_1", "report.csv", report)))
    bot = await slack.start()
    mention = fake.user_event(f"<@{fake.bot_user_id}> make a csv", kind="app_mention")
    await bot.send(mention)
    messages = await bot.answered(CHANNEL, mention["ts"], 2)

    (upload,) = fake.uploads.values()
    assert upload.filename == "report.csv" and upload.data == report and upload.thread_ts == mention["ts"]
    assert [m.via for m in messages][-1] == "upload" and messages[0].text == "I made the report."


# --- commands --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_slash_command_help_model_usage(slack: SlackHarness, fake_openai: FakeOpenAI, mode: str) -> None:
    fake = slack.fake
    bot = await slack.start(mode)
    assert await bot.command("help") == HELP
    assert await bot.command("model") == "This channel uses `gpt-6.2-sol`."
    assert await bot.command("model gpt-6-luna") == "This channel now uses `gpt-6-luna` for new turns."
    assert await bot.command("reset") == SLASH_RESET_HELP
    assert await bot.command("voice on") == "Spoken replies are on in this channel (threads without their own setting)."

    fake_openai.script(Reply(text="Cheaper now.", usage=(40, 2)))
    mention = fake.user_event(f"<@{fake.bot_user_id}> hi", kind="app_mention")
    await bot.send(mention)
    await bot.answered(CHANNEL, mention["ts"])
    assert responses(fake_openai)[0]["model"] == "gpt-6-luna"
    assert (await bot.command("usage")).splitlines()[:2] == [
        "This month you used 42 tokens (40 in, 2 out) over 1 turns.",
        "Today: 42 tokens over 1 turns.",
    ]


async def test_reset_in_a_thread_starts_a_new_conversation(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    fake_openai.script(Reply(text="Remembered."), Reply(text="Fresh."))
    bot = await slack.start()
    mention = fake.user_event(f"<@{fake.bot_user_id}> remember 42", kind="app_mention")
    await bot.send(mention)
    await bot.answered(CHANNEL, mention["ts"])
    await bot.send(fake.user_event(f"<@{fake.bot_user_id}> reset", kind="app_mention", thread_ts=mention["ts"]))
    await bot.answered(CHANNEL, mention["ts"], 2)
    await bot.send(fake.user_event("what did I say?", thread_ts=mention["ts"]))
    texts = [m.text for m in await bot.answered(CHANNEL, mention["ts"], 3)]

    assert texts == ["Remembered.", "Done: the next message here starts a new conversation.", "Fresh."]
    assert len(fake_openai.conversations) == 2 and len(responses(fake_openai)) == 2


# --- HTTP mode -------------------------------------------------------------------------------------------------


async def test_bad_signature_is_rejected_in_http_mode(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    bot = await slack.start("http")
    mention = fake.user_event(f"<@{fake.bot_user_id}> let me in", kind="app_mention")
    status, _ = await fake.deliver(bot.events_url, fake.event_callback(mention), secret="not-the-signing-secret")
    await bot.runtime.gateway.wait_idle()

    assert status == 401
    assert fake.calls_to("chat.startStream") == [] and fake.calls_to("chat.postMessage") == []
    assert fake_openai.requests == []


async def test_http_mode_answers_slacks_url_verification(slack: SlackHarness) -> None:
    fake = slack.fake
    bot = await slack.start("http")
    challenge = {
        "token": "legacy-verification-token",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification",
    }
    status, body = await fake.deliver(bot.events_url, challenge)

    assert status == 200 and json.loads(body) == {"challenge": challenge["challenge"]}


async def test_a_json_prefix_asks_for_a_json_answer_shown_as_a_code_block(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    fake = slack.fake
    bot = await slack.start()
    mention = fake.user_event(f"<@{fake.bot_user_id}> json: three primary colours", kind="app_mention")
    await bot.send(mention)
    (message,) = await bot.answered(CHANNEL, mention["ts"])
    (body,) = responses(fake_openai)
    assert user_text(body) == "three primary colours" and body["text"] == {"format": {"type": "json_object"}}
    assert message.text.startswith("```json\n") and message.text.endswith("```") and fences_balanced(message.text)
    assert json.loads(message.text.removeprefix("```json").removesuffix("```")) == {
        "answer": "You said: «three primary colours»."
    }
