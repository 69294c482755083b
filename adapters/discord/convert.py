"""Pure Discord → core conversions: thread keys, who was mentioned, clean text, thread names, attachments.

No I/O here. An attachment's bytes are fetched only when the engine calls ``Attachment.fetch`` (discord.py's
``Attachment.read``), after its declared size has been checked against the limit.
"""

from __future__ import annotations

import math
import mimetypes
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from bot.errors import AttachmentError
from bot.types import Attachment, IncomingMessage, ThreadKey, kind_for_mime

PLATFORM = "discord"
DM_WORKSPACE = "dm"
TEXT_COMMANDS = frozenset({"reset", "model", "usage", "help", "voice"})
THREAD_NAME_WORDS = 8
THREAD_NAME_CHARS = 90  # Discord allows 100

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_CHANNEL_MENTION = re.compile(r"<#(\d+)>")


def guild_key(guild_id: int, channel_id: int, thread_id: int) -> ThreadKey:
    """A guild conversation: ``channel`` is the parent text channel, ``thread`` the thread's id."""
    return ThreadKey(PLATFORM, str(guild_id), str(channel_id), str(thread_id))


def dm_key(channel_id: int) -> ThreadKey:
    """One conversation per DM channel (until /reset)."""
    return ThreadKey(PLATFORM, DM_WORKSPACE, str(channel_id), str(channel_id))


def message_dedupe_key(message_id: int) -> str:
    return f"discord:msg:{message_id}"


def interaction_dedupe_key(interaction_id: int) -> str:
    return f"discord:interaction:{interaction_id}"


def text_or(value: object, fallback: str) -> str:
    """A name or text field as a non-empty string; discord.py passes payload values through unchecked."""
    return value if isinstance(value, str) and value else fallback


def role_mention_ids(content: str) -> list[int]:
    """Role ids mentioned in the text (``<@&id>``)."""
    return [int(m) for m in _ROLE_MENTION.findall(content)]


def channel_mention_ids(content: str) -> list[int]:
    """Channel ids mentioned in the text (``<#id>``)."""
    return [int(m) for m in _CHANNEL_MENTION.findall(content)]


def mentions_bot(
    *, user_ids: Iterable[int], role_ids: Iterable[int], bot_id: int, bot_role_id: int | None = None
) -> bool:
    """True when the bot itself, or its managed role (what the @ picker sometimes inserts), is mentioned."""
    return bot_id in set(user_ids) or (bot_role_id is not None and bot_role_id in set(role_ids))


def clean_text(
    content: str,
    *,
    bot_id: int,
    bot_role_id: int | None = None,
    user_names: Mapping[int, str] | None = None,
    role_names: Mapping[int, str] | None = None,
    channel_names: Mapping[int, str] | None = None,
) -> str:
    """The message text for the model: the bot's own mention removed, other mentions made readable."""
    user_names, role_names, channel_names = user_names or {}, role_names or {}, channel_names or {}

    def user(m: re.Match[str]) -> str:
        uid = int(m.group(1))
        return "" if uid == bot_id else f"@{user_names.get(uid, 'someone')}"

    def role(m: re.Match[str]) -> str:
        rid = int(m.group(1))
        return "" if rid == bot_role_id else f"@{role_names.get(rid, 'role')}"

    def channel(m: re.Match[str]) -> str:
        return f"#{channel_names.get(int(m.group(1)), 'channel')}"

    text = _USER_MENTION.sub(user, content)
    text = _ROLE_MENTION.sub(role, text)
    text = _CHANNEL_MENTION.sub(channel, text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def thread_name(text: str, *, fallback: str = "Conversation") -> str:
    """A thread name from the first words of the question (Discord allows 1–100 characters)."""
    words = text.split()
    name = " ".join(words[:THREAD_NAME_WORDS])
    if len(name) > THREAD_NAME_CHARS:
        name = name[: THREAD_NAME_CHARS - 1].rstrip() + "…"
    elif len(words) > THREAD_NAME_WORDS:
        name += "…"
    return name or fallback


def text_command(text: str) -> str | None:
    """``/reset``, ``/model x``, ``/usage``, ``/help`` typed as text (e.g. in a DM) → the command line."""
    if not text.startswith("/"):
        return None
    line = text[1:].strip()
    return line if line.split(" ", 1)[0].lower() in TEXT_COMMANDS else None


def archive_minutes(value: int) -> int:
    """Round up to a thread auto-archive duration Discord accepts."""
    for allowed in (60, 1440, 4320, 10080):
        if value <= allowed:
            return allowed
    return 10080


def mime_of(filename: str, content_type: str | None) -> str:
    if content_type:
        return content_type
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """What the converter needs from a discord.py ``Attachment`` (build it with ``attachment_info``)."""

    filename: str
    content_type: str | None
    size: int | None  # None: not declared
    is_voice: bool
    duration_secs: float | None
    read: Callable[[], Awaitable[bytes]]


def attachment_info(
    *,
    filename: object,
    content_type: object,
    size: object,
    is_voice: bool,
    duration_secs: object,
    read: Callable[[], Awaitable[bytes]],
) -> AttachmentInfo:
    """discord.py passes an attachment's payload values through unchecked: keep the ones of the right type."""
    return AttachmentInfo(
        filename=text_or(filename, "file"),
        content_type=content_type if isinstance(content_type, str) and content_type.strip() else None,
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        is_voice=is_voice is True,
        duration_secs=_seconds(duration_secs),
        read=read,
    )


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def core_attachment(info: AttachmentInfo, *, max_bytes: int) -> Attachment:
    """A lazy core attachment; the declared size is checked before any download."""
    filename = info.filename or "file"

    async def fetch() -> bytes:
        if info.size is not None and info.size > max_bytes:
            raise AttachmentError(
                f"{filename} is {info.size / 1048576:.1f} MB; the limit is {max_bytes / 1048576:.1f} MB."
            )
        return await info.read()

    mime = mime_of(filename, info.content_type)
    return Attachment(
        kind=kind_for_mime(mime, voice=info.is_voice),
        mime=mime,
        filename=filename,
        size=info.size,
        fetch=fetch,
        duration_secs=info.duration_secs if info.is_voice else None,
    )


def incoming(
    *,
    key: ThreadKey,
    user_id: int,
    user_name: str,
    text: str,
    dedupe_key: str,
    attachments: Iterable[AttachmentInfo] = (),
    roles: Iterable[int] = (),
    is_dm: bool = False,
    max_bytes: int,
) -> IncomingMessage:
    return IncomingMessage(
        key=key,
        user_id=str(user_id),
        text=text,
        dedupe_keys=(dedupe_key,),
        attachments=tuple(core_attachment(a, max_bytes=max_bytes) for a in attachments),
        user_name=text_or(user_name, ""),  # discord.py passes a null name through
        is_dm=is_dm,
        user_roles=tuple(str(r) for r in roles),
    )
