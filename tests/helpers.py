"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from bot.audio_encode import AudioFormat
from bot.gateway import Outcome, Submission
from bot.runtime import Runtime
from bot.settings import Settings, SettingsBase
from bot.types import IncomingMessage, TaskStep, ThreadKey

S = TypeVar("S", bound=SettingsBase)

TEST_OPENAI_KEY = "sk-test-secret"


def make_settings(tmp_path: Path, openai_base_url: str, **overrides: Any) -> Settings:
    """The core's settings for a test: fake OpenAI, a database in tmp_path, nothing read from the environment's
    files."""
    values: dict[str, Any] = {
        "openai_api_key": TEST_OPENAI_KEY,
        "openai_base_url": openai_base_url,
        "openai_max_retries": 0,
        "database": tmp_path / "threadline.db",
        "tools": [],
        # Off unless a test turns it on: many tests count the fake's conversations (tests/test_conversation_pool.py).
        "conversation_pool": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def section(cls: type[S], **values: Any) -> S:
    """An adapter's settings section for a test, from the given values only (no .env)."""
    return cls(_env_file=None, **values)  # type: ignore[call-arg]


def split_settings(tmp_path: Path, openai_base_url: str, cls: type[S], **overrides: Any) -> tuple[Settings, S]:
    """Core and adapter settings from one set of overrides, each field going to the section that has it."""
    own = {k: v for k, v in overrides.items() if k in cls.model_fields}
    core = {k: v for k, v in overrides.items() if k not in cls.model_fields}
    return make_settings(tmp_path, openai_base_url, **core), section(cls, **own)


class RecordingReply:
    """A ReplyStream that records what the engine sent, in order (the adapter side of the seam)."""

    audio_format = AudioFormat.OGG_OPUS

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.text = ""
        self.files: list[object] = []
        self.previews: list[object] = []
        self.steps: list[TaskStep] = []
        self.statuses: list[str] = []
        self.failed: str | None = None
        self.finished = False

    async def start(self) -> None:
        self.events.append(("start", None))

    async def append(self, delta: str) -> None:
        self.events.append(("append", delta))
        self.text += delta

    async def attach(self, part: object) -> None:
        self.events.append(("attach", part))
        self.files.append(part)

    async def step(self, step: TaskStep) -> None:
        self.events.append(("step", step))
        self.steps.append(step)
        if not step.done:
            await self.set_status(step.status)

    async def preview(self, part: object) -> None:
        self.events.append(("preview", part))
        self.previews.append(part)

    async def set_status(self, status: str) -> None:
        self.events.append(("status", status))
        self.statuses.append(status)

    async def finish(self) -> None:
        self.events.append(("finish", None))
        self.finished = True

    async def fail(self, message: str) -> None:
        self.events.append(("fail", message))
        self.failed = message


def user_env(tmp_path: Path, openai_base_url: str, **extra: str) -> dict[str, str]:
    """The environment of a `threadline` process: only what a user would set, nothing inherited that could
    change the outcome."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "THREADLINE_CONFIG": str(tmp_path / "none.toml"),
        "OPENAI_API_KEY": TEST_OPENAI_KEY,
        "OPENAI_BASE_URL": openai_base_url,
        "THREADLINE_OPENAI_MAX_RETRIES": "0",
        "THREADLINE_TOOLS": "",
        "THREADLINE_CONVERSATION_POOL": "0",
    }
    env.update(extra)
    return env


async def spawn_threadline(tmp_path: Path, env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    """Start `python -m bot ARGS` (what the `threadline` script runs) in tmp_path with pipes on all streams."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        *args,
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def stop_adapter(
    adapter: Any, task: asyncio.Task[Any], runtime: Runtime, stack: contextlib.AsyncExitStack
) -> None:
    """Close an adapter started by a test, let its run() end, finish in-flight turns, then close the runtime."""
    await adapter.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 5)
    await runtime.gateway.wait_idle()
    await stack.aclose()


@dataclass
class RecordingGateway:
    """The gateway's surface as an adapter sees it, recording what it is handed instead of answering: tests of what
    the core receives from real (or mutated) platform payloads."""

    http: aiohttp.ClientSession
    owned: bool = False
    outcome: Outcome = Outcome.QUEUED
    max_attachment_bytes: int = 25 * 1024 * 1024
    submitted: list[IncomingMessage] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    resumers: dict[str, Any] = field(default_factory=dict)
    retried: list[ThreadKey] = field(default_factory=list)

    def register(self, platform: str, resumer: Any) -> None:
        self.resumers[platform] = resumer

    def connected(self, platform: str, up: bool) -> None:
        return None

    def http_routes(self, port: int | None) -> list[Any]:
        return []

    async def retry(self, key: ThreadKey) -> bool:
        self.retried.append(key)
        return False

    def reset(self, *, owned: bool) -> None:
        self.owned = owned
        self.submitted.clear()
        self.commands.clear()

    async def owns(self, key: ThreadKey) -> bool:
        return self.owned

    async def refusal(self, message: IncomingMessage) -> str | None:
        return None

    async def submit(self, message: IncomingMessage, reply: Any) -> Submission:
        self.submitted.append(message)
        return Submission(self.outcome)

    async def command(self, text: str, **_: Any) -> Submission:
        self.commands.append(text)
        return Submission(Outcome.QUEUED)

    async def stop(self, key: ThreadKey) -> bool:
        return False

    async def feedback(self, key: ThreadKey, **_: Any) -> None:
        return None

    async def wait_idle(self) -> None:
        return None


AUDIT = "threadline.audit"


class AuditLines(logging.Handler):
    """Every record of ``threadline.audit`` while a test runs, with a way to wait for more."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []
        self.everything: list[logging.LogRecord] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self._changed.set()

    def of(self, event: str) -> list[Any]:
        return [r for r in self.records if getattr(r, "audit", None) == event]

    async def wait(self, event: str, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.of(event)) < count:
                self._changed.clear()
                await self._changed.wait()
