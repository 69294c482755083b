"""Health and metrics end to end: ``/metrics`` (parsed with Prometheus' own parser) and ``/healthz`` of a real
``threadline run`` console process, of a runtime whose PostgreSQL server goes away and comes back, and of Slack's
HTTP mode sharing its port with them."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapters.console import ConsoleAdapter
from bot.runtime import open_runtime
from bot.types import IncomingMessage, ThreadKey
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.helpers import RecordingReply, make_settings, spawn_threadline, user_env
from tests.pg_server import EmbeddedPostgres, free_port, fresh_database
from tests.test_slack_e2e import CHANNEL, SlackHarness, slack

__all__ = ["slack"]  # the fixture, used by the Slack test below

T = TypeVar("T")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
WAIT_SECS = 60.0  # a generous bound for things that happen eventually; no test asserts on how soon


async def metrics(http: aiohttp.ClientSession, port: int) -> Samples:
    """Every sample of ``/metrics``, by name and labels, through the Prometheus text parser."""
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return parse(await response.text())


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples named ``name`` whose labels include ``labels`` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def has(samples: Samples, name: str, **labels: str) -> bool:
    wanted = set(labels.items())
    return any(n == name and wanted <= have for (n, have) in samples)


async def healthz(http: aiohttp.ClientSession, port: int) -> tuple[int, dict[str, Any]]:
    async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
        return response.status, await response.json()


async def eventually(probe: Callable[[], Awaitable[T]], ok: Callable[[T], bool], what: str) -> T:
    """Call ``probe`` until ``ok`` holds for its result (connection errors count as not yet)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECS
    last: Any = None
    while True:
        try:
            last = await probe()
            if ok(last):
                return last
        except aiohttp.ClientConnectionError as exc:
            last = exc
        if loop.time() > deadline:
            raise AssertionError(f"{what}: never happened; last: {last!r}")
        await asyncio.sleep(0.05)


async def answer_line(stdout: asyncio.StreamReader) -> str:
    """The console's next answer (or error) line."""
    while True:
        line = (await asyncio.wait_for(stdout.readline(), WAIT_SECS)).decode()
        assert line, "the console exited"
        if line.startswith("threadline> "):
            return line


