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
