"""``threadline run`` as a user runs it (a separate process), with Discord settings pointed at the fakes."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply, conversation_id
from tests.helpers import spawn_threadline, user_env


def cli_env(tmp_path: Path, discord: FakeDiscord, openai: FakeOpenAI) -> dict[str, str]:
    return user_env(
        tmp_path,
        openai.base_url,
        DISCORD_BOT_TOKEN=discord.token,
        DISCORD_API_BASE=discord.api_base,
        DISCORD_GATEWAY_URL=discord.gateway_url,
        DISCORD_GUILD_READY_TIMEOUT_SECS="0.1",
    )


async def test_threadline_run_answers_a_discord_mention_in_a_new_thread(
    tmp_path: Path, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    proc = await spawn_threadline(tmp_path, cli_env(tmp_path, fake_discord, fake_openai), "run")
    try:
        await fake_discord.wait_connected(within=30)
        fake_openai.script(Reply(text="Hello from threadline run."))
        asked = await fake_discord.user_message(fake_discord.channel_id, "are you there?", mention_bot=True)
        await fake_discord.wait_for(lambda: fake_discord.threads_created, 15, "a thread")
        tid = int(fake_discord.threads_created[0]["id"])
        await fake_discord.wait_for(lambda: "Hello from threadline run." in fake_discord.text_in(tid), 15, "answer")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    stdout, stderr = out.decode(), err.decode()
    assert proc.returncode == 0, stderr
    assert tid == int(asked["id"]) and fake_discord.threads_created[0]["name"] == "are you there?"
    assert f"https://discord.com/oauth2/authorize?client_id={fake_discord.app_id}" in stdout
    assert "permissions=70680129407040" in stdout
    assert fake_discord.token not in stdout + stderr and "sk-test-secret" not in stdout + stderr


async def test_threadline_run_without_the_message_content_intent_exits_with_the_portal_toggle(
    tmp_path: Path, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake_discord.message_content_intent = False
    proc = await spawn_threadline(tmp_path, cli_env(tmp_path, fake_discord, fake_openai), "run", "--adapter", "discord")
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    stderr = err.decode()
    assert proc.returncode == 1
    assert "Bot → Privileged Gateway Intents → Message Content Intent" in stderr
    assert "Traceback" not in stderr and "PrivilegedIntentsRequired" not in stderr


async def test_threadline_doctor_reports_the_discord_token_and_a_missing_intent(
    tmp_path: Path, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake_discord.message_content_intent = False
    proc = await spawn_threadline(tmp_path, cli_env(tmp_path, fake_discord, fake_openai), "doctor")
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    stdout = out.decode()
    assert proc.returncode == 1
    assert "✓ Discord: token accepted for bot threadline" in stdout
    assert "✗ Discord: Message Content intent is OFF" in stdout and "Message Content Intent" in stdout


async def test_a_discord_process_on_sqlite_killed_mid_answer_tells_the_thread_after_restart(
    tmp_path: Path, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    env = {**cli_env(tmp_path, fake_discord, fake_openai), "THREADLINE_DATABASE": str(tmp_path / "threadline.db")}
    fake_openai.default_reply = Reply(text="A long answer " * 60, token_interval=0.05, chunk=4)
    proc = await spawn_threadline(tmp_path, env, "run", "--adapter", "discord")
    try:
        await fake_discord.wait_connected(within=30)
        asked = await fake_discord.user_message(fake_discord.channel_id, "tell me a long story", mention_bot=True)
        tid = int(asked["id"])  # the thread opened from the message has its id
        await fake_discord.wait_for(lambda: "A long answer" in fake_discord.text_in(tid), 20, "the answer begins")
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.communicate()
    conversations = set(fake_openai.conversations)

    fake_openai.default_reply = Reply()
    proc = await spawn_threadline(tmp_path, env, "run", "--adapter", "discord")
    try:
        await fake_discord.wait_for(lambda: "interrupted" in fake_discord.text_in(tid), 20, "the notice")
        assert "tell me a long story" in fake_discord.text_in(tid) and "`retry`" in fake_discord.text_in(tid)
        await fake_discord.wait_connected(within=30)
        await fake_discord.user_message(tid, "what did I ask before?")
        await fake_discord.wait_for(lambda: "«what did I ask before?»" in fake_discord.text_in(tid), 20, "follow-up")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    asked_in = {conversation_id(r.json.get("conversation")) for r in fake_openai.requests if r.path == "/v1/responses"}
    assert len(asked_in) == 1, "the follow-up went to the thread's conversation, not a second one"
    assert set(fake_openai.conversations) == conversations, "no conversation was made because of the crash"
