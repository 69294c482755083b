"""Several `threadline run` processes behind the fake Slack (Socket Mode spreads envelopes over their connections,
and redelivers what a dead connection never acked). One replica is killed with SIGKILL mid-answer: every message is
still answered exactly once (or its thread told it was interrupted), in order per thread, each thread on one
conversation. And one SQLite process killed mid-answer tells the thread after its restart."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import sqlite3
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from tests.fakes.openai_server import FakeOpenAI, Reply, conversation_id
from tests.fakes.slack_server import FakeSlack
from tests.helpers import user_env

THREADS = 20
MESSAGES = 4
CHANNEL = "C0GENERAL"


def _env(tmp_path: Path, slack: FakeSlack, openai: FakeOpenAI, database: str, **extra: str) -> dict[str, str]:
    return user_env(
        tmp_path,
        openai.base_url,
        SLACK_BOT_TOKEN=slack.bot_token,
        SLACK_APP_TOKEN=slack.app_token,
        SLACK_API_URL=slack.api_url,
        SLACK_FILE_ORIGINS=slack.origin,
        SLACK_STREAM_INTERVAL_SECS="0.05",
        SLACK_RATE_WINDOW_SECS="3",  # Slack's per-minute tiers, shrunk: 80 answers in one channel would take 80 s
        THREADLINE_DATABASE=database,
        THREADLINE_LEASE_SECS="3",
        **extra,
    )


@contextlib.asynccontextmanager
async def _replicas(
    tmp_path: Path, env: dict[str, str], count: int, per_replica: list[dict[str, str]] | None = None
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    procs = []
    for n in range(count):
        folder = tmp_path / f"replica-{n}"
        folder.mkdir(exist_ok=True)
        env_n = {**env, **(per_replica[n] if per_replica else {})}
        with (folder / "log.txt").open("ab") as log:  # a pipe nobody reads would block a chatty replica
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bot",
                    "run",
                    "--adapter",
                    "slack",
                    cwd=folder,
                    env=env_n,
                    stdout=log,
                    stderr=log,
                )
            )
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.communicate(), 20)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def _post(slack: FakeSlack, text: str, **options: str) -> str:
    """A person posts (a new thread when no ``thread_ts``); the fake delivers it over the open connections."""
    event = slack.user_event(text, channel=CHANNEL, **options)
    slack.push_event(event)
    return str(event["ts"])


def _text(n: int, m: int) -> str:
    return f"thread {n} message {m}"


def _mentions(texts: list[str]) -> list[tuple[int, int, str]]:
    """(thread, message, "answer"|"interrupted") for each bot message that answers or reports a message."""
    found = []
    for text in texts:
        for n, m in re.findall(r"thread (\d+) message (\d+)", text)[:1]:
            found.append((int(n), int(m), "interrupted" if "interrupted" in text else "answer"))
    return found


def _conversations_by_thread(fake_openai: FakeOpenAI) -> dict[int, set[str]]:
    used: dict[int, set[str]] = defaultdict(set)
    for request in fake_openai.requests:
        if request.path != "/v1/responses" or not isinstance(request.json, dict):
            continue
        text = str(request.json.get("input"))
        for n in re.findall(r"thread (\d+) message", text)[:1]:
            used[int(n)].add(conversation_id(request.json.get("conversation")) or "")
    return used


async def _inbox_states(database: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        rows = await (await conn.execute("SELECT state, count(*) FROM inbox GROUP BY state")).fetchall()
    return {str(state): int(count) for state, count in rows}


async def _leases_of(database: str, pid: int) -> int:
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FROM leases WHERE owner LIKE %s AND expires_at > clock_timestamp()", (f"%:{pid}:%",)
        )
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _until(condition: object, within: float, what: str) -> None:
    async with _explained(what), asyncio.timeout(within):
        while not await condition():  # type: ignore[operator]  # noqa: ASYNC110 (polls another process's database)
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def _explained(what: str) -> AsyncIterator[None]:
    try:
        yield
    except TimeoutError as exc:
        raise AssertionError(f"timed out waiting until {what}") from exc


@pytest.fixture
async def slow_openai(fake_openai: FakeOpenAI) -> FakeOpenAI:
    """Answers that take about a second to stream, so a kill lands mid-answer."""
    fake_openai.default_reply = Reply(token_interval=0.04, chunk=4)
    return fake_openai


async def test_three_replicas_answer_every_message_once_in_order_with_one_killed_mid_answer(
    tmp_path: Path, fake_slack: FakeSlack, slow_openai: FakeOpenAI, pg_database_url: str
) -> None:
    fake_slack.ack_timeout = 1.0
    env = _env(tmp_path, fake_slack, slow_openai, pg_database_url)
    async with _replicas(tmp_path, env, 3) as procs:
        await fake_slack.wait_connections(3, within=60)
        roots = []
        for n in range(THREADS):
            roots.append(_post(fake_slack, f"<@U0BOT> {_text(n, 0)}", kind="app_mention"))
        # The people reply once the bot has begun answering each thread; their replies interleave across threads.
        await fake_slack.wait_for(lambda: all(fake_slack.thread(CHANNEL, ts) for ts in roots), within=60)
        # Two messages of one thread are never posted within the same few milliseconds by a person: each round
        # goes out once the previous one has reached the inbox (over three connections, "arrived" needs that).
        for m in range(1, MESSAGES):
            for n, ts in enumerate(roots):
                _post(fake_slack, _text(n, m), thread_ts=ts)

            async def arrived(m: int = m) -> bool:
                return sum((await _inbox_states(pg_database_url)).values()) == THREADS * (m + 1)

            await _until(arrived, 30, f"round {m} reached the inbox")

        victim = procs[0]
        await _until(lambda: _leases_of(pg_database_url, victim.pid), 30, "the victim holds a thread")
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        held_at_death = await _leases_of(pg_database_url, victim.pid)  # they stay until they lapse

        async def settled() -> bool:
            states = await _inbox_states(pg_database_url)
            return sum(states.values()) == THREADS * MESSAGES and set(states) <= {"done", "interrupted"}

        await _until(settled, 90, "every message answered or reported")
        states = await _inbox_states(pg_database_url)
        assert sum(states.values()) == THREADS * MESSAGES, "every message was accepted exactly once"
        assert states.get("interrupted", 0) <= held_at_death, "only the killed replica's running turns were cut"

        interrupted: list[tuple[int, str]] = []
        for n, ts in enumerate(roots):
            said = _mentions(fake_slack.texts(CHANNEL, ts))
            assert sorted((m for _, m, _ in said)) == list(range(MESSAGES)), (n, fake_slack.texts(CHANNEL, ts))
            assert [m for _, m, _ in said] == list(range(MESSAGES)), f"thread {n} answered out of order: {said}"
            assert all(t == n for t, _, _ in said), "threads are isolated"
            cut = [(n, ts) for _, _, kind in said if kind == "interrupted"]
            assert len(cut) <= 1, "a thread runs one turn at a time, so at most one of its turns was cut"
            interrupted += cut
        assert len(interrupted) == states.get("interrupted", 0)

        used = _conversations_by_thread(slow_openai)
        assert all(len(used[n]) == 1 for n in range(THREADS)), "no thread got a second conversation"

        # A follow-up in an interrupted thread stays on that thread's conversation.
        for n, ts in interrupted:
            _post(fake_slack, f"{_text(n, 9)} follow-up", thread_ts=ts)
        for n, ts in interrupted:
            await fake_slack.wait_for(
                lambda ts=ts, n=n: any(f"«{_text(n, 9)} follow-up»" in t for t in fake_slack.texts(CHANNEL, ts)),
                within=30,
            )
        used = _conversations_by_thread(slow_openai)
        assert all(len(used[n]) == 1 for n in range(THREADS)), "a follow-up stays on the thread's conversation"


async def test_a_slack_process_on_sqlite_killed_mid_answer_tells_the_thread_after_restart(
    tmp_path: Path, fake_slack: FakeSlack, slow_openai: FakeOpenAI
) -> None:
    slow_openai.default_reply = Reply(text="A long answer " * 60, token_interval=0.05, chunk=4)
    database = tmp_path / "threadline.db"
    env = _env(tmp_path, fake_slack, slow_openai, str(database))

    def accepted() -> int:
        with contextlib.closing(sqlite3.connect(database)) as db:
            return int(db.execute("SELECT count(*) FROM inbox").fetchone()[0])

    async with _replicas(tmp_path, env, 1) as (proc,):
        await fake_slack.wait_connections(1, within=60)
        root = _post(fake_slack, f"<@U0BOT> {_text(1, 0)}", kind="app_mention")
        await fake_slack.wait_for(lambda: any("A long answer" in t for t in fake_slack.texts(CHANNEL, root)), within=30)
        _post(fake_slack, _text(1, 1), thread_ts=root)  # queued behind the answer in progress

        async def queued() -> bool:
            return accepted() == 2

        await _until(queued, 20, "the second message is in the inbox")
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    (conversation,) = {c for cs in _conversations_by_thread(slow_openai).values() for c in cs}

    slow_openai.default_reply = Reply()
    async with _replicas(tmp_path, env, 1):
        await fake_slack.wait_for(lambda: any("interrupted" in t for t in fake_slack.texts(CHANNEL, root)), within=20)
        await fake_slack.wait_for(
            lambda: any(f"«{_text(1, 1)}»" in t for t in fake_slack.texts(CHANNEL, root)), within=20
        )
        texts = fake_slack.texts(CHANNEL, root)
        assert not any("A long answer" in t for t in texts), "the half-posted answer was replaced by the notice"
        assert [kind for _, _, kind in _mentions(texts)] == ["interrupted", "answer"], "notice, then the queued one"
        _post(fake_slack, "retry", thread_ts=root)
        await fake_slack.wait_for(
            lambda: any(f"You said: «{_text(1, 0)}»" in t for t in fake_slack.texts(CHANNEL, root)), within=30
        )
        _post(fake_slack, _text(1, 2), thread_ts=root)
        await fake_slack.wait_for(
            lambda: any(f"«{_text(1, 2)}»" in t for t in fake_slack.texts(CHANNEL, root)), within=30
        )
    said = [(m, kind) for _, m, kind in _mentions(fake_slack.texts(CHANNEL, root))]
    assert said == [(0, "answer"), (1, "answer"), (2, "answer")], "the retried answer took the notice's place"
    assert _conversations_by_thread(slow_openai) == {1: {conversation}}, "the thread kept its one conversation"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def test_two_http_mode_replicas_behind_a_balancer_answer_each_message_once_in_order(
    tmp_path: Path, fake_slack: FakeSlack, fake_openai: FakeOpenAI, pg_database_url: str
) -> None:
    """The test is the load balancer: deliveries alternate between the replicas, and every event is delivered a
    second time to the other replica as Slack's retry (X-Slack-Retry-Num) after a slow first answer would be."""
    fake_openai.default_reply = Reply(token_interval=0.02, chunk=8)
    ports = [_free_port(), _free_port()]
    env = _env(tmp_path, fake_slack, fake_openai, pg_database_url, SLACK_SIGNING_SECRET=fake_slack.signing_secret)
    env.pop("SLACK_APP_TOKEN")
    urls = [f"http://127.0.0.1:{port}/slack/events" for port in ports]
    per_replica = [{"SLACK_HTTP_PORT": str(port), "SLACK_HTTP_HOST": "127.0.0.1"} for port in ports]
    threads, messages = 8, 3
    async with _replicas(tmp_path, env, 2, per_replica):
        for port in ports:
            await _until(lambda port=port: _listening(port), 60, f"a replica listens on {port}")
        roots: list[str] = []
        turn = 0
        for m in range(messages):
            for n in range(threads):
                text = f"<@U0BOT> {_text(n, m)}" if m == 0 else _text(n, m)
                options = {"kind": "app_mention"} if m == 0 else {"thread_ts": roots[n]}
                event = fake_slack.user_event(text, channel=CHANNEL, **options)
                if m == 0:
                    roots.append(str(event["ts"]))
                payload = fake_slack.event_callback(event)
                first, second = urls[turn % 2], urls[(turn + 1) % 2]
                turn += 1
                assert (await fake_slack.deliver(first, payload))[0] == 200
                assert (await fake_slack.deliver(second, payload, retry_num=1))[0] == 200

            async def arrived(m: int = m) -> bool:
                return sum((await _inbox_states(pg_database_url)).values()) == threads * (m + 1)

            await _until(arrived, 30, f"round {m} reached the inbox")

        async def settled() -> bool:
            states = await _inbox_states(pg_database_url)
            return states == {"done": threads * messages}

        await _until(settled, 60, "every message answered")
    for n, ts in enumerate(roots):
        said = _mentions(fake_slack.texts(CHANNEL, ts))
        assert [(t, m) for t, m, _ in said] == [(n, m) for m in range(messages)], f"thread {n}: {said}"
    used = _conversations_by_thread(fake_openai)
    assert all(len(used[n]) == 1 for n in range(threads)), "one conversation per thread"
