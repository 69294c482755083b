"""The conversation pool (bot/conversation_pool.py): a new thread's first message takes a conversation made ahead of
need, through the real engine, the real openai SDK and the fake OpenAI."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest

from bot.conversation_pool import ConversationPool
from bot.runtime import Runtime, build_openai_client, open_runtime
from bot.types import IncomingMessage, ThreadKey
from tests.fakes.openai_server import FakeOpenAI, Recorded, Reply
from tests.helpers import RecordingReply, make_settings

POOL_LOG = "threadline.conversation_pool"


@asynccontextmanager
async def runtime(tmp_path: Path, fake: FakeOpenAI, **overrides: Any) -> AsyncIterator[Runtime]:
    async with open_runtime(make_settings(tmp_path, fake.base_url, **overrides)) as rt:
        yield rt


def key(thread: str) -> ThreadKey:
    return ThreadKey("test", "W1", "C1", thread)


def metadata(thread: str) -> dict[str, str]:
    return {"platform": "test", "workspace": "W1", "channel": "C1", "thread": thread}


async def turn(rt: Runtime, text: str, thread: str) -> RecordingReply:
    reply = RecordingReply()
    submission = await rt.gateway.submit(IncomingMessage(key=key(thread), user_id="U1", text=text), reply)
    assert submission.done is not None
    await submission.done
    return reply


async def conversation_for(rt: Runtime, thread: str) -> str:
    record = await rt.store.thread(key(thread))
    assert record is not None and record.conversation_id
    return record.conversation_id


async def warm(rt: Runtime) -> None:
    """One turn starts the refill (that turn creates its own conversation); then wait until the pool is full."""
    assert (await turn(rt, "warm up", "warm")).finished
    await rt.engine.pool.settled()
    assert rt.engine.pool.ready == rt.settings.conversation_pool


def creates(requests: list[Recorded]) -> list[Recorded]:
    return [r for r in requests if r.method == "POST" and r.path == "/v1/conversations"]


def conversation_of(request: Recorded) -> str:
    assert isinstance(request.json, dict)
    return str(request.json["conversation"])


async def test_warm_pool_new_thread_sends_no_create_before_its_response(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with runtime(tmp_path, fake_openai, conversation_pool=4) as rt:
        await warm(rt)
        pooled = set(fake_openai.conversations) - {await conversation_for(rt, "warm")}
        assert len(pooled) == 4 and all(fake_openai.conversations[c].metadata == {} for c in pooled)
        received = len(fake_openai.requests)
        fake_openai.script(Reply(text="first answer"))
        reply = await turn(rt, "hello", "new")
        assert reply.finished and reply.failed is None and reply.text == "first answer"
        since = fake_openai.requests[received:]
        respond = next(i for i, r in enumerate(since) if r.path == "/v1/responses")
        assert creates(since[:respond]) == [], "no conversations.create between the message and POST /responses"
        conversation = conversation_of(since[respond])
        assert conversation in pooled
        assert await conversation_for(rt, "new") == conversation, "saved to the store"
        await rt.engine.pool.settled()
        assert fake_openai.conversations[conversation].metadata == metadata("new")
        updates = [r for r in since if r.path == f"/v1/conversations/{conversation}" and r.method == "POST"]
        assert [r.json for r in updates] == [{"metadata": metadata("new")}]
        assert rt.engine.pool.ready == 3
        # The next turn (any thread) tops the pool up again, in the background.
        assert (await turn(rt, "and again", "new")).finished
        await rt.engine.pool.settled()
        assert rt.engine.pool.ready == 4 and len(creates(fake_openai.requests[received:])) == 1


async def test_taken_conversation_is_saved_before_the_response_is_asked(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with runtime(tmp_path, fake_openai, conversation_pool=2) as rt:
        await warm(rt)
        fake_openai.script(Reply(status=500))
        failed = await turn(rt, "hello", "new")
        assert failed.failed is not None and "server error" in failed.failed
        (asked,) = [r for r in fake_openai.requests if r.path == "/v1/responses"][1:]
        assert await conversation_for(rt, "new") == conversation_of(asked), "saved before the response was asked"
        second = await turn(rt, "again", "new")
        assert second.finished and second.failed is None
        assert len(fake_openai.responses_for(conversation_of(asked))) == 2, "the retry uses the same conversation"


async def test_new_threads_never_share_a_conversation(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    threads = [f"t{n}" for n in range(6)]
    async with runtime(tmp_path, fake_openai, conversation_pool=2) as rt:
        await warm(rt)
        replies = await asyncio.gather(*(turn(rt, f"message for {t}", t) for t in threads))
        assert all(r.finished and r.failed is None for r in replies)
        used = [await conversation_for(rt, t) for t in threads]
        assert len(set(used)) == len(threads)
        for thread, conversation in zip(threads, used, strict=True):
            bodies = fake_openai.responses_for(conversation)
            assert [b["input"][0]["content"][0]["text"] for b in bodies] == [f"message for {thread}"]
        await rt.engine.pool.settled()
        for thread, conversation in zip(threads, used, strict=True):
            assert fake_openai.conversations[conversation].metadata == metadata(thread)
        warm_conversation = await conversation_for(rt, "warm")
    assert set(fake_openai.conversations) == {*used, warm_conversation}, "unused pooled conversations deleted at close"


async def test_pool_off_creates_each_conversation_with_its_metadata_as_before(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with runtime(tmp_path, fake_openai, conversation_pool=0) as rt:
        assert (await turn(rt, "hello", "a")).finished
        assert (await turn(rt, "more", "a")).finished
        assert (await turn(rt, "hello", "b")).finished
        assert rt.engine.pool.ready == 0
    paths = [(r.method, r.path) for r in fake_openai.requests]
    assert [r.json for r in creates(fake_openai.requests)] == [{"metadata": metadata("a")}, {"metadata": metadata("b")}]
    assert paths.index(("POST", "/v1/conversations")) < paths.index(("POST", "/v1/responses"))
    assert not [p for p in paths if p[1].startswith("/v1/conversations/")], "no update, no delete"
    assert [c.metadata for c in fake_openai.conversations.values()] == [metadata("a"), metadata("b")]


async def test_failing_creates_fall_back_to_a_direct_create_once_openai_recovers(
    tmp_path: Path, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    async with runtime(tmp_path, fake_openai, conversation_pool=2) as rt:
        fake_openai.conversation_create_status = 500
        with caplog.at_level(logging.DEBUG, logger=POOL_LOG):
            first = await turn(rt, "hello", "a")
            second = await turn(rt, "hello", "b")
            await rt.engine.pool.settled()
        for failed in (first, second):
            assert failed.failed is not None and "server error" in failed.failed and len(failed.failed) < 300
        assert rt.engine.pool.ready == 0
        warnings = [r for r in caplog.records if r.name == POOL_LOG and r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and "InternalServerError" in warnings[0].getMessage()
        assert not [r for r in fake_openai.requests if r.path == "/v1/responses"], "no turn reached the model"

        fake_openai.conversation_create_status = None
        received = len(fake_openai.requests)
        fake_openai.script(Reply(text="back again"))
        reply = await turn(rt, "hello", "c")
        assert reply.finished and reply.failed is None and reply.text == "back again"
        since = fake_openai.requests[received:]
        respond = next(i for i, r in enumerate(since) if r.path == "/v1/responses")
        # The pool may have begun to refill by now (its pause is over); the turn did not wait for it.
        direct = [r for r in creates(since[:respond]) if r.json == {"metadata": metadata("c")}]
        assert len(direct) == 1, "a direct create, with the thread's metadata"
        conversation = conversation_of(since[respond])
        assert await conversation_for(rt, "c") == conversation
        assert fake_openai.conversations[conversation].metadata == metadata("c")
        assert (await turn(rt, "still there?", "c")).finished


async def test_refill_failures_log_once_per_burst_and_a_failed_label_is_not_fatal(
    tmp_path: Path, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    client = build_openai_client(make_settings(tmp_path, fake_openai.base_url))
    pool = ConversationPool(client, size=2, first_retry_secs=0.01, max_retry_secs=0.02)
    caplog.set_level(logging.DEBUG, logger=POOL_LOG)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == POOL_LOG and r.levelno >= logging.WARNING]

    async def attempt() -> None:
        await asyncio.sleep(0.05)  # past the pause after a failure
        pool.warm()
        await pool.settled()

    try:
        fake_openai.conversation_create_status = 503
        for _ in range(3):
            await attempt()
        assert len(creates(fake_openai.requests)) == 3 and pool.ready == 0, "three refills, each stopped at a failure"
        assert len(warnings()) == 1, "one burst of failures, one warning"

        fake_openai.conversation_create_status = None
        await attempt()
        assert pool.ready == 2 and any("again" in r.getMessage() for r in caplog.records if r.name == POOL_LOG)

        fake_openai.conversation_create_status = 503
        taken = pool.take(metadata("x"))
        assert taken is not None and pool.ready == 1
        await attempt()
        assert len(warnings()) == 2, "a new burst after a success is logged again"
        assert fake_openai.conversations[taken].metadata == metadata("x")

        gone = pool.take(metadata("y"))
        assert gone is not None and pool.ready == 0 and pool.take(metadata("z")) is None
        fake_openai.forget_conversation(gone)
        before = len(warnings())
        await pool.settled()
        assert len(warnings()) == before + 1 and gone in warnings()[-1], "the label failed: logged, not raised"
    finally:
        fake_openai.conversation_create_status = None
        await pool.close()
        await client.close()
    assert pool.take(metadata("after")) is None, "a closed pool hands nothing out"


async def test_close_deletes_unused_conversations_and_stops_refilling(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    client = build_openai_client(make_settings(tmp_path, fake_openai.base_url))
    pool = ConversationPool(client, size=3)
    try:
        pool.warm()
        await pool.settled()
        assert pool.ready == 3 and len(fake_openai.conversations) == 3
        kept = pool.take(metadata("kept"))
        await pool.close()
        assert list(fake_openai.conversations) == [kept] and fake_openai.conversations[kept].metadata == metadata(
            "kept"
        )
        pool.warm()
        await pool.settled()
        assert len(creates(fake_openai.requests)) == 3, "no refill after close"
    finally:
        await client.close()


async def test_fake_update_conversation_checks_the_body_against_the_spec(fake_openai: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="sk-test", max_retries=0)
    try:
        conv = await client.conversations.create()
        updated = await client.conversations.update(conv.id, metadata={"thread": "t9"})
        assert updated.metadata == {"thread": "t9"} == fake_openai.conversations[conv.id].metadata
        with pytest.raises(openai.BadRequestError):
            await client.conversations.update(conv.id, metadata={"thread": 9})  # type: ignore[dict-item]
        assert fake_openai.violations and "UpdateConversationBody" in fake_openai.violations[0]
        fake_openai.violations.clear()
        assert fake_openai.conversations[conv.id].metadata == {"thread": "t9"}, "a rejected update changes nothing"
        with pytest.raises(openai.NotFoundError):
            await client.conversations.update("conv_missing", metadata={"thread": "t9"})
    finally:
        await client.close()
