"""Settings come from env, .env and threadline.toml with documented defaults; secrets stay secret."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.discord.settings import DiscordSettings
from adapters.slack.settings import SlackSettings
from bot.logging_setup import RedactSecrets, secret_values
from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(__import__("os").environ):
        if name.startswith(("THREADLINE_", "OPENAI_", "SLACK_", "DISCORD_", "XDG_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_sources_and_precedence(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / "threadline.toml").write_text('model = "from-toml"\ntts_voice = "toml-voice"\nturn_timeout_secs = 7\n')
    (clean_env / ".env").write_text("THREADLINE_MODEL=from-dotenv\nOPENAI_BASE_URL=http://127.0.0.1:9/v1\n")
    monkeypatch.setenv("THREADLINE_MODEL", "from-env")
    settings = Settings()
    assert settings.model == "from-env"
    assert settings.openai_base_url == "http://127.0.0.1:9/v1"
    assert settings.tts_voice == "toml-voice" and settings.turn_timeout_secs == 7


def test_database_follows_xdg_data_home(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(clean_env / "data"))
    default = Settings().database_location
    assert default.scheme == "sqlite" and default.path == clean_env / "data" / "threadline" / "threadline.db"
    monkeypatch.setenv("THREADLINE_DATABASE", str(clean_env / "x.db"))
    assert Settings().database_location.path == clean_env / "x.db"
    monkeypatch.setenv("THREADLINE_DATABASE", f"sqlite:///{clean_env}/y.db")
    assert Settings().database_location.path == clean_env / "y.db"
    monkeypatch.setenv("THREADLINE_DATABASE", "postgresql://bot:s3cr3t-PW@127.0.0.1:5432/threadline")
    location = Settings().database_location
    assert location.scheme == "postgresql" and location.safe == "postgresql://bot:***@127.0.0.1:5432/threadline"


def test_unknown_database_scheme_is_a_clear_settings_error(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THREADLINE_DATABASE", "mysql://bot:pw@host/db")
    with pytest.raises(ValidationError, match=r"unknown scheme 'mysql'.*postgresql://"):
        Settings()


def test_database_password_is_redacted_from_logs(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THREADLINE_DATABASE", "postgresql://bot:s3cr3t-PW@127.0.0.1:5432/threadline")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-slack-secret-token")
    assert set(secret_values(Settings(), SlackSettings())) == {"s3cr3t-PW", "xoxb-slack-secret-token"}
    monkeypatch.setenv(
        "THREADLINE_DATABASE", "postgresql://bot@db:5432/threadline?password=p%40ss-word&sslmode=require"
    )
    settings = Settings()
    assert "p@ss-word" in secret_values(settings)
    assert settings.database_location.safe == "postgresql://bot@db:5432/threadline?password=***&sslmode=require"


def test_comma_lists(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THREADLINE_TOOLS", "code_interpreter, web_search")
    monkeypatch.setenv("THREADLINE_ALLOWED_USERS", "U1,U2")
    settings = Settings()
    assert settings.tools == ["code_interpreter", "web_search"] and settings.allowed_users == ["U1", "U2"]


def test_secrets_never_show(clean_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-value")
    settings = Settings()
    assert "sk-very-secret-value" not in repr(settings) and "sk-very-secret-value" not in str(settings.model_dump())
    logger = logging.getLogger("threadline.test-redaction")
    handler_filter = RedactSecrets(secret_values(settings))
    logger.addFilter(handler_filter)
    try:
        with caplog.at_level(logging.INFO, logger="threadline.test-redaction"):
            logger.info("calling with key %s", "sk-very-secret-value")
    finally:
        logger.removeFilter(handler_filter)
    assert "sk-very-secret-value" not in caplog.text and "***" in caplog.text


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = []
    fields = [item for cls in (Settings, SlackSettings, DiscordSettings) for item in cls.model_fields.items()]
    for name, field in fields:
        alias = field.validation_alias
        names = list(getattr(alias, "choices", [])) if alias else []
        env_names = [n for n in names if isinstance(n, str) and n.isupper()] or [f"THREADLINE_{name.upper()}"]
        if not any(f"`{env}`" in readme for env in env_names):
            missing.append(env_names[0])
    assert missing == [], f"settings missing from the README table: {missing}"
