"""Discord set-up and checks: endpoints, intents, the client, the invite URL, and ``threadline doctor``."""

from __future__ import annotations

from typing import Any

import aiohttp
import discord
import yarl

from adapters.discord.settings import DiscordSettings
from bot.errors import StartupError
from bot.gateway import Gateway

DEFAULT_API_BASE = "https://discord.com/api/v10"
DEFAULT_GATEWAY = "wss://gateway.discord.gg/"
# Application flags that mean the Message Content intent is switched on (verified apps / apps under 100 guilds).
GATEWAY_MESSAGE_CONTENT = 1 << 18
GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19
PORTAL_TOGGLE = "Developer Portal → your application → Bot → Privileged Gateway Intents → Message Content Intent"
INTENT_MISSING = (
    "Discord refused the connection: the Message Content intent is not enabled for this bot, so it cannot read "
    f"messages. Turn it on in the Discord {PORTAL_TOGGLE}, save, and start threadline again."
)
BAD_TOKEN = "Discord rejected DISCORD_BOT_TOKEN (401 Unauthorized). Copy a fresh one from the Developer Portal → Bot."
SCOPES = ("bot", "applications.commands")


def invite_permissions() -> discord.Permissions:
    """Exactly what the bot uses: post and stream answers, open threads, upload files, reply to a message (needs
    message history), react, slash commands, and spoken replies as native voice messages."""
    return discord.Permissions(
        send_messages=True,
        create_public_threads=True,
        send_messages_in_threads=True,
        attach_files=True,
        read_message_history=True,
        add_reactions=True,
        use_application_commands=True,
        send_voice_messages=True,
    )


def invite_url(application_id: int) -> str:
    return discord.utils.oauth_url(application_id, permissions=invite_permissions(), scopes=SCOPES)


def api_base(settings: DiscordSettings) -> str:
    return (settings.discord_api_base or DEFAULT_API_BASE).rstrip("/")


def configure_endpoints(settings: DiscordSettings) -> None:
    """Point discord.py at the configured REST base and gateway (process-wide class attributes)."""
    discord.http.Route.BASE = api_base(settings)
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url or DEFAULT_GATEWAY)


def gateway_intents() -> discord.Intents:
    """Guilds (channels, threads), guild and DM messages, the privileged Message Content intent, and guild and DM
    reactions (⏹ stops an answer, 👍/👎 rate one; not privileged: no portal toggle)."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = True
    intents.guild_reactions = True
    intents.dm_reactions = True
    return intents


def shard_plan(settings: DiscordSettings) -> tuple[int | None, list[int] | None]:
    """``DISCORD_SHARD_COUNT`` and ``DISCORD_SHARD_IDS`` checked: (count, this process's ids), None where unset."""
    count, ids = settings.discord_shard_count, settings.discord_shard_ids
    if count is not None and count < 1:
        raise StartupError(f"DISCORD_SHARD_COUNT must be at least 1, not {count}")
    if not ids:
        return count, None
    if count is None:
        raise StartupError("DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT (the total number of shards) as well")
    bad = [i for i in ids if not i.isdigit() or int(i) >= count]
    if bad:
        raise StartupError(
            f"DISCORD_SHARD_IDS must list shard numbers from 0 to {count - 1} (DISCORD_SHARD_COUNT is {count}), "
            f"not {', '.join(repr(i) for i in bad)}"
        )
    return count, sorted({int(i) for i in ids})


def make_client(settings: DiscordSettings) -> discord.Client:
    # threadline never joins voice channels (voice *messages* are plain uploads), so discord.py's start-up
    # warnings about PyNaCl/davey would only mislead; these class attributes only gate those warnings.
    discord.VoiceClient.warn_nacl = False
    discord.VoiceClient.warn_dave = False
    options: dict[str, Any] = {
        "intents": gateway_intents(),
        "guild_ready_timeout": settings.discord_guild_ready_timeout_secs,
        "allowed_mentions": discord.AllowedMentions.none(),  # a model's "@everyone" must never ping anyone
        "max_messages": 1000,
    }
    count, ids = shard_plan(settings)
    if count is not None:  # this process runs these shards (all of them without ids) of ``count``
        if ids is not None:
            options["shard_ids"] = ids
        return discord.AutoShardedClient(shard_count=count, **options)
    if settings.discord_sharded:  # every shard Discord recommends, in this process
        return discord.AutoShardedClient(**options)
    return discord.Client(**options)


async def doctor_checks(gateway: Gateway, settings: DiscordSettings) -> list[tuple[bool, str]]:
    """Is the token valid (GET /users/@me), and is the Message Content intent on (application flags)?"""
    token = settings.discord_bot_token.get_secret_value() if settings.discord_bot_token else ""
    base = api_base(settings)
    headers = {"Authorization": f"Bot {token}"}
    try:
        async with gateway.http.get(f"{base}/users/@me", headers=headers, allow_redirects=False) as resp:
            if resp.status == 401:
                return [(False, f"Discord: {BAD_TOKEN}")]
            if resp.status != 200:
                return [(False, f"Discord: GET /users/@me answered HTTP {resp.status}")]
            me = await resp.json(content_type=None)
        async with gateway.http.get(f"{base}/oauth2/applications/@me", headers=headers, allow_redirects=False) as resp:
            if resp.status != 200:
                return [(False, f"Discord: GET /oauth2/applications/@me answered HTTP {resp.status}")]
            app = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return [(False, f"Discord: could not reach {base}: {type(exc).__name__}")]
    results = [(True, f"Discord: token accepted for bot {me.get('username')} ({me.get('id')})")]
    flags = int(app.get("flags") or 0)
    if flags & (GATEWAY_MESSAGE_CONTENT | GATEWAY_MESSAGE_CONTENT_LIMITED):
        results.append((True, "Discord: Message Content intent is enabled"))
    else:
        results.append((False, f"Discord: Message Content intent is OFF: enable it in the {PORTAL_TOGGLE}"))
    results.append((True, f"Discord: invite URL {invite_url(int(app.get('id') or me.get('id')))}"))
    return results
