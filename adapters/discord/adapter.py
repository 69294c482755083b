"""Discord adapter on discord.py: a mention in a channel opens a thread that is one conversation, follow-ups in
the bot's threads need no mention, every DM is answered, and answers stream by throttled edits.

Message id dedupe (``discord:msg:<id>``) makes a MESSAGE_CREATE replayed after a gateway RESUME get one answer.
A mention's thread is created when its turn starts (after the dedupe claim); its id is the message's id, so the
thread key is known up front. discord.py's own 429 handling stays on; the per-channel throttle keeps us under it.

``DISCORD_API_BASE`` and ``DISCORD_GATEWAY_URL`` set ``discord.http.Route.BASE`` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``: class attributes, so they are process-wide by nature of
discord.py (there is no per-client option). They are set when the adapter is built.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import discord

from adapters.discord import convert
from adapters.discord.commands import build_command_tree, sync_commands
from adapters.discord.reply import MESSAGE_LIMIT, DiscordReply
from adapters.discord.settings import DiscordSettings
from adapters.discord.setup import (
    BAD_TOKEN,
    INTENT_MISSING,
    api_base,
    configure_endpoints,
    doctor_checks,
    invite_url,
    make_client,
)
from adapters.discord.throttle import ChannelThrottle
from bot.errors import StartupError
from bot.gateway import Gateway
from bot.replies import TextReply
from bot.types import IncomingMessage, ThreadKey, TurnKind

log = logging.getLogger("threadline.discord")

RESET_WHERE = "Use /reset inside one of my threads (or in a DM): each thread is its own conversation."
ANSWERED_TYPES = (discord.MessageType.default, discord.MessageType.reply)
SHUTDOWN_GRACE_SECS = 10.0


Opener = Callable[[], Awaitable[discord.abc.Messageable]]


def _already_open(channel: discord.abc.Messageable) -> Opener:
    async def opened() -> discord.abc.Messageable:
        return channel

    return opened


def _content(message: discord.Message) -> str:
    """The message's text; discord.py keeps whatever the payload held (a null content stays None)."""
    return message.content if isinstance(message.content, str) else ""


async def _reply_to(message: discord.Message, text: str) -> None:
    """A reply in the message's channel that still goes out if the user has deleted the message meanwhile."""
    reference = message.to_reference(fail_if_not_exists=False)
    await message.channel.send(text, reference=reference, mention_author=False)


def _mentions(message: discord.Message) -> list[discord.User | discord.Member]:
    return list(getattr(message, "mentions", ()))


def _attachment_info(att: discord.Attachment) -> convert.AttachmentInfo:
    return convert.attachment_info(
        filename=att.filename,
        content_type=att.content_type,
        size=att.size,
        is_voice=att.is_voice_message(),
        duration_secs=att.duration,
        read=att.read,
    )


def _guard_parsers(client: discord.Client) -> None:
    """discord.py parses gateway events unguarded: one payload it cannot read (a field missing or of another type)
    raises out of its gateway loop and ends the connection for good, and with it the bot. Each parser is wrapped so
    such an event is dropped with one log line instead. (``parsers`` is discord.py's event → parser table, read by
    its websocket at every connect; it is filled in when the client is made.)"""
    parsers: dict[str, Callable[[Any], None]] | None = getattr(client._connection, "parsers", None)
    if not isinstance(parsers, dict):
        log.warning("discord.py has no parser table to guard; a malformed gateway event could end the connection")
        return
    for event, parse in list(parsers.items()):
        parsers[event] = _guarded(event, parse)


def _guarded(event: str, parse: Callable[[Any], None]) -> Callable[[Any], None]:
    def parse_or_drop(data: Any) -> None:
        try:
            parse(data)
        except Exception as exc:
            log.warning("dropped a Discord %s event that discord.py could not read (%s)", event, type(exc).__name__)

    return parse_or_drop


