"""The turn's two OpenAI calls made directly on aiohttp (bot.openai_direct) retry, fail and count exactly as the
SDK makes them (``THREADLINE_OPENAI_HTTP_CLIENT=httpx`` keeps them on the SDK, so each case runs on both)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.openai_direct import DirectStream
from bot.runtime import Runtime, open_runtime
from bot.sse import sse_events
from bot.types import IncomingMessage, ThreadKey
from tests.fakes.openai_server import FakeOpenAI, Recorded, Reply
from tests.helpers import TEST_OPENAI_KEY, RecordingReply, make_settings
from tests.pg_server import free_port

TRANSPORTS = ["aiohttp", "httpx"]
SERVER_ERROR = "OpenAI had a server error. Please try again."
CONNECTION = "I couldn't reach OpenAI (connection error). Please try again shortly."


async def _turn(runtime: Runtime, thread: str = "t") -> RecordingReply:
    message = IncomingMessage(key=ThreadKey("console", "local", "console", thread), user_id="me", text="hello")
    reply = RecordingReply()
    submission = await runtime.gateway.submit(message, reply)
    assert submission.done is not None
    await submission.done
    return reply


def _posts(fake: FakeOpenAI, path: str) -> list[Recorded]:
    return [r for r in fake.requests if r.method == "POST" and r.path == path]


def _header(recorded: Recorded, name: str) -> str | None:
    return next((v for k, v in recorded.headers.items() if k.lower() == name.lower()), None)


def _errors(runtime: Runtime, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(generate_latest(runtime.metrics.registry).decode()):
        for sample in family.samples:
            if sample.name == "threadline_openai_errors_total" and labels.items() <= sample.labels.items():
                total += sample.value
    return total


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_rate_limit_is_retried_then_answered(tmp_path: Path, fake_openai: FakeOpenAI, transport: str) -> None:
    """A 429 is retried (the SDK's retry count header says which attempt), counted once, then answered."""
    fake_openai.script(Reply(status=429, error_code="rate_limit_exceeded"), Reply(text="fine"))
    settings = make_settings(tmp_path, fake_openai.base_url, openai_max_retries=1, openai_http_client=transport)
    async with open_runtime(settings) as runtime:
        reply = await _turn(runtime)
        assert reply.failed is None and reply.text == "fine"
        posts = _posts(fake_openai, "/v1/responses")
        assert [_header(p, "x-stainless-retry-count") for p in posts] == ["0", "1"]
        assert {_header(p, "authorization") for p in posts} == {f"Bearer {TEST_OPENAI_KEY}"}
        assert _errors(runtime, code="rate_limit_exceeded", status="429") == 1
        assert _errors(runtime) == 1
        assert runtime.metrics.since_openai_success() is not None


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    ("status", "line"),
    [
        (500, SERVER_ERROR),
        (429, "The model is rate limited right now (after retries). Please try again in a minute."),
        (401, "The bot's OpenAI API key was rejected. An admin needs to check OPENAI_API_KEY."),
        (400, "OpenAI rejected the request: Error code: 400 - Invalid request (scripted by the test)."),
    ],
)
async def test_error_statuses_read_as_the_sdks_errors(
    tmp_path: Path, fake_openai: FakeOpenAI, transport: str, status: int, line: str
) -> None:
    fake_openai.script(Reply(status=status))
    async with open_runtime(make_settings(tmp_path, fake_openai.base_url, openai_http_client=transport)) as runtime:
        reply = await _turn(runtime)
        assert reply.failed == line
        assert _errors(runtime, status=str(status)) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_refused_connection_is_retried_then_reads_as_a_connection_error(tmp_path: Path, transport: str) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    settings = make_settings(tmp_path, nowhere, openai_max_retries=1, openai_http_client=transport)
    async with open_runtime(settings) as runtime:
        reply = await _turn(runtime)
        assert reply.failed == CONNECTION
        assert _errors(runtime, code="connection_error", status="none") == 2, "each attempt is counted"
        assert runtime.metrics.since_openai_success() is None


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_retry_after_is_read_as_the_sdk_reads_it(tmp_path: Path, fake_openai: FakeOpenAI, transport: str) -> None:
    """A short ``retry-after`` is waited out and retried; one over the SDK's two-minute cap is not retried."""
    fake_openai.script(Reply(status=503, retry_after="0.01"), Reply(text="after a pause"))
    fake_openai.script(Reply(status=503, retry_after="600"))
    settings = make_settings(tmp_path, fake_openai.base_url, openai_max_retries=2, openai_http_client=transport)
    async with open_runtime(settings) as runtime:
        first = await _turn(runtime, "a")
        assert first.failed is None and first.text == "after a pause"
        assert len(_posts(fake_openai, "/v1/responses")) == 2
        second = await _turn(runtime, "a")
        assert second.failed == SERVER_ERROR
        assert len(_posts(fake_openai, "/v1/responses")) == 3, "a wait over two minutes is not retried"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_stream_that_began_is_not_retried(tmp_path: Path, fake_openai: FakeOpenAI, transport: str) -> None:
    fake_openai.script(Reply(text="a long answer that breaks", cut_after=6))
    settings = make_settings(tmp_path, fake_openai.base_url, openai_max_retries=2, openai_http_client=transport)
    async with open_runtime(settings) as runtime:
        reply = await _turn(runtime)
        assert reply.failed == "The connection to OpenAI dropped mid-answer. Please ask again."
        assert len(_posts(fake_openai, "/v1/responses")) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_new_threads_conversation_retries_and_fails_like_the_sdk(
    tmp_path: Path, fake_openai: FakeOpenAI, transport: str
) -> None:
    fake_openai.conversation_create_status = 500
    settings = make_settings(tmp_path, fake_openai.base_url, openai_max_retries=1, openai_http_client=transport)
    async with open_runtime(settings) as runtime:
        failed = await _turn(runtime, "a")
        assert failed.failed == SERVER_ERROR
        assert len(_posts(fake_openai, "/v1/conversations")) == 2
        assert not _posts(fake_openai, "/v1/responses")
        fake_openai.conversation_create_status = None
        answered = await _turn(runtime, "b")
        assert answered.failed is None and "hello" in answered.text
        [conversation] = fake_openai.conversations.values()
        assert conversation.metadata["thread"] == "b"
        assert len(fake_openai.responses_for(conversation.id)) == 1, "the thread's response uses it"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_slow_conversation_create_reads_as_a_timeout(
    tmp_path: Path, fake_openai: FakeOpenAI, transport: str
) -> None:
    fake_openai.conversation_latency = 5.0
    settings = make_settings(tmp_path, fake_openai.base_url, openai_timeout_secs=0.2, openai_http_client=transport)
    async with open_runtime(settings) as runtime:
        reply = await _turn(runtime)
        assert reply.failed == "The model took too long to answer. Please try again."
        assert _errors(runtime, code="timeout", status="none") == 1


@pytest.fixture
async def chunked_sse() -> AsyncIterator[str]:
    """A server whose event stream ends lines with ``\\r\\n``, ``\\r`` and ``\\n``, split across chunks."""
    chunks = [b'data: {"n": 1}\r', b'\n\r\ndata: {"n":', b' 2}\n\ndata: {"n": 3, "s": "\xc3', b'\xa9"}\r\r']
    chunks += [b'data: {"n": 4}']  # the last event, with no blank line after it

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/events"
    finally:
        await runner.cleanup()


async def test_direct_stream_lines_end_at_any_newline_across_chunks(chunked_sse: str) -> None:
    async with aiohttp.ClientSession() as session:
        stream = DirectStream(await session.get(chunked_sse))
        try:
            events: list[dict[str, Any]] = [event async for event in sse_events(stream.aiter_lines())]
        finally:
            await stream.aclose()
    assert events == [{"n": 1}, {"n": 2}, {"n": 3, "s": "é"}, {"n": 4}]
