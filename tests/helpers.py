"""Small helpers shared by the end-to-end tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.settings import Settings


def make_settings(tmp_path: Path, openai_base_url: str, **overrides: Any) -> Settings:
    """Settings for a test: fake OpenAI, a database in tmp_path, nothing read from the environment's files."""
    values: dict[str, Any] = {
        "openai_api_key": "sk-test-secret",
        "openai_base_url": openai_base_url,
        "openai_max_retries": 0,
        "database": tmp_path / "threadline.db",
        "tools": [],
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class RecordingReply:
    """A ReplyStream that records what the engine sent, in order (the adapter side of the seam)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.text = ""
        self.files: list[object] = []
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

    async def set_status(self, status: str) -> None:
        self.events.append(("status", status))
        self.statuses.append(status)

    async def finish(self) -> None:
        self.events.append(("finish", None))
        self.finished = True

    async def fail(self, message: str) -> None:
        self.events.append(("fail", message))
        self.failed = message
