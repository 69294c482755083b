"""Discord adapter on discord.py: a mention in a channel opens a thread that is one conversation, follow-ups in
the bot's threads need no mention, every DM is answered, and answers stream by throttled edits.

Message id dedupe (``discord:msg:<id>``) makes a MESSAGE_CREATE replayed after a gateway RESUME get one answer.
A mention's thread is created when its turn starts (after the dedupe claim); its id is the message's id, so the
thread key is known up front and the model is asked while the thread is being opened (the answer's first post
waits for the thread). Every message goes to the core with its ``ReplyAddress``, so any process can answer it
over REST (``resume.py``): after a crash, or in another replica, whose gateway may hold other shards
(``DISCORD_SHARD_COUNT`` and ``DISCORD_SHARD_IDS`` split the guilds between processes). discord.py's own 429
handling stays on; the per-channel throttle keeps us under the channel limit, and the bot-wide ``RequestBudget``
under the global one (answer text first, typing dropped and the 👀 reaction skipped while answers need the
requests).

What the model reads of a message: a reply starts with the message it replies to (quoted in full, images too,
unless the model has seen it already in this conversation: then a short excerpt says which one), then the
author's own words (the bot's mention removed where it addresses the bot, its name where it is part of a
sentence), stickers by name, and a forward's snapshot marked "[forwarded]" with its attachments.

Reactions (raw events, so a message discord.py has not cached counts too): a ⏹ on a message of a conversation
stops the answer running there (``/stop`` does the same); a 🔁 there asks its interrupted answer again (in a
conversation the bot owns; nothing is said when there is none); a 👍/👎 on one of the bot's messages is feedback on
that answer, and a 🔍 on one posts the code the interpreter ran for it (``show work``). Only the reactions of people
who may use the bot count; the bot's own (it adds 👍 and 👎 to each finished answer, ``DISCORD_FEEDBACK_REACTIONS``)
never do. A reaction's conversation is found the way a message's is: a
thread is its conversation, a DM is one, and in a plain channel the message a mention's thread grows from is the
mention's (its id is the thread's).

``DISCORD_API_BASE`` and ``DISCORD_GATEWAY_URL`` set ``discord.http.Route.BASE`` and
``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``: class attributes, so they are process-wide by nature of
discord.py (there is no per-client option). They are set when the adapter is built.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
import discord

from adapters.discord import convert
from adapters.discord.commands import build_command_tree, sync_commands
from adapters.discord.convert import ReplyAddress
from adapters.discord.reply import MESSAGE_LIMIT, DiscordReply, Nonces
from adapters.discord.resume import DiscordResumer
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
from adapters.discord.throttle import ChannelThrottle, RequestBudget, budget_requests
from bot.answer_format import JSON
from bot.errors import StartupError
from bot.gateway import Gateway
from bot.replies import TextReply
from bot.types import IncomingMessage, ThreadKey, TurnKind

log = logging.getLogger("threadline.discord")

RESET_WHERE = "Use /reset inside one of my threads (or in a DM): each thread is its own conversation."
STOPPING = "Stopping the answer."
NOTHING_RUNNING = "Nothing is running here."
STOP_WHERE = "Use /stop inside the thread I'm answering in (or react ⏹ to my answer)."
ANSWERED_TYPES = (discord.MessageType.default, discord.MessageType.reply)
SHUTDOWN_GRACE_SECS = 10.0
CHANNEL_NAMES_KEPT = 1024  # channel names learned from messages' mention_channels (the newest are kept)


Opener = Callable[[], Awaitable[discord.abc.Messageable]]


def _already_open(channel: discord.abc.Messageable) -> Opener:
    async def opened() -> discord.abc.Messageable:
        return channel

    return opened


def _content(message: discord.Message) -> str:
    """The message's text; discord.py keeps whatever the payload held (a null content stays None)."""
    return message.content if isinstance(message.content, str) else ""


async def _reply_to(message: discord.Message, text: str, nonce: str) -> None:
    """A reply in the message's channel that still goes out if the user has deleted the message meanwhile."""
    reference = message.to_reference(fail_if_not_exists=False)
    await message.channel.send(text, reference=reference, mention_author=False, nonce=nonce)


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
        url=att.url,
    )