async def test_a_console_process_counts_turns_tokens_errors_and_first_text(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    port = free_port()
    env = user_env(
        tmp_path,
        fake_openai.base_url,
        THREADLINE_DATABASE=str(tmp_path / "db" / "threadline.db"),
        THREADLINE_HTTP_PORT=str(port),
        THREADLINE_HTTP_HOST="127.0.0.1",
    )
    fake_openai.script(Reply(text="one", usage=(11, 7)), Reply(text="two", usage=(13, 5)), Reply(status=500))
    proc = await spawn_threadline(tmp_path, env, "run")
    assert proc.stdin is not None and proc.stdout is not None
    try:
        async with aiohttp.ClientSession() as http:
            status, body = await eventually(lambda: healthz(http, port), lambda r: r[0] == 200, "ready")
            assert body["ready"] is True and body["adapters"] == {"console": True}
            assert body["database"] == {"ok": True}
            before = await metrics(http, port)
            answered = {"platform": "console", "outcome": "answered"}
            assert value(before, "threadline_turns_total", **answered) == 0

            proc.stdin.write(b"first question\n")
            assert "one" in await answer_line(proc.stdout)
            one = await eventually(
                lambda: metrics(http, port), lambda s: value(s, "threadline_turns_total", **answered) == 1, "turn 1"
            )
            assert value(one, "threadline_tokens_total", platform="console", kind="input") == 11
            assert value(one, "threadline_tokens_total", platform="console", kind="output") == 7
            assert has(one, "threadline_tokens_total", platform="console", kind="cached")
            assert value(one, "threadline_time_to_first_text_seconds_count", platform="console") == 1
            assert value(one, "threadline_turn_duration_seconds_count", platform="console") == 1

            proc.stdin.write(b"second question\n")
            assert "two" in await answer_line(proc.stdout)
            two = await eventually(
                lambda: metrics(http, port), lambda s: value(s, "threadline_turns_total", **answered) == 2, "turn 2"
            )
            assert value(two, "threadline_tokens_total", platform="console", kind="input") == 11 + 13
            assert value(two, "threadline_tokens_total", platform="console", kind="output") == 7 + 5
            assert value(two, "threadline_time_to_first_text_seconds_count", platform="console") == 2
            assert value(two, "threadline_openai_errors_total") == 0

            proc.stdin.write(b"third question\n")
            assert "⚠" in await answer_line(proc.stdout), "OpenAI's 500 reaches the user as a short line"
            failed = {"platform": "console", "outcome": "failed"}
            three = await eventually(
                lambda: metrics(http, port), lambda s: value(s, "threadline_turns_total", **failed) == 1, "turn 3"
            )
            assert value(three, "threadline_openai_errors_total", status="500") == 1, "one attempt (no retries)"
            assert value(three, "threadline_openai_errors_total", status="500", code="server_error") == 1
            assert value(three, "threadline_turns_total", **answered) == 2
            assert value(three, "threadline_time_to_first_text_seconds_count", platform="console") == 2, "no text"
            assert value(three, "threadline_turn_duration_seconds_count", platform="console") == 3
            assert value(three, "threadline_turns_queued") == 0 and value(three, "threadline_turns_running") == 0
            assert value(three, "threadline_adapter_connected", platform="console") == 1
            assert value(three, "threadline_openai_last_success_timestamp_seconds") > 0

            status, body = await healthz(http, port)
            assert status == 200, "an OpenAI error does not make the process unready"
            assert isinstance(body["openai"]["last_success_secs_ago"], float | int)
        proc.stdin.close()
        assert await asyncio.wait_for(proc.wait(), WAIT_SECS) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_busy_port_is_a_clear_startup_error(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    settings = make_settings(tmp_path, fake_openai.base_url, http_port=0, http_host="127.0.0.1")
    async with open_runtime(settings) as rt, rt.health.serving() as taken:
        assert taken is not None
        env = user_env(
            tmp_path,
            fake_openai.base_url,
            THREADLINE_DATABASE=str(tmp_path / "other.db"),
            THREADLINE_HTTP_PORT=str(taken),
            THREADLINE_HTTP_HOST="127.0.0.1",
        )
        proc = await spawn_threadline(tmp_path, env, "run")
        _, err = await asyncio.wait_for(proc.communicate(b"hello\n"), WAIT_SECS)
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{taken} for health and metrics" in err.decode()


async def test_healthz_follows_the_adapter_and_the_database(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    """503 until the console is connected, 200 while it and PostgreSQL are up, 503 while the server is stopped,
    200 once it is back, and 503 when the console has stopped."""
    server = EmbeddedPostgres()
    read_fd, write_fd = os.pipe()
    stdin = os.fdopen(read_fd, "r")
    try:
        await asyncio.to_thread(server.start)
        async with fresh_database(server.url) as url:
            settings = make_settings(
                tmp_path, fake_openai.base_url, database=url, http_port=0, http_host="127.0.0.1", lease_secs=1
            )
            async with open_runtime(settings) as runtime, aiohttp.ClientSession() as http:
                runtime.health.expect(["console"])
                async with runtime.health.serving() as port:
                    assert port is not None

                    status, body = await healthz(http, port)
                    assert (status, body["ready"], body["adapters"]) == (503, False, {"console": False})
                    assert body["database"] == {"ok": True}, "only the adapter is missing"

                    console = ConsoleAdapter(runtime.gateway, stdin=stdin, out=io.StringIO(), err=io.StringIO())
                    task = asyncio.create_task(console.run())
                    status, body = await eventually(lambda: healthz(http, port), lambda r: r[0] == 200, "connected")
                    assert body["adapters"] == {"console": True}

                    await asyncio.to_thread(server.stop)
                    status, body = await eventually(lambda: healthz(http, port), lambda r: r[0] == 503, "db down")
                    assert body["database"]["ok"] is False and body["adapters"] == {"console": True}
                    assert server.password not in str(body), "no credentials in the report"

                    await asyncio.to_thread(server.start)
                    await eventually(lambda: healthz(http, port), lambda r: r[0] == 200, "db back")

                    os.close(write_fd)
                    write_fd = -1
                    await asyncio.wait_for(task, WAIT_SECS)
                    status, body = await healthz(http, port)
                    assert (status, body["adapters"]) == (503, {"console": False})
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        stdin.close()
        await asyncio.to_thread(server.cleanup)


async def test_slack_http_mode_shares_its_port_with_health_and_metrics(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    port = free_port()
    fake = slack.fake
    fake_openai.script(Reply(text="Shared.", usage=(5, 3)))
    bot = await slack.start(
        "http", slack_http_port=port, http_port=port, http_host="127.0.0.1", allowed_channels=[CHANNEL]
    )
    assert bot.adapter.http_port == port
    async with bot.runtime.health.serving() as own_server:
        assert own_server is None, "no second server: the Slack app serves the routes"

    async with aiohttp.ClientSession() as http:
        status, body = await healthz(http, port)
        assert (status, body["adapters"], body["database"]) == (200, {"slack": True}, {"ok": True})

        mention = fake.user_event(f"<@{fake.bot_user_id}> hello", kind="app_mention")
        payload = fake.event_callback(mention)
        await bot.deliver(payload)
        (message,) = await bot.answered(CHANNEL, mention["ts"])
        assert message.text == "Shared."
        await bot.deliver(payload, retry=1)  # Slack resends it: a duplicate, not a second turn
        elsewhere = fake.user_event(f"<@{fake.bot_user_id}> hi", kind="app_mention", channel="C0ELSEWHERE")
        await bot.send(elsewhere)  # not an allowed channel: refused

        def settled(s: Samples) -> bool:
            outcomes = [
                value(s, "threadline_turns_total", platform="slack", outcome=o) for o in ("duplicate", "refused")
            ]
            return outcomes == [1, 1]

        samples = await eventually(lambda: metrics(http, port), settled, "duplicate and refusal counted")
        assert value(samples, "threadline_turns_total", platform="slack", outcome="answered") == 1
        assert value(samples, "threadline_refusals_total", platform="slack", reason="access") == 1
        assert value(samples, "threadline_tokens_total", platform="slack", kind="output") == 3
        assert value(samples, "threadline_time_to_first_text_seconds_count", platform="slack") == 1
        assert len([r for r in fake_openai.requests if r.path == "/v1/responses"]) == 1, "one model call"

    await bot.stop()
    assert bot.runtime.metrics.adapters == {"slack": False}, "a stopped adapter reports itself disconnected"


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_openai_outcomes_are_counted_on_either_transport(
    tmp_path: Path, fake_openai: FakeOpenAI, transport: str
) -> None:
    """The hook sits in the OpenAI HTTP layer, so both SDK transports report successes, error statuses (with
    OpenAI's code) and connections that never happened."""
    fake_openai.script(Reply(status=429, error_code="rate_limit_exceeded"), Reply(text="fine"))
    settings = make_settings(tmp_path, fake_openai.base_url, openai_http_client=transport)
    async with open_runtime(settings) as runtime:
        for number in (1, 2):
            message = IncomingMessage(
                key=ThreadKey("console", "local", "console", "t"), user_id="me", text=f"q{number}"
            )
            reply = RecordingReply()
            submission = await runtime.gateway.submit(message, reply)
            assert submission.done is not None
            await submission.done
        assert reply.text == "fine"
        samples = parse(generate_latest(runtime.metrics.registry).decode())
        assert value(samples, "threadline_openai_errors_total", code="rate_limit_exceeded", status="429") == 1
        assert value(samples, "threadline_openai_errors_total") == 1
        assert runtime.metrics.since_openai_success() is not None
        assert value(samples, "threadline_turns_total", platform="console", outcome="failed") == 1
        assert value(samples, "threadline_turns_total", platform="console", outcome="answered") == 1

    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    async with open_runtime(make_settings(tmp_path, nowhere, openai_http_client=transport)) as runtime:
        message = IncomingMessage(key=ThreadKey("console", "local", "console", "u"), user_id="me", text="hello?")
        reply = RecordingReply()
        submission = await runtime.gateway.submit(message, reply)
        assert submission.done is not None
        await submission.done
        assert reply.failed
        samples = parse(generate_latest(runtime.metrics.registry).decode())
        assert value(samples, "threadline_openai_errors_total", code="connection_error", status="none") == 1
        assert runtime.metrics.since_openai_success() is None
