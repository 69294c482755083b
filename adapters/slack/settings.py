"""Slack's settings section: read from the same sources as the core's (env, ``.env``, ``threadline.toml``)
under the same names, and listed in the README's settings table."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator

from bot.settings import CommaList, SettingsBase, alias, split_commas


class SlackSettings(SettingsBase):
    # --- Slack ----------------------------------------------------------------------------------------------
    slack_bot_token: SecretStr | None = Field(default=None, validation_alias=alias("SLACK_BOT_TOKEN"))
    slack_app_token: SecretStr | None = Field(default=None, validation_alias=alias("SLACK_APP_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(default=None, validation_alias=alias("SLACK_SIGNING_SECRET"))
    slack_http_port: int | None = Field(default=None, validation_alias=alias("SLACK_HTTP_PORT"))
    slack_api_url: str = Field(
        default="https://slack.com/api/", validation_alias=alias("SLACK_API_URL", "slack_api_url")
    )
    slack_file_origins: CommaList = Field(
        default_factory=lambda: ["https://files.slack.com"],
        validation_alias=alias("SLACK_FILE_ORIGINS", "slack_file_origins"),
    )
    # HTTP mode listens on this address (with SLACK_HTTP_PORT); Slack posts events to /slack/events.
    slack_http_host: str = Field(default="0.0.0.0", validation_alias=alias("SLACK_HTTP_HOST", "slack_http_host"))
    # Follow-ups in a thread the bot already answers need a new @mention when true.
    slack_require_mention: bool = Field(
        default=False, validation_alias=alias("SLACK_REQUIRE_MENTION", "slack_require_mention")
    )
    # Stream answers with chat.startStream/appendStream/stopStream; false: post once, then chat.update.
    slack_native_streaming: bool = Field(
        default=True, validation_alias=alias("SLACK_NATIVE_STREAMING", "slack_native_streaming")
    )
    # Shortest gap between two chat.appendStream calls of one answer (text in between is coalesced); the first
    # text goes out at once. 0.65 s is 0.92x of appendStream's Tier 4 (100/min; the tier is per workspace).
    slack_stream_interval_secs: float = Field(
        default=0.65, ge=0, validation_alias=alias("SLACK_STREAM_INTERVAL_SECS", "slack_stream_interval_secs")
    )
    # Shortest gap between two chat.update edits of one message (the fallback when streaming is unavailable).
    # 1.25 s is 0.96x of chat.update's Tier 3 (50/min, per workspace).
    slack_update_interval_secs: float = Field(
        default=1.25, ge=0, validation_alias=alias("SLACK_UPDATE_INTERVAL_SECS", "slack_update_interval_secs")
    )
    # Slack counts its rate tiers per minute; every answer in a workspace shares one budget over this window
    # (adapters/slack/budget.py). Only tests and benches against a fake Slack shrink it.
    slack_rate_window_secs: float = Field(
        default=60.0, gt=0, validation_alias=alias("SLACK_RATE_WINDOW_SECS", "slack_rate_window_secs")
    )
    # Longer answers are split into several messages of at most this many characters.
    slack_message_limit: int = Field(
        default=3900, ge=100, le=12000, validation_alias=alias("SLACK_MESSAGE_LIMIT", "slack_message_limit")
    )
    # Suggested prompts shown when someone opens the Messages tab (at most once a day) or a new assistant thread;
    # empty for none.
    slack_suggested_prompts: CommaList = Field(
        default_factory=lambda: [
            "Summarize a document I attach",
            "Draw a picture of an idea",
            "Help me write a reply",
        ],
        validation_alias=alias("SLACK_SUGGESTED_PROMPTS", "slack_suggested_prompts"),
    )

    @field_validator("slack_file_origins", "slack_suggested_prompts", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        return split_commas(value)

    @property
    def configured(self) -> bool:
        """True when the bot token is set: ``threadline run`` then starts this adapter."""
        token = self.slack_bot_token
        return bool(token and token.get_secret_value())