def _embed_texts(embeds: Iterable[Any]) -> list[str]:
    """The words of a message's embeds (a bot's card, a forwarded link preview), one string each."""
    texts = []
    for embed in embeds:
        try:
            fields = [(getattr(f, "name", None), getattr(f, "value", None)) for f in embed.fields]
            text = convert.embed_text(getattr(embed, "title", None), getattr(embed, "description", None), fields)
        except Exception:  # discord.py reads an embed's fields from the payload lazily and unchecked: skip it
            continue
        if text:
            texts.append(text)
    return texts


def _sticker_names(source: Any) -> list[object]:
    return [getattr(sticker, "name", None) for sticker in getattr(source, "stickers", None) or ()]


class Seen(enum.Enum):
    """Which messages of the channel a message arrives in the model has seen already, in this conversation."""

    NOTHING = "nothing"  # a new conversation: a mention opening a thread, the first mention in someone's thread
    OWN = "own"  # the bot's own messages here: the text chat of a voice channel (one conversation, mentions only)
    ALL = "all"  # every message here: a DM, the bot's own thread


@dataclasses.dataclass(frozen=True, slots=True)
class _Read:
    """A message as the core gets it. ``own``: the author's words alone (text commands and thread names)."""

    own: str
    text: str
    attachments: list[convert.AttachmentInfo]
    title: str


