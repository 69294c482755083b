"""``voice on|off`` per thread (and per channel where a platform can only address the channel), over the
``THREADLINE_VOICE_REPLIES`` default; what is read aloud."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.replies import TextReply
from bot.runtime import Runtime, open_runtime
from bot.types import IncomingMessage, PartKind, ThreadKey
from bot.voice_mode import speakable
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.helpers import RecordingReply, make_settings


@pytest.fixture
async def rt(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[Runtime]:
    async with open_runtime(make_settings(tmp_path, fake_openai.base_url)) as runtime:
        yield runtime


def key(thread: str) -> ThreadKey:
    return ThreadKey("slack", "T1", "C1", thread)


async def command(rt: Runtime, line: str, where: ThreadKey) -> str:
    reply = TextReply()
    await rt.gateway.command(line, key=where, user="U1", reply=reply)
    return reply.text


async def spoken(rt: Runtime, fake: FakeOpenAI, where: ThreadKey) -> bool:
    fake.script(Reply(text="An answer."))
    reply = RecordingReply()
    submission = await rt.gateway.submit(IncomingMessage(key=where, user_id="U1", text="hi"), reply)
    assert submission.done is not None
    await submission.done
    assert reply.text.startswith("An answer.")
    return any(getattr(f, "kind", None) is PartKind.AUDIO for f in reply.files)


async def test_voice_on_and_off_are_per_thread(rt: Runtime, fake_openai: FakeOpenAI) -> None:
    assert await command(rt, "voice on", key("1.0")) == "Spoken replies are on in this thread."
    assert await spoken(rt, fake_openai, key("1.0"))
    assert not await spoken(rt, fake_openai, key("2.0")), "another thread keeps the default (auto: text only)"
    assert await command(rt, "voice off", key("1.0")) == "Spoken replies are off in this thread."
    assert not await spoken(rt, fake_openai, key("1.0"))
    assert "off in this thread" in await command(rt, "voice", key("1.0"))
    assert await command(rt, "voice loud", key("1.0")) == "Use `voice on` or `voice off`."


async def test_a_channel_setting_applies_to_threads_without_their_own(rt: Runtime, fake_openai: FakeOpenAI) -> None:
    channel = ThreadKey("slack", "T1", "C1", "")  # a Slack slash command addresses the channel
    reply = await command(rt, "voice on", channel)
    assert reply == "Spoken replies are on in this channel (threads without their own setting)."
    assert await spoken(rt, fake_openai, key("3.0"))
    await command(rt, "voice off", key("4.0"))
    assert not await spoken(rt, fake_openai, key("4.0")), "the thread's own setting wins"
    assert not await spoken(rt, fake_openai, ThreadKey("slack", "T1", "C2", "5.0")), "other channels unaffected"


def test_code_and_markup_are_not_read_aloud() -> None:
    text = "Run **this**:\n```python\nprint('hi')\n```\nSee [the docs](https://example.com) for `more`."
    assert speakable(text) == "Run this:\n (code omitted) \nSee the docs for more."
