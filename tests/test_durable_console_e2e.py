"""Nothing accepted is lost: a real `threadline run` (console, SQLite) killed with SIGKILL mid-answer tells its
thread after the restart, `retry` asks again on the same conversation, and the thread goes on."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.fakes.openai_server import FakeOpenAI, Reply, conversation_id
from tests.helpers import spawn_threadline, user_env


def _env(tmp_path: Path, base_url: str, **extra: str) -> dict[str, str]:
    return user_env(tmp_path, base_url, **{"THREADLINE_DATABASE": str(tmp_path / "threadline.db"), **extra})


async def _kill_mid_answer(tmp_path: Path, fake_openai: FakeOpenAI, env: dict[str, str], line: str) -> None:
    """Start the console, send one line, and SIGKILL it once the answer has begun streaming."""
    fake_openai.default_reply = Reply(text="A long answer " * 40, token_interval=0.05, chunk=4)
    proc = await spawn_threadline(tmp_path, env, "run")
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"{line}\n".encode())
    await proc.stdin.drain()
    seen = await asyncio.wait_for(proc.stdout.readuntil(b"A long answer"), timeout=30)
    assert b"threadline> " in seen
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    fake_openai.default_reply = Reply()


def _answered_in(fake_openai: FakeOpenAI) -> list[str]:
    """The conversations that got responses (pre-created, unused ones don't count)."""
    used = [conversation_id(r.json.get("conversation")) for r in fake_openai.requests if r.path == "/v1/responses"]
    return list(dict.fromkeys(c for c in used if c))


async def _run(tmp_path: Path, env: dict[str, str], stdin: str) -> str:
    proc = await spawn_threadline(tmp_path, env, "run")
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_a_console_killed_mid_answer_says_interrupted_after_restart_and_retry_keeps_the_conversation(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    env = _env(tmp_path, fake_openai.base_url)
    assert "You said" in await _run(tmp_path, env, "remember the word teapot\n")
    (conversation,) = _answered_in(fake_openai)

    await _kill_mid_answer(tmp_path, fake_openai, env, "tell me a long story")

    out = await _run(tmp_path, env, "")  # nothing typed: the restart alone tells the thread
    assert "interrupted" in out and "tell me a long story" in out and "`retry`" in out
    assert out.count("interrupted") == 1

    out = await _run(tmp_path, env, "retry\nwhat was the first word I asked you to remember?\n")
    answers = [line for line in out.splitlines() if line.startswith("threadline> ")]
    assert "You said: «tell me a long story»" in answers[0], "retry answers the interrupted message"
    assert "«what was the first word" in answers[1]
    assert "interrupted" not in out, "told once only"
    assert _answered_in(fake_openai) == [conversation], "no second conversation because of the crash"
    asked = [r["input"][0]["content"][0]["text"] for r in fake_openai.responses_for(conversation)]
    assert asked == [
        "remember the word teapot",
        "tell me a long story",
        "tell me a long story",
        "what was the first word I asked you to remember?",
    ]


async def test_with_retry_interrupted_the_restart_answers_by_itself(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    env = _env(tmp_path, fake_openai.base_url, THREADLINE_RETRY_INTERRUPTED="true")
    await _kill_mid_answer(tmp_path, fake_openai, env, "a question cut short")
    out = await _run(tmp_path, env, "")
    assert "interrupted" not in out
    assert "You said: «a question cut short»" in out
    assert len(_answered_in(fake_openai)) == 1


async def test_retry_with_nothing_interrupted_says_so_and_asks_no_model(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    out = await _run(tmp_path, _env(tmp_path, fake_openai.base_url), "retry\n")
    assert "no interrupted answer to retry" in out
    assert not [r for r in fake_openai.requests if r.path == "/v1/responses"]
