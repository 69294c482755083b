"""A user can stop a long answer: the model stream is closed, the answer so far stays and ends with "(stopped)",
the usage so far is recorded, and the thread goes on. A stop with nothing running changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.runtime import Runtime, open_runtime
from bot.types import IncomingMessage, ThreadKey
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.helpers import RecordingReply, make_settings

KEY = ThreadKey("test", "W1", "C1", "t1")
LONG = " ".join(f"word{i}" for i in range(400))


@pytest.fixture
async def rt(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[Runtime]:
    async with open_runtime(make_settings(tmp_path, fake_openai.base_url)) as runtime:
        yield runtime


async def wait_for(predicate: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110  # the reply has no event to wait on
            await asyncio.sleep(0.01)


async def test_stopping_a_long_answer_keeps_what_was_said_and_the_thread_goes_on(
    rt: Runtime, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(text=LONG, token_interval=0.02, chunk=8), Reply(text="Next answer."))
    reply = RecordingReply()
    submission = await rt.gateway.submit(IncomingMessage(key=KEY, user_id="U1", text="talk a lot"), reply)
    assert submission.done is not None
    await wait_for(lambda: len(reply.text) > 40)
    assert await rt.gateway.stop(KEY)
    await asyncio.wait_for(submission.done, 2)

    assert reply.finished and reply.failed is None
    assert reply.text.endswith("_(stopped)_") and LONG not in reply.text
    said = reply.text.removesuffix("\n\n_(stopped)_")
    assert said and LONG.startswith(said), "the answer so far stays as it was"
    (stopped,) = [t for t in fake_openai.responses_by_id.values() if not t.finished]
    assert stopped.sent_text.startswith(said), "the model stream was closed"
    (usage,) = await rt.store.usage_rows()
    assert 0 < usage.output_tokens < len(LONG) // 4, "the usage of what was said is recorded"

    after = RecordingReply()
    nxt = await rt.gateway.submit(IncomingMessage(key=KEY, user_id="U1", text="and now?"), after)
    assert nxt.done is not None
    await nxt.done
    assert after.text == "Next answer." and after.failed is None
    assert len(fake_openai.conversations) == 1, "the thread keeps its conversation"


async def test_a_stop_when_nothing_runs_is_quiet(rt: Runtime, fake_openai: FakeOpenAI) -> None:
    assert not await rt.gateway.stop(KEY)
    assert not fake_openai.requests


async def test_a_stop_before_the_turn_started_still_says_stopped(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    settings = make_settings(tmp_path, fake_openai.base_url, max_concurrent_turns=1)
    fake_openai.script(Reply(text="busy", ttft=1.0), Reply(text="never sent"))
    async with open_runtime(settings) as rt:
        other = ThreadKey("test", "W1", "C1", "t2")
        first = await rt.gateway.submit(IncomingMessage(key=other, user_id="U1", text="slow"), RecordingReply())
        waiting = RecordingReply()
        second = await rt.gateway.submit(IncomingMessage(key=KEY, user_id="U1", text="queued"), waiting)
        await asyncio.sleep(0.1)  # the second turn waits for the cap
        assert await rt.gateway.stop(KEY)
        assert second.done is not None and first.done is not None
        await asyncio.wait_for(second.done, 2)
        assert waiting.text == "_(stopped)_" and waiting.finished
        await first.done
    assert len([r for r in fake_openai.requests if r.path == "/v1/responses"]) == 1
