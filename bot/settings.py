"""All settings, built once at start-up and passed down explicitly.

Sources, strongest first: keyword arguments, environment, ``.env``, ``threadline.toml`` (or the file named by
``THREADLINE_CONFIG``). Every field has a default and a row in the README's settings table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from platformdirs import user_data_path
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CommaList = Annotated[list[str], NoDecode]


def _alias(*names: str) -> Any:
    return AliasChoices(*names)


def default_database_path() -> Path:
    """``$XDG_DATA_HOME/threadline/threadline.db`` on Linux (platformdirs reads XDG_DATA_HOME each call)."""
    return user_data_path("threadline", appauthor=False) / "threadline.db"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="THREADLINE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

    # --- OpenAI -------------------------------------------------------------------------------------------
    openai_api_key: SecretStr = Field(default=SecretStr(""), validation_alias=_alias("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(default=None, validation_alias=_alias("OPENAI_BASE_URL"))
    openai_timeout_secs: float = 120.0
    openai_max_retries: int = 2
    model: str = "gpt-6.2-sol"
    transcription_model: str = "gpt-transcribe"
    tts_model: str = "gpt-4o-mini-tts"
    tts_voice: str = "alloy"
    image_model: str = "gpt-image-2.6-sunburst"
    instructions: str = (
        "You are threadline, a helpful assistant in a team chat. Answer concisely; use Markdown sparingly. "
        "Voice notes arrive as transcripts."
    )
    tools: CommaList = Field(default_factory=lambda: ["image_generation", "code_interpreter"])
    voice_replies: Literal["auto", "always", "never"] = "auto"

    # --- Turns and access -------------------------------------------------------------------------------------
    turn_timeout_secs: float = 300.0
    max_concurrent_turns: int = 1000
    max_attachment_bytes: int = 25 * 1024 * 1024
    allowed_users: CommaList = Field(default_factory=list)
    allowed_channels: CommaList = Field(default_factory=list)
    allowed_roles: CommaList = Field(default_factory=list)
    allow_dms: bool = True

    # --- Store ----------------------------------------------------------------------------------------------
    database: Path = Field(
        default_factory=default_database_path, validation_alias=_alias("THREADLINE_DATABASE", "database")
    )
    dedupe_retention_hours: float = 72.0
    log_level: str = "INFO"

    # --- Slack ----------------------------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = Field(default=None, validation_alias=_alias("SLACK_BOT_TOKEN"))
    slack_app_token: SecretStr | None = Field(default=None, validation_alias=_alias("SLACK_APP_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(default=None, validation_alias=_alias("SLACK_SIGNING_SECRET"))
    slack_http_port: int | None = Field(default=None, validation_alias=_alias("SLACK_HTTP_PORT"))
    slack_api_url: str = Field(
        default="https://slack.com/api/", validation_alias=_alias("SLACK_API_URL", "slack_api_url")
    )
    slack_file_origins: CommaList = Field(
        default_factory=lambda: ["https://files.slack.com"],
        validation_alias=_alias("SLACK_FILE_ORIGINS", "slack_file_origins"),
    )

    # --- Discord --------------------------------------------------------------------------------------------
    discord_bot_token: SecretStr | None = Field(default=None, validation_alias=_alias("DISCORD_BOT_TOKEN"))
    discord_api_base: str | None = Field(default=None, validation_alias=_alias("DISCORD_API_BASE"))
    discord_gateway_url: str | None = Field(default=None, validation_alias=_alias("DISCORD_GATEWAY_URL"))

    @field_validator(
        "tools",
        "allowed_users",
        "allowed_channels",
        "allowed_roles",
        "slack_file_origins",
        mode="before",
        check_fields=False,
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("THREADLINE_CONFIG", "threadline.toml"))
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
            file_secret_settings,
        )

    @property
    def slack_configured(self) -> bool:
        return bool(self.slack_bot_token and self.slack_bot_token.get_secret_value())

    @property
    def discord_configured(self) -> bool:
        return bool(self.discord_bot_token and self.discord_bot_token.get_secret_value())
