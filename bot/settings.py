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
    # HTTP transport of the openai SDK: "aiohttp" keeps its cost per request flat with 1,000+ open streams;
    # "httpx" is the SDK default (httpx2), whose connection pool does O(open connections) work per request.
    openai_http_client: Literal["aiohttp", "httpx"] = "aiohttp"
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
    # HTTP mode listens on this address (with SLACK_HTTP_PORT); Slack posts events to /slack/events.
    slack_http_host: str = Field(default="0.0.0.0", validation_alias=_alias("SLACK_HTTP_HOST", "slack_http_host"))
    # Follow-ups in a thread the bot already answers need a new @mention when true.
    slack_require_mention: bool = Field(
        default=False, validation_alias=_alias("SLACK_REQUIRE_MENTION", "slack_require_mention")
    )
    # Stream answers with chat.startStream/appendStream/stopStream; false: post once, then chat.update.
    slack_native_streaming: bool = Field(
        default=True, validation_alias=_alias("SLACK_NATIVE_STREAMING", "slack_native_streaming")
    )
    # Shortest gap between two chat.appendStream calls of one answer (text in between is coalesced); the first
    # text goes out at once. 0.65 s is 0.92x of appendStream's Tier 4 (100/min; the tier is per workspace).
    slack_stream_interval_secs: float = Field(
        default=0.65, ge=0, validation_alias=_alias("SLACK_STREAM_INTERVAL_SECS", "slack_stream_interval_secs")
    )
    # Shortest gap between two chat.update edits of one message (the fallback when streaming is unavailable).
    # 1.25 s is 0.96x of chat.update's Tier 3 (50/min, per workspace).
    slack_update_interval_secs: float = Field(
        default=1.25, ge=0, validation_alias=_alias("SLACK_UPDATE_INTERVAL_SECS", "slack_update_interval_secs")
    )
    # Longer answers are split into several messages of at most this many characters.
    slack_message_limit: int = Field(
        default=3900, ge=100, le=12000, validation_alias=_alias("SLACK_MESSAGE_LIMIT", "slack_message_limit")
    )
    # Suggested prompts shown when someone opens a new assistant thread; empty for none.
    slack_suggested_prompts: CommaList = Field(
        default_factory=lambda: [
            "Summarize a document I attach",
            "Draw a picture of an idea",
            "Help me write a reply",
        ],
        validation_alias=_alias("SLACK_SUGGESTED_PROMPTS", "slack_suggested_prompts"),
    )

    # --- Discord --------------------------------------------------------------------------------------------
    discord_bot_token: SecretStr | None = Field(default=None, validation_alias=_alias("DISCORD_BOT_TOKEN"))
    discord_api_base: str | None = Field(default=None, validation_alias=_alias("DISCORD_API_BASE"))
    discord_gateway_url: str | None = Field(default=None, validation_alias=_alias("DISCORD_GATEWAY_URL"))
    # AutoShardedClient: one process runs every shard Discord recommends (large bots).
    discord_sharded: bool = Field(default=False, validation_alias=_alias("DISCORD_SHARDED", "discord_sharded"))
    # Guild ids to register slash commands in (instant); empty registers them globally (can take up to an hour).
    discord_command_guilds: CommaList = Field(
        default_factory=list, validation_alias=_alias("DISCORD_COMMAND_GUILDS", "discord_command_guilds")
    )
    # Register (bulk-overwrite) the slash commands at every start.
    discord_sync_commands: bool = Field(
        default=True, validation_alias=_alias("DISCORD_SYNC_COMMANDS", "discord_sync_commands")
    )
    # Seconds discord.py waits for the last GUILD_CREATE before it reports ready.
    discord_guild_ready_timeout_secs: float = Field(
        default=2.0,
        ge=0,
        validation_alias=_alias("DISCORD_GUILD_READY_TIMEOUT_SECS", "discord_guild_ready_timeout_secs"),
    )
    # Minimum seconds between two edits of one streamed message (text in between is coalesced).
    discord_edit_interval_secs: float = Field(
        default=1.0, ge=0, validation_alias=_alias("DISCORD_EDIT_INTERVAL_SECS", "discord_edit_interval_secs")
    )
    # At most this many sends+edits per channel within DISCORD_CHANNEL_WINDOW_SECS (Discord's observed limit).
    discord_channel_max_writes: int = Field(
        default=5, ge=1, validation_alias=_alias("DISCORD_CHANNEL_MAX_WRITES", "discord_channel_max_writes")
    )
    discord_channel_window_secs: float = Field(
        default=5.0, gt=0, validation_alias=_alias("DISCORD_CHANNEL_WINDOW_SECS", "discord_channel_window_secs")
    )
    # The typing indicator lasts ~10 s on Discord; it is refreshed this often while a turn runs.
    discord_typing_interval_secs: float = Field(
        default=8.0, gt=0, validation_alias=_alias("DISCORD_TYPING_INTERVAL_SECS", "discord_typing_interval_secs")
    )
    # Minutes of inactivity before Discord archives a thread the bot creates (60, 1440, 4320 or 10080;
    # other values are rounded up to one of these).
    discord_thread_archive_minutes: int = Field(
        default=1440, ge=1, validation_alias=_alias("DISCORD_THREAD_ARCHIVE_MINUTES", "discord_thread_archive_minutes")
    )
    # Reaction added to a message the bot has taken on; empty for none.
    discord_ack_reaction: str = Field(
        default="👀", validation_alias=_alias("DISCORD_ACK_REACTION", "discord_ack_reaction")
    )

    @field_validator(
        "tools",
        "allowed_users",
        "allowed_channels",
        "allowed_roles",
        "slack_file_origins",
        "slack_suggested_prompts",
        "discord_command_guilds",
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