class DiscordAdapter:
    name = convert.PLATFORM

    def __init__(self, gateway: Gateway, settings: DiscordSettings) -> None:
        self.gateway = gateway
        self.settings = settings
        for guild_id in self.settings.discord_command_guilds:
            if not guild_id.isdigit():
                raise StartupError(f"DISCORD_COMMAND_GUILDS must list numeric guild ids, not {guild_id!r}")
        configure_endpoints(self.settings)
        self.client = make_client(self.settings)
        _guard_parsers(self.client)
        self.throttle = ChannelThrottle(
            self.settings.discord_channel_max_writes, self.settings.discord_channel_window_secs
        )
        self.tree = build_command_tree(self.client, self)
        self.ready = asyncio.Event()
        self._in_flight: set[asyncio.Future[None]] = set()
        self._closing = False
        self.client.event(self.on_ready)
        self.client.event(self.on_message)

    # --- lifecycle ------------------------------------------------------------------------------------------
    async def run(self) -> None:
        token = self.settings.discord_bot_token.get_secret_value() if self.settings.discord_bot_token else ""
        if not token:
            raise StartupError("DISCORD_BOT_TOKEN is not set")
        try:
            await self._login(token)
            application_id = self.client.application_id
            if application_id is not None:
                print(f"Discord: invite the bot with {invite_url(application_id)}", flush=True)
            await self._sync_commands()
            await self._use_configured_gateway_for_shards()
            try:
                await self.client.connect(reconnect=True)
            except discord.PrivilegedIntentsRequired:
                raise StartupError(INTENT_MISSING) from None
            except discord.ConnectionClosed as exc:
                if exc.code == 4004:
                    raise StartupError(BAD_TOKEN) from None
                raise
        finally:
            if not self.client.is_closed():
                await self.client.close()

    async def _login(self, token: str) -> None:
        try:
            await self.client.login(token)
        except discord.LoginFailure:
            raise StartupError(BAD_TOKEN) from None
        except (aiohttp.ClientError, OSError, discord.HTTPException) as exc:
            raise StartupError(f"could not reach Discord at {api_base(self.settings)}: {exc}") from None

    async def _sync_commands(self) -> None:
        if not self.settings.discord_sync_commands:
            return
        try:
            log.info(await sync_commands(self.tree, list(self.settings.discord_command_guilds)))
        except discord.HTTPException as exc:
            log.warning(
                "could not register the slash commands (%s); invite the bot with the applications.commands "
                "scope (the printed invite URL has it)",
                exc,
            )

    async def _use_configured_gateway_for_shards(self) -> None:
        """AutoShardedClient takes the gateway URL from /gateway/bot; keep a configured proxy URL instead."""
        sharded = isinstance(self.client, discord.AutoShardedClient)
        if sharded and self.settings.discord_gateway_url and self.client.shard_count is None:
            self.client.shard_count, _, _ = await self.client.http.get_bot_gateway()

    async def close(self) -> None:
        """Stop taking messages, let answers in progress finish (they need the connection), then disconnect."""
        self._closing = True
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=SHUTDOWN_GRACE_SECS)
        if not self.client.is_closed():
            await self.client.close()

    async def _submit(self, incoming: IncomingMessage, reply: DiscordReply) -> bool:
        """Hand a message to the turn handler; False when it was a duplicate delivery."""
        submission = await self.gateway.submit(incoming, reply)
        if submission.done is None:
            return False
        self._in_flight.add(submission.done)
        submission.done.add_done_callback(self._in_flight.discard)
        return True

    async def on_ready(self) -> None:
        user = self.client.user
        log.info("Discord: connected as %s to %d guild(s)", user, len(self.client.guilds))
        self.ready.set()

    # --- messages -------------------------------------------------------------------------------------------
    async def on_message(self, message: discord.Message) -> None:
        try:
            await self._on_message(message)
        except Exception:
            log.exception("could not handle Discord message %s", message.id)

    async def _on_message(self, message: discord.Message) -> None:
        me = self.client.user
        if self._closing or me is None or message.type not in ANSWERED_TYPES:
            return
        author = getattr(message, "author", None)  # discord.py leaves fields unset that the payload lacked
        if author is None:
            log.debug("ignored Discord message %s: it has no author", message.id)
            return
        if author.bot or author.id == me.id:
            return
        channel = message.channel
        guild = message.guild
        if guild is None:
            await self._answer(message, convert.dm_key(channel.id), _already_open(channel), is_dm=True)
            return
        role = guild.self_role
        mentioned = convert.mentions_bot(
            user_ids=(u.id for u in _mentions(message)),
            role_ids=convert.role_mention_ids(_content(message)),
            bot_id=me.id,
            bot_role_id=role.id if role else None,
        )
        if isinstance(channel, discord.PartialMessageable):
            resolved = await self._resolve_uncached(channel)
            if resolved is None:
                return
            channel = resolved  # type: ignore[assignment]  # fetch_channel returns one of the channel classes
        if isinstance(channel, discord.Thread):
            key = convert.guild_key(guild.id, channel.parent_id, channel.id)
            owned = channel.owner_id == me.id or await self.gateway.owns(key)
            if owned:
                await self._answer(message, key, _already_open(channel))
            elif mentioned:  # a mention in someone else's thread makes it a conversation (the gateway claims it)
                await self._answer(message, key, _already_open(channel), early_reply=True)
        elif not mentioned:
            return
        elif isinstance(channel, discord.TextChannel):
            key = convert.guild_key(guild.id, channel.id, message.id)  # the thread's id will be the message's
            name = convert.thread_name(self._text_of(message))
            opener = self._thread_opener(message, name)
            await self._answer(message, key, opener, early_reply=True, in_channel=True)
        else:  # text chat of a voice or stage channel: no threads there, one conversation per channel
            await self._answer(message, convert.guild_key(guild.id, channel.id, channel.id), _already_open(channel))

    async def _resolve_uncached(self, channel: discord.PartialMessageable) -> discord.abc.Messageable | None:
        """A thread discord.py has not cached (e.g. unarchived while we were away): ask Discord what it is."""
        try:
            fetched = await self.client.fetch_channel(channel.id)
        except discord.HTTPException as exc:
            log.info("could not look up channel %s: %s", channel.id, exc)
            return None
        return fetched if isinstance(fetched, discord.abc.Messageable) else None

    def _text_of(self, message: discord.Message) -> str:
        me = self.client.user
        guild = message.guild
        role = guild.self_role if guild else None
        content = _content(message)
        # discord.py's content-derived mention properties would raise on a null content; these read the ids here.
        channels = (guild.get_channel_or_thread(cid) for cid in convert.channel_mention_ids(content)) if guild else ()
        return convert.clean_text(
            content,
            bot_id=me.id if me else 0,
            bot_role_id=role.id if role else None,
            user_names={u.id: convert.text_or(u.display_name, "someone") for u in _mentions(message)},
            role_names={r.id: convert.text_or(r.name, "role") for r in getattr(message, "role_mentions", ())},
            channel_names={c.id: convert.text_or(getattr(c, "name", None), "channel") for c in channels if c},
        )

    def _thread_opener(self, source: discord.Message, name: str) -> Opener:
        async def open_thread() -> discord.abc.Messageable:
            minutes = convert.archive_minutes(self.settings.discord_thread_archive_minutes)
            try:
                thread = await source.create_thread(name=name, auto_archive_duration=minutes)  # type: ignore[arg-type]
            except discord.HTTPException as exc:
                if exc.code != 160004:  # 160004: this message already has a thread (e.g. a retried turn)
                    log.warning("could not create a thread (%s); answering in the channel", exc)
                    return source.channel
                found = source.guild.get_thread(source.id) if source.guild else None
                thread = found or await self.client.fetch_channel(source.id)  # type: ignore[assignment]
            return thread

        return open_thread

    async def _answer(
        self,
        message: discord.Message,
        key: ThreadKey,
        open_channel: Opener,
        *,
        is_dm: bool = False,
        early_reply: bool = False,
        in_channel: bool = False,
    ) -> None:
        """Submit a turn. ``early_reply``: a refusal before the channel is opened replies to the message;
        ``in_channel``: the message was a mention in a plain channel (text commands apply to the channel)."""
        text = self._text_of(message)
        incoming = convert.incoming(
            key=key,
            user_id=message.author.id,
            user_name=message.author.display_name,
            text=text,
            dedupe_key=convert.message_dedupe_key(message.id),
            attachments=[_attachment_info(a) for a in message.attachments],
            roles=[r.id for r in getattr(message.author, "roles", ())],
            is_dm=is_dm,
            max_bytes=self.gateway.max_attachment_bytes,
        )
        line = convert.text_command(text)
        if line is not None:
            await self._text_command(incoming, line, message, in_channel=in_channel)
            return
        reply = self._reply(open_channel, early=self._early_reply(message) if early_reply else None)
        if await self._submit(incoming, reply):  # False: a duplicate (e.g. replayed after a RESUME)
            await self._acknowledge(message)

    def _reply(self, open_channel: Opener, *, early: Callable[[str], Awaitable[None]] | None = None) -> DiscordReply:
        return DiscordReply(
            open_channel=open_channel,
            throttle=self.throttle,
            http=self.client.http,
            edit_interval=self.settings.discord_edit_interval_secs,
            typing_interval=self.settings.discord_typing_interval_secs,
            early_reply=early,
        )

    def _early_reply(self, source: discord.Message) -> Callable[[str], Awaitable[None]]:
        """A refusal before any thread exists is a reply to the message, in its channel."""

        async def reply(text: str) -> None:
            async with self.throttle.write(source.channel.id):
                await _reply_to(source, text)

        return reply

    async def _text_command(
        self, incoming: IncomingMessage, line: str, message: discord.Message, *, in_channel: bool
    ) -> None:
        """``/reset``, ``/model``, ``/usage``, ``/help`` typed as text; in a plain channel they apply to it."""

        async def send(answer: str) -> None:
            async with self.throttle.write(message.channel.id):
                await _reply_to(message, answer)

        key = incoming.key
        if in_channel:
            key = convert.guild_key(int(key.workspace), int(key.channel), int(key.channel))
            if line.split(" ", 1)[0].lower() == "reset":  # a channel has no conversation to reset: say where
                await send(RESET_WHERE)
                return
        await self.gateway.command(
            line,
            key=key,
            user=incoming.user_id,
            roles=incoming.user_roles,
            is_dm=incoming.is_dm,
            dedupe_keys=incoming.dedupe_keys,
            reply=TextReply(send),
        )

    async def _acknowledge(self, message: discord.Message) -> None:
        if not self.settings.discord_ack_reaction:
            return
        try:
            await message.add_reaction(self.settings.discord_ack_reaction)
        except discord.HTTPException as exc:
            log.debug("could not add the acknowledgement reaction: %s", exc)

    # --- slash commands -------------------------------------------------------------------------------------
    def _interaction_key(self, interaction: discord.Interaction) -> ThreadKey | None:
        """The conversation a command applies to: this thread or DM; None in a plain channel."""
        channel = interaction.channel
        if interaction.guild_id is None:
            return convert.dm_key(interaction.channel_id or 0)
        if isinstance(channel, discord.Thread):
            return convert.guild_key(interaction.guild_id, channel.parent_id, channel.id)
        return None

    async def command(self, interaction: discord.Interaction, line: str) -> None:
        key = self._interaction_key(interaction)
        if key is None:
            if line == "reset":
                await interaction.response.send_message(RESET_WHERE, ephemeral=True)
                return
            channel_id = interaction.channel_id or 0
            key = convert.guild_key(interaction.guild_id or 0, channel_id, channel_id)

        async def send(answer: str) -> None:
            await interaction.response.send_message(answer, ephemeral=True)

        await self.gateway.command(
            line,
            key=key,
            user=str(interaction.user.id),
            roles=_roles(interaction.user),
            is_dm=interaction.guild_id is None,
            reply=TextReply(send),
        )

    async def ask(self, interaction: discord.Interaction, prompt: str, file: discord.Attachment | None) -> None:
        """``/ask``: the question is echoed publicly; in a channel a thread is opened from that echo and the
        answer streams there (like a mention); in a thread or DM the answer streams right below it."""
        await self._slash_turn(interaction, prompt, file, echo="asked")

    async def imagine(self, interaction: discord.Interaction, prompt: str, size: str, quality: str) -> None:
        """``/imagine``: like ``/ask``, but the prompt is drawn (and follow-ups in the thread can edit it)."""
        options = {"kind": TurnKind.IMAGINE, "image_size": size, "image_quality": quality}
        await self._slash_turn(interaction, prompt, None, echo="asked me to draw", options=options)

    async def _slash_turn(
        self,
        interaction: discord.Interaction,
        prompt: str,
        file: discord.Attachment | None,
        *,
        echo: str,
        options: dict[str, Any] | None = None,
    ) -> None:
        channel = interaction.channel
        key = self._interaction_key(interaction)
        guild_id = interaction.guild_id
        user = interaction.user
        probe = IncomingMessage(
            key=key or convert.guild_key(guild_id or 0, interaction.channel_id or 0, 0),
            user_id=str(user.id),
            text=prompt,
            is_dm=guild_id is None,
            user_roles=_roles(user),
        )
        denied = self.gateway.refusal(probe)  # before the public echo: a refused question is never shown
        if denied:
            await interaction.response.send_message(denied, ephemeral=True)
            return
        shown = f"**{user.display_name}** {echo}: {prompt}"
        callback = await interaction.response.send_message(shown[:MESSAGE_LIMIT])
        echoed = callback.resource
        if not isinstance(echoed, discord.Message):
            echoed = await interaction.original_response()
        if key is not None:
            open_channel = _already_open(channel)  # type: ignore[arg-type]
        elif isinstance(channel, discord.TextChannel) and guild_id is not None:
            key = convert.guild_key(guild_id, channel.id, echoed.id)
            open_channel = self._thread_opener(echoed, convert.thread_name(prompt))
        else:
            key = convert.guild_key(guild_id or 0, interaction.channel_id or 0, interaction.channel_id or 0)
            open_channel = _already_open(channel)  # type: ignore[arg-type]
        incoming = convert.incoming(
            key=key,
            user_id=user.id,
            user_name=user.display_name,
            text=prompt,
            dedupe_key=convert.interaction_dedupe_key(interaction.id),
            attachments=[_attachment_info(file)] if file else [],
            roles=[r.id for r in getattr(user, "roles", ())],
            is_dm=guild_id is None,
            max_bytes=self.gateway.max_attachment_bytes,
        )
        if options:
            incoming = dataclasses.replace(incoming, **options)
        await self._submit(incoming, self._reply(open_channel))


def _roles(user: discord.User | discord.Member) -> tuple[str, ...]:
    return tuple(str(r.id) for r in getattr(user, "roles", ()))


__all__ = ["DiscordAdapter", "doctor_checks"]
