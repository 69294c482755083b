"""Slack and Discord as the bot meets them in production: the fake platform (tests/fakes) runs in this process,
the bot is a real ``python -m bot run --adapter X`` child process, the model is the fake OpenAI in a third
(bench.model_server). A "world" starts the fake, gives the bot's environment, says when the bot is ready,
delivers a user's message and reads the fake's own timestamps of what the bot did. ``time.monotonic`` is
CLOCK_MONOTONIC, shared by all processes, so stamps taken on either side compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.model_server import ROOT
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.slack_server import Call, FakeSlack

SLACK_CHANNEL = "C0GENERAL"
SLACK_TEXT_METHODS = ("chat.startStream", "chat.appendStream", "chat.stopStream", "chat.postMessage", "chat.update")
Process = asyncio.subprocess.Process


def base_env(folder: Path, openai_base_url: str) -> dict[str, str]:
    """Only what a user would set (nothing inherited that could change the outcome)."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(folder),
        "XDG_DATA_HOME": str(folder / "data"),
        "THREADLINE_CONFIG": str(folder / "none.toml"),
        "THREADLINE_DATABASE": str(folder / "threadline.db"),
        "THREADLINE_LOG_LEVEL": "WARNING",
        "THREADLINE_TOOLS": "",
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": openai_base_url,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def spawn_bot(adapter: str, env: dict[str, str]) -> Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "run",
        "--adapter",
        adapter,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
    )


async def stop_bot(proc: Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    if proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), timeout=10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def until(condition: Callable[[], bool], proc: Process, within: float = 30.0) -> None:
    """Poll (2 ms) until ``condition()``; fail if the bot exits first."""
    deadline = time.monotonic() + within
    while not condition():
        if proc.returncode is not None:
            raise RuntimeError(f"the bot exited ({proc.returncode}) before the condition held")
        if time.monotonic() > deadline:
            raise TimeoutError("the bot did not get there in time")
        await asyncio.sleep(0.002)


async def unless_exits(awaitable: Awaitable[None], proc: Process) -> None:
    """Await ``awaitable``; fail at once if the bot exits first."""
    waiting = asyncio.ensure_future(awaitable)
    exited = asyncio.ensure_future(proc.wait())
    try:
        await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        exited.cancel()
    if not waiting.done():
        waiting.cancel()
        raise RuntimeError(f"the bot exited ({proc.returncode}) before it was ready")
    waiting.result()


async def port_open(port: int, proc: Process) -> None:
    while proc.returncode is None:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.002)
            continue
        writer.close()
        return
    raise RuntimeError("the bot exited before it listened")


def _slack_text(args: dict[str, Any]) -> str:
    chunks = args.get("chunks") or []
    texts = [c.get("text", "") for c in chunks if isinstance(c, dict)] if isinstance(chunks, list) else [str(chunks)]
    return (args.get("markdown_text") or args.get("text") or "") + "".join(texts)