def _before_parse(client: discord.Client, event: str, hook: Callable[[Any], None]) -> None:
    """Run ``hook`` on an event's raw payload before discord.py parses it (``parsers``: see ``_guard_parsers``)."""
    parsers: dict[str, Callable[[Any], None]] | None = getattr(client._connection, "parsers", None)
    parse = parsers.get(event) if isinstance(parsers, dict) else None
    if parsers is None or parse is None:
        log.warning("discord.py has no %s parser to hook; some message fields will be missing", event)
        return

    def hooked(data: Any) -> None:
        hook(data)
        parse(data)

    parsers[event] = hooked


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
        self._channel_names: OrderedDict[int, str] = OrderedDict()
        _before_parse(self.client, "MESSAGE_CREATE", self._note_raw_fields)
        _guard_parsers(self.client)
        self.throttle = ChannelThrottle(
            self.settings.discord_channel_max_writes, self.settings.discord_channel_window_secs
        )
        self.budget = RequestBudget(self.settings.discord_global_max_requests, self.settings.discord_global_window_secs)
        budget_requests(self.client.http, self.budget)
        self.resumer = DiscordResumer(
            client=self.client,
            make_reply=lambda opener, nonces: self._reply(opener, nonces, on_finished=self._offer_feedback),
            http=self.gateway.http,
            max_bytes=self.gateway.max_attachment_bytes,
            thread_archive_minutes=self.settings.discord_thread_archive_minutes,
        )
        self.gateway.register(convert.PLATFORM, self.resumer)
        self.tree = build_command_tree(self.client, self)
        self.ready = asyncio.Event()
        self._in_flight: set[asyncio.Future[None]] = set()
        self._reacting: set[asyncio.Task[None]] = set()  # feedback reactions being added to finished answers
        self._closing = False
        self.client.event(self.on_ready)
        self.client.event(self.on_resumed)
        self.client.event(self.on_disconnect)
        self.client.event(self.on_message)
        self.client.event(self.on_raw_reaction_add)

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
            self.gateway.connected(convert.PLATFORM, False)
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
        """Stop taking messages, let answers in progress finish (they need the connection), then disconnect.
        Feedback reactions still waiting for the request budget get what is left of the grace period: they are
        a nicety, and shutdown should not wait on a queue of them."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_GRACE_SECS
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=SHUTDOWN_GRACE_SECS)
        if self._reacting:
            _, late = await asyncio.wait(set(self._reacting), timeout=max(0.0, deadline - loop.time()))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if not self.client.is_closed():
            await self.client.close()

    async def _submit(self, incoming: IncomingMessage, reply: DiscordReply) -> bool:
        """Hand a message to the turn handler; False when it was a duplicate delivery."""
        submission = await self.gateway.submit(incoming, reply)
        if submission.done is None:
            return False
        self._in_flight.add(submission.done)
        submission.done.add_done_callback(self._in_flight.discard)
        if self.settings.discord_feedback_reactions:
            submission.done.add_done_callback(lambda _: self._offer_feedback(reply))
        return True

    def _offer_feedback(self, reply: DiscordReply) -> None:
        """Once a turn has ended: if its answer finished (a failure is not rated), add 👍 and 👎 to its last
        message. A task of its own: the turn's lane goes on while the reactions wait for the request budget
        (their priority defers them behind answer text; they wait, they are not dropped)."""
        final = reply.final_message
        if final is None:
            return
        task = asyncio.create_task(self._add_feedback_reactions(*final), name="discord-feedback-reactions")
        self._reacting.add(task)
        task.add_done_callback(self._reacting.discard)

    async def _add_feedback_reactions(self, channel_id: int, message_id: int) -> None:
        for emoji in convert.FEEDBACK_EMOJI:
            try:
                await self.client.http.add_reaction(channel_id, message_id, emoji)
            except discord.HTTPException as exc:  # the answer was deleted, reactions are not allowed there…
                log.info("could not add the feedback reactions to message %s: %s", message_id, exc)
                return

    async def on_ready(self) -> None:
        user = self.client.user
        log.info("Discord: connected as %s to %d guild(s)", user, len(self.client.guilds))
        self.ready.set()
        self.gateway.connected(convert.PLATFORM, True)

    async def on_resumed(self) -> None:
        self.gateway.connected(convert.PLATFORM, True)

    async def on_disconnect(self) -> None:
        """The gateway connection dropped (discord.py reconnects): /healthz says not ready until it is back."""
        self.gateway.connected(convert.PLATFORM, False)

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
        if guild is None and isinstance(channel, discord.PartialMessageable) and channel.guild_id is not None:
            # From a guild discord.py does not hold (not yet available after a connect): not a DM, and nothing to
            # answer with (no roles, no channel); Discord does not send messages of guilds the bot is not in.
            log.info(
                "ignored Discord message %s from guild %s, which discord.py has not loaded",
                message.id,
                channel.guild_id,
            )
            return
        if guild is None:
            await self._answer(message, convert.dm_key(channel.id), _already_open(channel), is_dm=True, seen=Seen.ALL)
            return
        role = guild.self_role
        mentioned = convert.mentions_bot(
            user_ids=(u.id for u in _mentions(message)),
            role_ids=convert.role_mention_ids(_content(message)),
            bot_id=me.id,
            bot_role_id=role.id if role else None,
        )
        if isinstance(channel, discord.PartialMessageable):
            resolved = await self._resolve_uncached(channel.id)
            if resolved is None:
                return
            channel = resolved  # type: ignore[assignment]  # fetch_channel returns one of the channel classes
        if isinstance(channel, discord.Thread):
            key = convert.guild_key(guild.id, channel.parent_id, channel.id)
            owned = channel.owner_id == me.id or await self.gateway.owns(key)
            if owned:
                await self._answer(message, key, _already_open(channel), seen=Seen.ALL)
            elif mentioned:  # a mention in someone else's thread makes it a conversation (the gateway claims it)
                await self._answer(message, key, _already_open(channel), early_reply=True)
        elif not mentioned:
            return
        elif isinstance(channel, discord.TextChannel):
            key = convert.guild_key(guild.id, channel.id, message.id)  # the thread's id will be the message's
            await self._answer(message, key, None, early_reply=True, in_channel=True)
        else:  # text chat of a voice or stage channel: no threads there, one conversation per channel
            key = convert.guild_key(guild.id, channel.id, channel.id)
            await self._answer(message, key, _already_open(channel), seen=Seen.OWN)

    async def _resolve_uncached(self, channel_id: int) -> discord.abc.Messageable | None:
        """A thread discord.py has not cached (e.g. unarchived while we were away): ask Discord what it is."""
        try:
            fetched = await self.client.fetch_channel(channel_id)
        except discord.HTTPException as exc:
            log.info("could not look up channel %s: %s", channel_id, exc)
            return None
        return fetched if isinstance(fetched, discord.abc.Messageable) else None

    def _note_raw_fields(self, data: Any) -> None:
        """Read two fields of a MESSAGE_CREATE that discord.py drops. ``mention_channels`` names the channels a
        crossposted message mentions, which the guild cache does not hold; the deprecated ``stickers`` (full sticker
        objects, still in some payloads) become the ``sticker_items`` discord.py reads."""
        if not isinstance(data, dict):
            return
        mentioned = data.get("mention_channels")
        for channel in mentioned if isinstance(mentioned, list) else ():
            if isinstance(channel, dict) and str(channel.get("id")).isdigit() and isinstance(channel.get("name"), str):
                self._channel_names[int(channel["id"])] = channel["name"]
                self._channel_names.move_to_end(int(channel["id"]))
        while len(self._channel_names) > CHANNEL_NAMES_KEPT:
            self._channel_names.popitem(last=False)
        stickers = data.get("stickers")
        if "sticker_items" not in data and isinstance(stickers, list):
            data["sticker_items"] = [
                {"id": s["id"], "name": s["name"], "format_type": s.get("format_type", 1)}
                for s in stickers
                if isinstance(s, dict)
                and str(s.get("id")).isdigit()
                and isinstance(s.get("name"), str)
                and isinstance(s.get("format_type", 1), int)
            ]

    def _clean(self, content: object, guild: discord.Guild | None, users: Iterable[Any] = (), roles: Any = ()) -> str:
        """Text for the model (``convert.clean_text``) with the names this message's mentions carry."""
        text = content if isinstance(content, str) else ""
        me = self.client.user
        role = guild.self_role if guild else None
        member = guild.me if guild else None
        channel_names = {}
        # discord.py's content-derived mention properties would raise on a null content; these read the ids here.
        for cid in convert.channel_mention_ids(text):
            found = guild.get_channel_or_thread(cid) if guild else None
            name = getattr(found, "name", None) if found is not None else self._channel_names.get(cid)
            channel_names[cid] = convert.text_or(name, "channel")
        return convert.clean_text(
            text,
            bot_id=me.id if me else 0,
            bot_role_id=role.id if role else None,
            bot_name=convert.text_or(getattr(member or me, "display_name", None), convert.DEFAULT_BOT_NAME),
            user_names={u.id: convert.text_or(u.display_name, "someone") for u in users},
            role_names={r.id: convert.text_or(r.name, "role") for r in roles or ()},
            channel_names=channel_names,
        )

    def _read(self, message: discord.Message, *, seen: Seen) -> _Read:
        """What the core gets of a message: see the module docstring. ``seen``: what the model has seen of the
        message's channel in this conversation (a reply to such a message is not quoted again)."""
        guild = message.guild
        own = self._clean(_content(message), guild, _mentions(message), getattr(message, "role_mentions", ()))
        files = [_attachment_info(a) for a in message.attachments]
        stickers = convert.sticker_text(_sticker_names(message))
        forwards = []
        for snapshot in getattr(message, "message_snapshots", None) or ():
            body = convert.compose(
                self._clean(snapshot.content, guild),
                *_embed_texts(snapshot.embeds),
                convert.sticker_text(_sticker_names(snapshot)),
            )
            forwards.append(convert.forwarded_text(body))
            files += [_attachment_info(a) for a in snapshot.attachments]
        context, images = self._reply_context(message, seen=seen)
        return _Read(
            own=own,
            text=convert.compose(context, own, stickers, *forwards),
            attachments=[*files, *images],
            title=own or convert.compose(stickers, *forwards) or context,
        )

    def _reply_context(self, message: discord.Message, *, seen: Seen) -> tuple[str, list[convert.AttachmentInfo]]:
        """The message a reply answers, said once: in full with its images when the model has not seen it, else
        a short excerpt that says which message it was. A thread's starter message (its id is the thread's) counts
        as one of the thread's."""
        reference = getattr(message, "reference", None)
        quoted = getattr(reference, "resolved", None)
        if reference is None or not isinstance(quoted, discord.Message):
            return "", []
        if reference.type is discord.MessageReferenceType.forward:
            return "", []
        me = self.client.user
        author = getattr(quoted, "author", None)
        mine = me is not None and author is not None and author.id == me.id
        here = message.channel.id in (reference.channel_id, reference.message_id)
        known = here and (seen is Seen.ALL or (seen is Seen.OWN and mine))
        text = convert.compose(
            self._clean(quoted.content, message.guild, _mentions(quoted), getattr(quoted, "role_mentions", ())),
            *_embed_texts(quoted.embeds),
            convert.sticker_text(_sticker_names(quoted)),
        )
        name = None if mine else convert.text_or(getattr(author, "display_name", None), "someone")
        images = [] if known else [info for a in quoted.attachments if convert.is_image(info := _attachment_info(a))]
        return convert.reply_context(name, text, seen=known), images

    async def _answer(
        self,
        message: discord.Message,
        key: ThreadKey,
        open_channel: Opener | None,
        *,
        is_dm: bool = False,
        early_reply: bool = False,
        in_channel: bool = False,
        seen: Seen = Seen.NOTHING,
    ) -> None:
        """Submit a turn. ``open_channel`` None: open a thread from the message. ``early_reply``: a refusal before
        the channel is opened replies to the message; ``in_channel``: the message was a mention in a plain channel
        (text commands apply to the channel); ``seen``: see ``_read``."""
        read = self._read(message, seen=seen)
        address = ReplyAddress(
            channel=message.id if open_channel is None else message.channel.id,
            guild=message.guild.id if message.guild else None,
            turn=message.id,
            message=message.id,
            parent=message.channel.id,
            create_thread=open_channel is None,
            thread_name=convert.thread_name(read.title) if open_channel is None else "",
        )
        incoming = convert.incoming(
            key=key,
            user_id=message.author.id,
            user_name=message.author.display_name,
            text=read.text,
            dedupe_key=convert.message_dedupe_key(message.id),
            attachments=read.attachments,
            roles=[r.id for r in getattr(message.author, "roles", ())],
            is_dm=is_dm,
            max_bytes=self.gateway.max_attachment_bytes,
            address=address,
        )
        line = convert.text_command(read.own)
        if line is not None:
            await self._text_command(incoming, line, message, in_channel=in_channel)
            return
        if open_channel is None:
            open_channel = self.resumer.opener(address)
        nonces = Nonces(message.id)
        reply = self._reply(open_channel, nonces, early=self._early_reply(message, nonces) if early_reply else None)
        if await self._submit(incoming, reply):  # False: a duplicate (e.g. replayed after a RESUME)
            await self._acknowledge(message)

    def _reply(
        self,
        open_channel: Opener,
        nonces: Nonces,
        *,
        early: Callable[[str], Awaitable[None]] | None = None,
        on_finished: Callable[[DiscordReply], None] | None = None,
    ) -> DiscordReply:
        """``on_finished``: for an answer resumed from the inbox (the feedback reactions of a live answer are added
        when its submission is done)."""
        return DiscordReply(
            open_channel=open_channel,
            throttle=self.throttle,
            http=self.client.http,
            edit_interval=self.settings.discord_edit_interval_secs,
            typing_interval=self.settings.discord_typing_interval_secs,
            early_reply=early,
            nonces=nonces,
            on_finished=on_finished,
        )

    def _early_reply(self, source: discord.Message, nonces: Nonces) -> Callable[[str], Awaitable[None]]:
        """A refusal before any thread exists is a reply to the message, in its channel."""

        async def reply(text: str) -> None:
            async with self.throttle.write(source.channel.id):
                await _reply_to(source, text, nonces.note())

        return reply

    async def _text_command(
        self, incoming: IncomingMessage, line: str, message: discord.Message, *, in_channel: bool
    ) -> None:
        """``/reset``, ``/model``, ``/usage``, ``/help`` typed as text; in a plain channel they apply to it."""
        nonces = Nonces(message.id)

        async def send(answer: str) -> None:
            async with self.throttle.write(message.channel.id):
                await _reply_to(message, answer, nonces.next())

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
            manage_guild=_manages_server(message.author),
        )

    async def _acknowledge(self, message: discord.Message) -> None:
        if not self.settings.discord_ack_reaction:
            return
        if self.budget.pressed:  # many answers at once: the answer itself will show the message was taken on
            log.debug("skipped the acknowledgement reaction: the request budget is needed for answers")
            return
        try:
            await message.add_reaction(self.settings.discord_ack_reaction)
        except discord.HTTPException as exc:
            log.debug("could not add the acknowledgement reaction: %s", exc)

    # --- reactions ----------------------------------------------------------------------------------------
    async def on_raw_reaction_add(self, event: discord.RawReactionActionEvent) -> None:
        try:
            await self._on_reaction(event)
        except Exception:
            log.exception("could not handle a reaction on Discord message %s", event.message_id)

    async def _on_reaction(self, event: discord.RawReactionActionEvent) -> None:
        """⏹ stops the conversation's running answer; 🔁 asks its interrupted answer again; 👍/👎 on the bot's
        message is feedback on it. Everything else (other emoji, the bot's own reactions, other bots', refused
        users') is ignored without a word, and so is a ⏹ or 🔁 with nothing to stop or retry."""
        me = self.client.user
        if self._closing or me is None or event.user_id == me.id:
            return
        meaning = convert.reaction_meaning(event.emoji.name if event.emoji.is_unicode_emoji() else None)
        if meaning is None or (event.member is not None and event.member.bot):
            return
        on_any_message = meaning in (convert.Reaction.STOP, convert.Reaction.RETRY)
        if not on_any_message and self._author_of(event) != me.id:
            return  # a 👍 on someone else's message is just a reaction
        key = await self._reaction_key(event)
        if key is None:
            return
        probe = IncomingMessage(
            key=key,
            user_id=str(event.user_id),
            text="",
            is_dm=event.guild_id is None,
            user_roles=_roles(event.member) if event.member is not None else (),
        )
        if await self.gateway.refusal(probe) is not None:
            log.info("ignored a %s reaction of user %s, who may not use the bot here", meaning.value, event.user_id)
            return
        if meaning is convert.Reaction.STOP:
            await self.gateway.stop(key)  # nothing running: a quiet no-op (the gateway logs it)
            return
        if meaning is convert.Reaction.RETRY:
            if await self.gateway.owns(key) and not await self.gateway.retry(key):
                log.info("a %s reaction in %s found no interrupted answer to retry", meaning.value, key)
            return
        if meaning is convert.Reaction.SHOW_WORK:
            await self._show_work(event, probe)
            return
        turn, user = str(event.message_id), str(event.user_id)
        await self.gateway.feedback(key, turn=turn, user=user, value=meaning.value)

    async def _show_work(self, event: discord.RawReactionActionEvent, probe: IncomingMessage) -> None:
        """🔍 on an answer: the code behind it, posted in the answer's channel (its thread or DM)."""
        channel_id = event.channel_id

        async def opened() -> discord.abc.Messageable:
            channel = self.client.get_channel(channel_id) or await self.client.fetch_channel(channel_id)
            assert isinstance(channel, discord.abc.Messageable)
            return channel

        # Nonces of their own (not the answer's), so a second person's 🔍 posts its own reply.
        turn = event.message_id ^ event.user_id
        address = ReplyAddress(channel=channel_id, guild=event.guild_id, turn=turn, parent=channel_id)
        incoming = dataclasses.replace(
            probe,
            text="show work",
            kind=TurnKind.SHOW_WORK,
            target=str(event.message_id),
            dedupe_keys=(f"discord:reaction:{event.message_id}:{event.user_id}:show_work",),
            reply_address=address.encode(),
        )
        await self._submit(incoming, self._reply(opened, Nonces(turn)))

    def _author_of(self, event: discord.RawReactionActionEvent) -> int | None:
        """Who wrote the message reacted to: Discord says so in the event; an older payload without it leaves
        discord.py's message cache."""
        if event.message_author_id is not None:
            return event.message_author_id
        cached = discord.utils.get(self.client.cached_messages, id=event.message_id)
        return cached.author.id if cached is not None else None

    async def _reaction_key(self, event: discord.RawReactionActionEvent) -> ThreadKey | None:
        """The conversation a reaction belongs to, found as a message's would be (see the module docstring)."""
        if event.guild_id is None:
            return convert.dm_key(event.channel_id)
        guild = self.client.get_guild(event.guild_id)
        if guild is None:
            return None
        channel: object = guild.get_channel_or_thread(event.channel_id)
        if channel is None:
            channel = await self._resolve_uncached(event.channel_id)
        if isinstance(channel, discord.Thread):
            return convert.guild_key(guild.id, channel.parent_id, channel.id)
        if isinstance(channel, discord.TextChannel):
            return convert.guild_key(guild.id, channel.id, event.message_id)
        if channel is None:
            return None
        return convert.guild_key(guild.id, event.channel_id, event.channel_id)  # a voice or stage channel's chat

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
            manage_guild=_manages_server(interaction.user),
        )

    async def stop(self, interaction: discord.Interaction) -> None:
        """``/stop``: stop the answer running in this thread or DM (or a voice channel's chat); answered only to
        the user who asked."""
        thread_key = self._interaction_key(interaction)
        channel_id = interaction.channel_id or 0
        key = thread_key or convert.guild_key(interaction.guild_id or 0, channel_id, channel_id)
        user = interaction.user
        probe = IncomingMessage(
            key=key, user_id=str(user.id), text="", is_dm=interaction.guild_id is None, user_roles=_roles(user)
        )
        denied = await self.gateway.refusal(probe)
        if denied:
            await interaction.response.send_message(denied, ephemeral=True)
            return
        if await self.gateway.stop(key):
            answer = STOPPING
        elif thread_key is None and isinstance(interaction.channel, discord.TextChannel):
            answer = STOP_WHERE  # each mention's answer runs in its own thread: this channel has none
        else:
            answer = NOTHING_RUNNING
        await interaction.response.send_message(answer, ephemeral=True)

    async def ask(
        self, interaction: discord.Interaction, prompt: str, file: discord.Attachment | None, as_json: bool = False
    ) -> None:
        """``/ask``: the question is echoed publicly; in a channel a thread is opened from that echo and the
        answer streams there (like a mention); in a thread or DM the answer streams right below it. With ``json``
        the answer is a JSON object, shown as a code block."""
        options = {"answer_format": JSON} if as_json else None
        await self._slash_turn(interaction, prompt, file, echo="asked", options=options)

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
        denied = await self.gateway.refusal(probe)  # before the public echo: a refused question is never shown
        if denied:
            await interaction.response.send_message(denied, ephemeral=True)
            return
        shown = f"**{user.display_name}** {echo}: {prompt}"
        callback = await interaction.response.send_message(shown[:MESSAGE_LIMIT])
        echoed = callback.resource
        if not isinstance(echoed, discord.Message):
            echoed = await interaction.original_response()
        channel_id = interaction.channel_id or 0
        address = ReplyAddress(
            channel=channel_id, guild=guild_id, turn=interaction.id, message=echoed.id, parent=channel_id
        )
        if key is not None:
            open_channel = _already_open(channel)  # type: ignore[arg-type]
        elif isinstance(channel, discord.TextChannel) and guild_id is not None:
            key = convert.guild_key(guild_id, channel.id, echoed.id)
            name = convert.thread_name(prompt)
            address = dataclasses.replace(address, channel=echoed.id, create_thread=True, thread_name=name)
            open_channel = self.resumer.opener(address)
        else:
            key = convert.guild_key(guild_id or 0, channel_id, channel_id)
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
            address=address,
        )
        if options:
            incoming = dataclasses.replace(incoming, **options)
        await self._submit(incoming, self._reply(open_channel, Nonces(interaction.id)))


def _roles(user: discord.User | discord.Member) -> tuple[str, ...]:
    return tuple(str(r.id) for r in getattr(user, "roles", ()))


def _manages_server(user: discord.User | discord.Member) -> bool:
    """A guild member with Manage Server (an admin, unless THREADLINE_MANAGE_SERVER_ADMINS is off); False in DMs."""
    permissions = getattr(user, "guild_permissions", None)
    return bool(permissions is not None and permissions.manage_guild)


__all__ = ["DiscordAdapter", "doctor_checks"]
