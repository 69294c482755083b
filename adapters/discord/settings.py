"""Discord's settings section: read from the same sources as the core's (env, ``.env``, ``threadline.toml``)
under the same names, and listed in the README's settings table."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator

from bot.settings import CommaList, SettingsBase, alias, split_commas


class DiscordSettings(SettingsBase):
    # --- Discord --------------------------------------------------------------------------------------------
    discord_bot_token: SecretStr | None = Field(default=None, validation_alias=alias("DISCORD_BOT_TOKEN"))
    discord_api_base: str | None = Field(default=None, validation_alias=alias("DISCORD_API_BASE"))
    discord_gateway_url: str | None = Field(default=None, validation_alias=alias("DISCORD_GATEWAY_URL"))
    # AutoShardedClient: one process runs every shard Discord recommends (large bots).
    discord_sharded: bool = Field(default=False, validation_alias=alias("DISCORD_SHARDED", "discord_sharded"))
    # Shards split across processes: every process gets the same count and its own shard ids (all of them when
    # unset). Discord sends a guild's events to shard (guild id >> 22) % count, DMs to shard 0.
    discord_shard_count: int | None = Field(
        default=None, validation_alias=alias("DISCORD_SHARD_COUNT", "discord_shard_count")
    )
    discord_shard_ids: CommaList = Field(
        default_factory=list, validation_alias=alias("DISCORD_SHARD_IDS", "discord_shard_ids")
    )
    # Guild ids to register slash commands in (instant); empty registers them globally (can take up to an hour).
    discord_command_guilds: CommaList = Field(
        default_factory=list, validation_alias=alias("DISCORD_COMMAND_GUILDS", "discord_command_guilds")
    )
    # Register (bulk-overwrite) the slash commands at every start.
    discord_sync_commands: bool = Field(
        default=True, validation_alias=alias("DISCORD_SYNC_COMMANDS", "discord_sync_commands")
    )
    # Seconds discord.py waits for the last GUILD_CREATE before it reports ready.
    discord_guild_ready_timeout_secs: float = Field(
        default=2.0,
        ge=0,
        validation_alias=alias("DISCORD_GUILD_READY_TIMEOUT_SECS", "discord_guild_ready_timeout_secs"),
    )
    # Minimum seconds between two edits of one streamed message (text in between is coalesced).
    discord_edit_interval_secs: float = Field(
        default=1.0, ge=0, validation_alias=alias("DISCORD_EDIT_INTERVAL_SECS", "discord_edit_interval_secs")
    )
    # At most this many sends+edits per channel within DISCORD_CHANNEL_WINDOW_SECS (Discord's observed limit).
    discord_channel_max_writes: int = Field(
        default=5, ge=1, validation_alias=alias("DISCORD_CHANNEL_MAX_WRITES", "discord_channel_max_writes")
    )
    discord_channel_window_secs: float = Field(
        default=5.0, gt=0, validation_alias=alias("DISCORD_CHANNEL_WINDOW_SECS", "discord_channel_window_secs")
    )
    # Bot-wide: at most this many REST requests within DISCORD_GLOBAL_WINDOW_SECS (Discord's global limit is 50
    # per second per bot); beyond it answer text goes first, typing is dropped and the 👀 reaction skipped.
    discord_global_max_requests: int = Field(
        default=50, ge=1, validation_alias=alias("DISCORD_GLOBAL_MAX_REQUESTS", "discord_global_max_requests")
    )
    discord_global_window_secs: float = Field(
        default=1.0, gt=0, validation_alias=alias("DISCORD_GLOBAL_WINDOW_SECS", "discord_global_window_secs")
    )
    # The typing indicator lasts ~10 s on Discord; it is refreshed this often while a turn runs.
    discord_typing_interval_secs: float = Field(
        default=8.0, gt=0, validation_alias=alias("DISCORD_TYPING_INTERVAL_SECS", "discord_typing_interval_secs")
    )
    # Minutes of inactivity before Discord archives a thread the bot creates (60, 1440, 4320 or 10080;
    # other values are rounded up to one of these).
    discord_thread_archive_minutes: int = Field(
        default=1440, ge=1, validation_alias=alias("DISCORD_THREAD_ARCHIVE_MINUTES", "discord_thread_archive_minutes")
    )
    # Reaction added to a message the bot has taken on; empty for none.
    discord_ack_reaction: str = Field(
        default="👀", validation_alias=alias("DISCORD_ACK_REACTION", "discord_ack_reaction")
    )
    # The bot adds 👍 and 👎 to the last message of each finished answer; a user's click on one is stored as feedback
    # (``threadline feedback``). Users' 👍/👎 on answers count either way.
    discord_feedback_reactions: bool = Field(
        default=True, validation_alias=alias("DISCORD_FEEDBACK_REACTIONS", "discord_feedback_reactions")
    )

    @field_validator("discord_command_guilds", "discord_shard_ids", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        return split_commas(value)

    @property
    def configured(self) -> bool:
        """True when the bot token is set: ``threadline run`` then starts this adapter."""
        token = self.discord_bot_token
        return bool(token and token.get_secret_value())
