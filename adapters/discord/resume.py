"""Answering a Discord message from its reply address alone: after a restart, in another replica, or in a process
whose gateway does not see the message's guild (another shard). Everything goes over REST: the channel is a
partial one made from its id, a thread still to open is opened from its message by id (its id is the message's),
and attachments are downloaded again from their URL.

A mention's live answer opens its thread the same way (``opener``), so the live and the resumed path are one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import aiohttp
import discord

from adapters.discord.convert import ReplyAddress, archive_minutes
from adapters.discord.reply import DiscordReply, Nonces, OpenChannel
from bot.errors import AttachmentError
from bot.types import Fetch, ThreadKey

log = logging.getLogger("threadline.discord")

THREAD_EXISTS = 160004  # this message already has a thread (a retried turn, another replica opened it)
GONE_STATUSES = frozenset({403, 404, 410})  # an attachment link that expired, or a file deleted since
CHUNK_BYTES = 64 * 1024

MakeReply = Callable[[OpenChannel, Nonces], DiscordReply]


class DiscordResumer:
    """The adapter's ``Resumer`` (``bot.protocols``), registered with the gateway when the adapter is built."""

    def __init__(
        self,
        *,
        client: discord.Client,
        make_reply: MakeReply,
        http: aiohttp.ClientSession,
        max_bytes: int,
        thread_archive_minutes: int,
    ) -> None:
        self._client = client
        self._make_reply = make_reply
        self._http = http
        self._max_bytes = max_bytes
        self._archive_minutes = archive_minutes(thread_archive_minutes)

    def reply_for(self, key: ThreadKey, address: Mapping[str, str], *, posted: str | None) -> DiscordReply:
        """A reply posting where ``address`` says, with the turn's own nonces.

        ``posted`` is not needed here: the reply's first post carries the nonce the interrupted attempt's first post
        carried (with ``enforce_nonce``), so Discord returns that message and the reply writes the new answer into
        it. After Discord's nonce window (a few minutes) the answer is posted as a new message below.
        """
        where = ReplyAddress.decode(address)
        return self._make_reply(self.opener(where), Nonces(where.turn))

    def fetch_for(self, key: ThreadKey, source: str) -> Fetch:
        """Download an attachment again from its URL, never more than the largest file accepted."""

        async def fetch() -> bytes:
            return await download(self._http, source, limit=self._max_bytes)

        return fetch

    def opener(self, where: ReplyAddress) -> OpenChannel:
        """Where the answer goes, opened on its first use: the channel as it is, or the thread opened from the
        message (if threads cannot be opened there, the answer goes to the message's channel instead)."""
        channel = self._partial(where.channel, where.guild)

        async def already_open() -> discord.abc.Messageable:
            return channel

        if not where.create_thread or where.message is None or where.parent is None:
            return already_open
        message_id, parent_id = where.message, where.parent

        async def open_thread() -> discord.abc.Messageable:
            try:
                await self._client.http.start_thread_with_message(
                    parent_id,
                    message_id,
                    name=where.thread_name or "Conversation",
                    auto_archive_duration=self._archive_minutes,  # type: ignore[arg-type]
                )
            except discord.HTTPException as exc:
                if exc.code != THREAD_EXISTS:
                    log.warning("could not create a thread (%s); answering in the channel", exc)
                    return self._partial(parent_id, where.guild)
            return self._partial(message_id, where.guild)

        return open_thread

    def _partial(self, channel_id: int, guild_id: int | None) -> discord.PartialMessageable:
        kind = discord.ChannelType.private if guild_id is None else None
        return self._client.get_partial_messageable(channel_id, guild_id=guild_id, type=kind)


async def download(http: aiohttp.ClientSession, url: str, *, limit: int) -> bytes:
    """A file's bytes from its (Discord CDN) URL; ``AttachmentError`` when it is gone, too big or out of reach."""
    name = url.split("?", 1)[0].rsplit("/", 1)[-1] or "the file"
    try:
        async with http.get(url) as resp:
            if resp.status in GONE_STATUSES:
                raise AttachmentError(f"I can no longer download {name} from Discord. Please send it again.")
            if resp.status != 200:
                raise AttachmentError(f"Discord did not send {name} (HTTP {resp.status}). Please try again.")
            if resp.content_length is not None and resp.content_length > limit:
                raise AttachmentError(f"{name} is larger than the {limit / 1048576:.1f} MB limit.")
            data = bytearray()
            async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                data += chunk
                if len(data) > limit:
                    raise AttachmentError(f"{name} is larger than the {limit / 1048576:.1f} MB limit.")
            return bytes(data)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise AttachmentError(f"I couldn't download {name} from Discord ({type(exc).__name__}).") from exc
