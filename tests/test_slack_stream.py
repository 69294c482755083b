"""The Slack reply renderer on its own, as the engine drives it, through the real slack-sdk against the fake
Slack: coalescing, files between texts, failures, fallbacks and splitting under stress."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.adapter import retry_handlers
from adapters.slack.budget import SlackBudget
from adapters.slack.files import SlackFiles
from adapters.slack.stream import EMPTY_ANSWER, ReplyTarget, SlackReply, StreamOptions
from bot.text_split import split_message
from bot.types import OutgoingFile, PartKind
from tests.fakes import media
from tests.fakes.slack_server import FakeSlack

CHANNEL, THREAD = "C0GENERAL", "1700000000.000100"


@pytest.fixture
async def client(fake_slack: FakeSlack) -> AsyncIterator[AsyncWebClient]:
    async with aiohttp.ClientSession() as http:
        yield AsyncWebClient(
            token=fake_slack.bot_token, base_url=fake_slack.api_url, session=http, retry_handlers=retry_handlers()
        )


def reply_for(client: AsyncWebClient, fake: FakeSlack, **options: float | int | bool) -> SlackReply:
    files = SlackFiles(client=client, http=client.session, token=fake.bot_token, origins=[], max_bytes=1 << 20)  # type: ignore[arg-type]

    async def upload(part: OutgoingFile) -> bool:
        return await files.upload(channel=CHANNEL, thread_ts=THREAD, part=part)

    opts = StreamOptions(**{"stream_interval": 0.03, "update_interval": 0.05, **options})  # type: ignore[arg-type]
    return SlackReply(
        client=client,
        target=ReplyTarget(CHANNEL, THREAD, "U0ALICE", "T0TEAM"),
        options=opts,
        upload=upload,
        budget=SlackBudget().workspace("T0TEAM"),
    )


def rendered(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.split("\n") if line.strip())


async def feed(reply: SlackReply, text: str, size: int, pause: float = 0.001) -> None:
    await reply.start()
    for i in range(0, len(text), size):
        await reply.append(text[i : i + size])
        await asyncio.sleep(pause)


async def test_many_small_deltas_are_coalesced(client: AsyncWebClient, fake_slack: FakeSlack) -> None:
    reply = reply_for(client, fake_slack, stream_interval=0.05)
    text = "".join(f"token{i} " for i in range(300))
    loop = asyncio.get_running_loop()
    began = loop.time()
    await feed(reply, text, 7)
    elapsed = loop.time() - began
    await reply.finish()

    assert fake_slack.texts(CHANNEL, THREAD) == [text]
    calls = len(fake_slack.calls_to("chat.appendStream")) + len(fake_slack.calls_to("chat.startStream"))
    assert calls <= elapsed / 0.05 + 2, f"{calls} stream calls in {elapsed:.2f} s for {len(text) // 7} deltas"


async def test_a_file_between_texts_keeps_the_order(client: AsyncWebClient, fake_slack: FakeSlack) -> None:
    reply = reply_for(client, fake_slack)
    picture = media.png()
    await feed(reply, "Here is the chart you asked for.", 5)
    await reply.attach(OutgoingFile(PartKind.IMAGE, "chart.png", "image/png", picture, title="Chart"))
    await feed(reply, "It shows growth.", 5)
    await fake_slack.wait_for(lambda: "It shows growth." in fake_slack.texts(CHANNEL, THREAD))
    await reply.set_status("recording a voice reply…")
    await reply.finish()

    thread = fake_slack.thread(CHANNEL, THREAD)
    assert [m.text for m in thread] == ["Here is the chart you asked for.", "", "It shows growth."]
    assert [m.via for m in thread] == ["stream", "upload", "stream"], "text before the file, the file, the rest"
    (upload,) = fake_slack.uploads.values()
    assert upload.data == picture and upload.title == "Chart" and upload.thread_ts == THREAD
    statuses = [c.args["status"] for c in fake_slack.calls_to("assistant.threads.setStatus")]
    assert statuses == ["is recording a voice reply…", ""], "a status set after the last post is cleared at the end"


async def test_refused_upload_is_mentioned_in_the_answer(client: AsyncWebClient, fake_slack: FakeSlack) -> None:
    fake_slack.fail("files.completeUploadExternal", "not_in_channel")
    reply = reply_for(client, fake_slack)
    await reply.attach(OutgoingFile(PartKind.FILE, "data.csv", "text/csv", b"a,b\n1,2\n"))
    await reply.finish()
    assert fake_slack.texts(CHANNEL, THREAD) == ["_(I made data.csv but Slack would not take the upload.)_"]


async def test_failure_keeps_what_was_said_and_explains(client: AsyncWebClient, fake_slack: FakeSlack) -> None:
    reply = reply_for(client, fake_slack)
    await feed(reply, "The first half of an answer", 4)
    await reply.fail("The connection to OpenAI dropped mid-answer. Please ask again.")
    assert fake_slack.texts(CHANNEL, THREAD) == [
        "The first half of an answer",
        "⚠️ The connection to OpenAI dropped mid-answer. Please ask again.",
    ]
    assert not any(m.streaming for m in fake_slack.thread(CHANNEL, THREAD)), "no stream is left open"


async def test_failure_before_any_text_and_an_empty_answer(client: AsyncWebClient, fake_slack: FakeSlack) -> None:
    await reply_for(client, fake_slack).fail("Sorry, you are not on this bot's list of allowed users or roles.")
    empty = reply_for(client, fake_slack)
    await empty.start()
    await empty.finish()
    assert fake_slack.texts(CHANNEL, THREAD) == [
        "⚠️ Sorry, you are not on this bot's list of allowed users or roles.",
        EMPTY_ANSWER,
    ]


async def test_split_with_fences_survives_a_dying_stream(client: AsyncWebClient, fake_slack: FakeSlack) -> None:
    fake_slack.stream_dies_after = 3
    code = "\n".join(f"print({i})  # a line of code that takes room" for i in range(40))
    text = "Intro paragraph.\n\n```python\n" + code + "\n```\n\n" + "Closing words. " * 30
    reply = reply_for(client, fake_slack, limit=400, update_interval=0.02)
    await feed(reply, text, 25)
    await reply.finish()

    messages = fake_slack.thread(CHANNEL, THREAD)
    expected = split_message(text, 400)
    assert [rendered(m.text) for m in messages] == [rendered(c) for c in expected]
    assert all(len(m.text) <= 400 for m in messages)
    assert all(sum(line.startswith("```") for line in m.text.split("\n")) % 2 == 0 for m in messages)
    assert not any(m.streaming for m in messages)


async def test_native_streaming_off_posts_then_edits(client: AsyncWebClient, fake_slack: FakeSlack) -> None:
    reply = reply_for(client, fake_slack, native=False, update_interval=0.03)
    text = "Edited in place, coalesced. " * 8
    await feed(reply, text, 9, pause=0.004)
    await reply.finish()

    (message,) = fake_slack.thread(CHANNEL, THREAD)
    assert message.text == text and message.via == "post" and message.edits
    assert not fake_slack.calls_to("chat.startStream")
    gaps = [b - a for a, b in zip(message.edits, message.edits[1:], strict=False)]
    assert all(gap >= 0.03 - 0.01 for gap in gaps), gaps
