"""Settings, built once at start-up and passed down explicitly.

Sources, strongest first: keyword arguments, environment, ``.env``, ``threadline.toml`` (or the file named by
``THREADLINE_CONFIG``). ``SettingsBase`` holds that recipe; the core's settings are ``Settings`` below, and each
adapter keeps its own section beside it (``adapters/slack/settings.py``…), read from the same sources and listed
in the same README table. Every field has a default and a row in that table.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from platformdirs import user_data_path
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bot.defaults import DEFAULT_REALTIME_MODEL, DEFAULT_VOICE
from bot.prices import ModelPrice, parse_prices
from bot.provider_config import PROVIDER_NAME, ProviderConfig, split_model
from bot.store.location import DatabaseLocation, parse_database
from bot.upload_routing import parse_routes

CommaList = Annotated[list[str], NoDecode]
ADMIN_PLATFORMS = ("slack", "discord", "console")
Prices = Annotated[dict[str, ModelPrice], NoDecode]


def alias(*names: str) -> Any:
    return AliasChoices(*names)


def default_database_path() -> Path:
    """``$XDG_DATA_HOME/threadline/threadline.db`` on Linux (platformdirs reads XDG_DATA_HOME each call)."""
    return user_data_path("threadline", appauthor=False) / "threadline.db"


def split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class McpServer(BaseModel):
    """One remote MCP server offered to the model (an entry of ``THREADLINE_MCP_SERVERS``). The value of its auth
    header is read from the environment variable ``authorization_env`` names, so no secret sits in the list."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    url: str = Field(pattern=r"^https?://\S+$")
    authorization_env: str | None = None
    header: str = "Authorization"
    allowed_tools: list[str] | None = None
    description: str | None = None


class SettingsBase(BaseSettings):
    """Where every settings section reads from: env, ``.env``, then ``threadline.toml``."""

    model_config = SettingsConfigDict(
        env_prefix="THREADLINE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        case_sensitive=False,
    )

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