@dataclass
class SlackWorld:
    """A fake Slack; ``http`` picks the Events API over HTTP instead of Socket Mode."""

    fake: FakeSlack
    http: bool
    port: int = field(default_factory=free_port)
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    def env(self) -> dict[str, str]:
        env = {"SLACK_BOT_TOKEN": self.fake.bot_token, "SLACK_API_URL": self.fake.api_url}
        if self.http:
            env |= {"SLACK_SIGNING_SECRET": self.fake.signing_secret, "SLACK_HTTP_HOST": "127.0.0.1"}
            env["SLACK_HTTP_PORT"] = str(self.port)
        else:
            env["SLACK_APP_TOKEN"] = self.fake.app_token
        return env

    async def ready(self, proc: Process) -> None:
        if self.http:
            await port_open(self.port, proc)
        else:
            await unless_exits(self.fake.wait_connected(within=30), proc)

    async def _deliver(self, payload: dict[str, Any]) -> None:
        if self.http:
            status, _ = await self.fake.deliver(f"http://127.0.0.1:{self.port}/slack/events", payload)
            if status != 200:
                raise RuntimeError(f"the Slack adapter answered {status} to an event")
        else:
            await self.fake.send_envelope(payload)

    async def send(self, text: str, thread: str | None = None) -> tuple[float, str]:
        """A mention that opens a thread, or a reply in one. Returns (sent at, thread ts)."""
        kind = "message" if thread else "app_mention"
        event = self.fake.user_event(f"<@{self.fake.bot_user_id}> {text}", kind=kind, thread_ts=thread)
        payload = self.fake.event_callback(event)
        sent_at = time.monotonic()
        task = asyncio.create_task(self._deliver(payload))  # the ack arrives whenever; the answer is what counts
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return sent_at, thread or str(event["ts"])

    def text_calls(self, thread: str, since: float, methods: tuple[str, ...] = SLACK_TEXT_METHODS) -> list[Call]:
        """API calls that put text in this thread (stream calls are matched by the ts of their message)."""
        ours = {m.ts for m in self.fake.messages if m.thread_ts == thread} | {thread}
        return [
            c
            for c in self.fake.calls
            if c.at >= since
            and c.method in methods
            and (c.args.get("thread_ts") in ours or c.args.get("ts") in ours)
            and _slack_text(c.args).strip()
        ]

    async def first_text(self, thread: str, since: float) -> float:
        await self.fake.wait_for(lambda: bool(self.text_calls(thread, since)), within=30)
        return self.text_calls(thread, since)[0].at

    async def answered(self, thread: str, since: float) -> None:
        """The answer is final: no message of the thread is still streaming, and something was said."""

        def done() -> bool:
            messages = [m for m in self.fake.messages if m.thread_ts == thread]
            return bool(self.text_calls(thread, since)) and not any(m.streaming for m in messages)

        await self.fake.wait_for(done, within=60)


@dataclass
class DiscordWorld:
    fake: FakeDiscord

    def env(self) -> dict[str, str]:
        return {
            "DISCORD_BOT_TOKEN": self.fake.token,
            "DISCORD_API_BASE": self.fake.api_base,
            "DISCORD_GATEWAY_URL": self.fake.gateway_url,
            "DISCORD_GUILD_READY_TIMEOUT_SECS": "0.05",
        }

    async def ready(self, proc: Process) -> None:
        await until(lambda: bool(self.fake.identifies), proc)

    async def send(self, text: str, thread: int | None = None) -> tuple[float, int]:
        """A mention in #general (the bot opens a thread with the message's id) or a message in a thread."""
        sent_at = time.monotonic()
        if thread is None:
            payload = await self.fake.user_message(self.fake.channel_id, text, mention_bot=True)
            return sent_at, int(payload["id"])
        await self.fake.user_message(thread, text)
        return sent_at, thread

    def text_writes(self, thread: int, since: float) -> list[float]:
        return [w.at for w in self.fake.writes_in(thread) if w.at >= since and w.content]

    async def first_text(self, thread: int, since: float) -> float:
        await self.fake.wait_for(lambda: bool(self.text_writes(thread, since)), within=30, what="the first text")
        return self.text_writes(thread, since)[0]


World = SlackWorld | DiscordWorld


@asynccontextmanager
async def world(kind: str) -> AsyncIterator[World]:
    """``slack-socket``, ``slack-http`` or ``discord``: a started fake, closed afterwards."""
    if kind == "discord":
        discord = await FakeDiscord().start()
        try:
            yield DiscordWorld(discord)
        finally:
            await discord.close()
        return
    slack = await FakeSlack().start()
    try:
        yield SlackWorld(slack, http=kind == "slack-http")
    finally:
        await slack.close()


def adapter_of(kind: str) -> str:
    return "discord" if kind == "discord" else "slack"


@asynccontextmanager
async def running_bot(
    kind: str, folder: Path, openai_base_url: str, extra_env: dict[str, str] | None = None
) -> AsyncIterator[World]:
    """A world with a ready bot process connected to it."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    async with world(kind) as where:
        env = base_env(folder, openai_base_url) | where.env() | (extra_env or {})
        proc = await spawn_bot(adapter_of(kind), env)
        try:
            await asyncio.wait_for(where.ready(proc), timeout=30)
            if isinstance(where, DiscordWorld):
                await asyncio.sleep(0.5)  # READY and the guild are sent; let discord.py take them in
            yield where
        finally:
            await stop_bot(proc)
