"""threadline on PostgreSQL, as a user runs it: the console answers and remembers across a restart, the doctor
reports the database, a server that is down at start-up is one clear line (no password), and a database that
goes away mid-run fails turns briefly without stopping the process, which recovers when it is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bot.runtime import Runtime, open_runtime
from bot.types import IncomingMessage, ThreadKey
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.helpers import RecordingReply, make_settings, spawn_threadline, user_env
from tests.pg_server import EmbeddedPostgres, free_port

PASSWORD = "s3cr3t-PW"


async def threadline(tmp_path: Path, env: dict[str, str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    proc = await spawn_threadline(tmp_path, env, *args)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def safe(url: str) -> str:
    parts = urlsplit(url)
    return url.replace(f":{parts.password}@", ":***@") if parts.password else url


async def test_console_on_postgresql_remembers_across_a_restart_and_the_doctor_reports_it(
    tmp_path: Path, fake_openai: FakeOpenAI, pg_database_url: str
) -> None:
    env = user_env(tmp_path, fake_openai.base_url, THREADLINE_DATABASE=pg_database_url)
    code, out, err = await threadline(tmp_path, env, "run", stdin="hello\n")
    assert code == 0, err
    code, out, err = await threadline(tmp_path, env, "run", stdin="what did I just say?\n")
    assert code == 0, err
    assert "Before that you said: «hello»" in out, "the restart continued the same conversation"
    assert len(fake_openai.conversations) == 1

    code, out, err = await threadline(tmp_path, env, "doctor")
    assert code == 0, out + err
    password = urlsplit(pg_database_url).password or "\0"
    assert f"✓ database {safe(pg_database_url)} (postgresql) is reachable and writable (schema v5)" in out
    assert password not in out + err


async def test_postgresql_down_at_start_up_is_one_clear_line_without_the_password(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    url = f"postgresql://bot:{PASSWORD}@127.0.0.1:{free_port()}/threadline"
    env = user_env(tmp_path, fake_openai.base_url, THREADLINE_DATABASE=url)
    code, out, err = await threadline(tmp_path, env, "run", stdin="hello\n")
    assert code == 1
    lines = [line for line in err.splitlines() if line.startswith("threadline:")]
    assert len(lines) == 1 and safe(url) in lines[0], err
    assert PASSWORD not in out + err and "Traceback" not in out + err
    code, out, err = await threadline(tmp_path, env, "doctor")
    assert code == 1 and "✗ " in out and safe(url) in out and PASSWORD not in out + err


async def test_an_unknown_database_scheme_is_a_clear_settings_error(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    env = user_env(tmp_path, fake_openai.base_url, THREADLINE_DATABASE=f"mysql://bot:{PASSWORD}@db/threadline")
    code, out, err = await threadline(tmp_path, env, "run", stdin="hello\n")
    assert code == 2 and "unknown scheme 'mysql'" in err and "postgresql://" in err
    assert "Traceback" not in err and PASSWORD not in out + err


@pytest.fixture
async def own_server() -> AsyncIterator[EmbeddedPostgres]:
    """A server of this test's own: it is stopped and started again mid-test."""
    server = EmbeddedPostgres(password=PASSWORD)
    await asyncio.to_thread(server.start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.cleanup)


async def turn(rt: Runtime, text: str, thread: str = "t1") -> RecordingReply:
    reply = RecordingReply()
    message = IncomingMessage(key=ThreadKey("test", "W", "C", thread), user_id="U1", text=text)
    submission = await rt.gateway.submit(message, reply)
    if submission.done is not None:
        await submission.done
    return reply


async def test_a_database_outage_mid_run_fails_turns_briefly_and_the_bot_recovers(
    tmp_path: Path, fake_openai: FakeOpenAI, own_server: EmbeddedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, fake_openai.base_url, database=own_server.url, database_pool_size=2)
    fake_openai.script(Reply(text="before"), Reply(text="after"))
    async with open_runtime(settings) as rt:
        assert (await turn(rt, "one")).text == "before"
        await asyncio.to_thread(own_server.stop)
        during = await turn(rt, "two")
        assert during.failed is not None and "database" in during.failed.lower()
        assert len(during.failed) < 200 and PASSWORD not in during.failed
        await asyncio.to_thread(own_server.start)
        after = await turn(rt, "three")
        assert after.failed is None and after.text == "after", "the same process answers once the database is back"
    assert len(fake_openai.conversations) == 1, "the thread kept its conversation through the outage"
    assert PASSWORD not in caplog.text