class Settings(SettingsBase):
    """The core's settings: OpenAI, turns, access, the store, logging."""

    # --- OpenAI -------------------------------------------------------------------------------------------
    openai_api_key: SecretStr = Field(default=SecretStr(""), validation_alias=alias("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(default=None, validation_alias=alias("OPENAI_BASE_URL"))
    openai_timeout_secs: float = 120.0
    openai_max_retries: int = 2
    # HTTP transport of the openai SDK: "aiohttp" keeps its cost per request flat with 1,000+ open streams;
    # "httpx" is the SDK default (httpx2), whose connection pool does O(open connections) work per request.
    openai_http_client: Literal["aiohttp", "httpx"] = "aiohttp"
    # Empty conversations made ahead of need, so a new thread's first message skips conversations.create (0: off).
    conversation_pool: int = Field(default=4, ge=0, le=64)
    model: str = "gpt-6.2-sol"
    transcription_model: str = "gpt-transcribe"
    # Spoken replies: a Realtime model (the default) or one that still serves /v1/audio/speech (tts-1, tts-1-hd,
    # *-tts: all shut down 2027-01-06). The model id decides which API is used (bot/speech.py).
    tts_model: str = DEFAULT_REALTIME_MODEL
    tts_voice: str = DEFAULT_VOICE
    # Every wait of a spoken reply (connect, each event) gives up after this; the text answer stays.
    speech_timeout_secs: float = Field(default=30.0, gt=0)
    image_model: str = "gpt-image-2.6-sunburst"
    # Partial previews streamed while /imagine draws (0-3; 0 waits for the finished image).
    image_partial_previews: int = Field(default=2, ge=0, le=3)
    instructions: str = (
        "You are threadline, a helpful assistant in a team chat. Answer concisely; use Markdown sparingly. "
        "Voice notes arrive as transcripts."
    )
    tools: CommaList = Field(default_factory=lambda: ["image_generation", "code_interpreter"])
    # Function tools run by threadline: built-in names, and package.module:function paths (installed packages'
    # ``threadline.tools`` entry points are added to these).
    function_tools: CommaList = Field(default_factory=lambda: ["current_time", "calculate", "get_weather"])
    # Rounds of function calls one answer may run before it is ended with a note.
    tool_rounds: int = Field(default=5, ge=1)
    tool_timeout_secs: float = Field(default=20.0, gt=0)
    open_meteo_url: str = "https://api.open-meteo.com"
    open_meteo_geocoding_url: str = "https://geocoding-api.open-meteo.com"
    # A JSON list of McpServer objects (label, url, authorization_env, header, allowed_tools, description).
    mcp_servers: Annotated[list[McpServer], NoDecode] = Field(default_factory=list)
    # Retrieval: a thread's (and a channel knowledge base's) vector store expires this many days after its last
    # use (it is rebuilt from the kept file ids when needed); indexing new documents waits at most this long.
    vector_store_days: int = Field(default=7, ge=1, le=365)
    indexing_timeout_secs: float = Field(default=120.0, gt=0)
    # Where files go by extension, over the default table (bot/upload_routing.py): "ext=route,…" or a JSON object.
    upload_routes: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # Memory of each thread's code-interpreter container (the values containers.create accepts).
    container_memory: Literal["1g", "4g", "16g", "64g"] = "1g"
    # JSON answers ("json:" prefix, Discord's /ask json) follow this JSON schema (strict) instead of any object.
    json_schema_file: Path | None = None
    voice_replies: Literal["auto", "always", "never"] = "auto"
    # threadline doctor (and a log line at start-up) warn this many days before a model in use shuts down.
    model_shutdown_warn_days: int = Field(default=90, ge=0)
    # Audio longer than this is cut into pieces that are transcribed in order (files over 25 MB always are).
    transcribe_chunk_secs: float = Field(default=600.0, ge=30)
    # Longer recordings are refused, with this limit named.
    audio_max_minutes: float = Field(default=60.0, gt=0)

    # --- Local and OpenAI-compatible models (bot/local_engine.py) ------------------------------------------
    # [providers.NAME] tables (or THREADLINE_PROVIDERS as a JSON object): a model id NAME/model goes to that server.
    providers: Annotated[dict[str, ProviderConfig], NoDecode] = Field(default_factory=dict)
    # A local model's context budget (tokens) when neither its provider's context_tokens nor GET /v1/models says.
    local_context_tokens: int = Field(default=8192, ge=512)
    # Turns dropped from the budget are summarised once by the same model (else just dropped).
    local_summarize: bool = False
    # With an OpenAI key: voice notes for a local model are transcribed by OpenAI (else refused).
    local_openai_transcription: bool = False

    # --- Turns and access -------------------------------------------------------------------------------------
    turn_timeout_secs: float = 300.0
    max_concurrent_turns: int = 1000
    max_attachment_bytes: int = 25 * 1024 * 1024
    # Audio and voice notes may be larger (they are split before transcription).
    max_audio_bytes: int = 200 * 1024 * 1024
    allowed_users: CommaList = Field(default_factory=list)
    allowed_channels: CommaList = Field(default_factory=list)
    allowed_roles: CommaList = Field(default_factory=list)
    allow_dms: bool = True
    # Deny beats allow. Guilds are Discord servers. Admins change all of these at run time (`access …`, stored).
    denied_users: CommaList = Field(default_factory=list)
    denied_channels: CommaList = Field(default_factory=list)
    denied_roles: CommaList = Field(default_factory=list)
    allowed_guilds: CommaList = Field(default_factory=list)
    denied_guilds: CommaList = Field(default_factory=list)
    # How long a replica keeps the stored access rules before reading them again (the one that changed them at once).
    access_cache_secs: float = Field(default=5.0, ge=0, le=300)
    # A refused user is told why at most once an hour (stored: across replicas), never, or every time.
    refusal_replies: Literal["hourly", "never", "always"] = "hourly"

    # --- Admins ---------------------------------------------------------------------------------------------
    # Platform-prefixed ids: slack:U0123ABCD, discord:123456789012345678, console:<login name>.
    admins: CommaList = Field(default_factory=list)
    # On Discord, members with Manage Server are admins too.
    manage_server_admins: bool = True

    # --- Budgets (tokens = input + output from the usage ledger; 0: no limit) and prices ----------------------
    # Per user per UTC day/month, per channel per UTC day/month; `budget …` (admins) overrides them per user or channel.
    user_daily_tokens: int = Field(default=0, ge=0)
    user_monthly_tokens: int = Field(default=0, ge=0)
    channel_daily_tokens: int = Field(default=0, ge=0)
    channel_monthly_tokens: int = Field(default=0, ge=0)
    # A token bucket per user, kept in the store (holds across replicas and restarts): bursts of this many.
    user_requests_per_minute: float = Field(default=0, ge=0)
    # USD per 1M tokens per model, for cost estimates (bot/prices.py): THREADLINE_PRICES JSON or a [prices] table.
    prices: Prices = Field(default_factory=dict)

    # --- Durable turns (several replicas share one PostgreSQL database) ------------------------------------------
    # A replica that dies (SIGKILL, a lost machine) loses its threads after this long; its heartbeat renews them
    # every third of it. Another replica then takes them over.
    lease_secs: float = Field(default=15.0, ge=1, le=300)
    # An answer cut short by a crash is asked again by itself (else its thread is told, and `retry` asks again).
    retry_interrupted: bool = False

    # --- Health and metrics ---------------------------------------------------------------------------------
    # /healthz and /metrics (Prometheus) on this port, with any adapter; unset: no server. Slack's HTTP mode
    # shares it when SLACK_HTTP_PORT is the same port.
    http_port: int | None = Field(default=None, ge=0, le=65535)
    http_host: str = "0.0.0.0"

    # --- Store ----------------------------------------------------------------------------------------------
    # A file path or sqlite:///PATH (SQLite, one process), or postgresql://USER:PASSWORD@HOST:PORT/DB.
    database: str = Field(
        default_factory=lambda: str(default_database_path()),
        validation_alias=alias("THREADLINE_DATABASE", "database"),
    )
    # PostgreSQL only: connections in this process's pool.
    database_pool_size: int = Field(default=10, ge=1)
    dedupe_retention_hours: float = 72.0
    log_level: str = "INFO"
    # "json": every log line one JSON object (time, level, logger, message and structured fields such as audit's).
    log_format: Literal["text", "json"] = "text"

    @field_validator("mcp_servers", mode="before")
    @classmethod
    def _mcp_servers(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else []
        return value

    @field_validator("providers", mode="before")
    @classmethod
    def _providers(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if isinstance(value, dict):
            for name in value:
                if not PROVIDER_NAME.match(str(name)):
                    raise ValueError(f"provider name {name!r}: use letters, digits, - and _ only")
        return value

    def provider_of(self, model: str) -> tuple[str | None, str]:
        """(provider name, model id on its server) for a model id; (None, model) for OpenAI."""
        return split_model(model, self.providers)

    @field_validator("upload_routes", mode="before")
    @classmethod
    def _upload_routes(cls, value: Any) -> Any:
        return parse_routes(value)

    @field_validator(
        "tools",
        "function_tools",
        "allowed_users",
        "allowed_channels",
        "allowed_roles",
        "denied_users",
        "denied_channels",
        "denied_roles",
        "allowed_guilds",
        "denied_guilds",
        "admins",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        return split_commas(value)

    @field_validator("admins")
    @classmethod
    def _admins(cls, value: list[str]) -> list[str]:
        for entry in value:
            platform, _, user = entry.partition(":")
            if platform not in ADMIN_PLATFORMS or not user.strip():
                raise ValueError(
                    f"{entry!r} is not an admin id: write the platform, a colon and the user id, "
                    "e.g. slack:U0123ABCD, discord:123456789012345678 or console:alice"
                )
        return value

    @field_validator("prices", mode="before")
    @classmethod
    def _prices(cls, value: Any) -> Any:
        return parse_prices(value)

    @field_validator("database", mode="before")
    @classmethod
    def _database(cls, value: Any) -> Any:
        text = str(value) if isinstance(value, Path) else value
        if isinstance(text, str):
            parse_database(text)  # an unknown scheme is a settings error, named at start-up
        return text

    @property
    def database_location(self) -> DatabaseLocation:
        return parse_database(self.database)
