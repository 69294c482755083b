"""Pure Discord → core conversions: thread keys, who was mentioned, clean text, thread names, attachments, the
text of what Discord sends besides words (stickers, embeds, forwards, the message a reply quotes), what a
reaction asks for (⏹ stop, 🔁 retry, 👍/👎 feedback), and a turn's reply address (``ReplyAddress``).

No I/O here. An attachment's bytes are fetched only when the engine calls ``Attachment.fetch`` (discord.py's
``Attachment.read``), after its declared size has been checked against the limit.
"""

from __future__ import annotations

import enum
import math
import mimetypes
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Self

from bot.errors import AttachmentError
from bot.types import Attachment, AttachmentKind, IncomingMessage, ThreadKey, kind_for_mime

PLATFORM = "discord"
DM_WORKSPACE = "dm"
TEXT_COMMANDS = frozenset({"reset", "model", "usage", "help", "voice", "access", "budget", "channel"})
THREAD_NAME_WORDS = 8
THREAD_NAME_CHARS = 90  # Discord allows 100
DEFAULT_BOT_NAME = "threadline"
NONCE_CHARS = 25  # Discord's limit for a message nonce
QUOTE_CHARS = 1500  # a quoted message longer than this is cut (Discord allows 2,000, or 4,000 with Nitro)
EXCERPT_CHARS = 100  # how much of a message the model has seen already is repeated to say which one it is

_USER_MENTION = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION = re.compile(r"<@&(\d+)>")
_CHANNEL_MENTION = re.compile(r"<#(\d+)>")
_SELF = "\ue000"  # stands for the bot's own mention while the text around it is tidied (a private-use character)
_LEADING_SELF = re.compile(rf"^\s*(?:{_SELF}[\s,:;.!?\-–—]*)+")
_TRAILING_SELF = re.compile(rf"[\s,:;\-–—]*(?:{_SELF}\s*)+(?=[.!?…]*\s*$)")
# The emoji variation selector and skin tones: "⏹️" is "⏹" and "👍🏽" is "👍" for what the user asks for.
_EMOJI_VARIANTS = re.compile("[\ufe0f\U0001f3fb-\U0001f3ff]")
FEEDBACK_EMOJI = ("👍", "👎")  # the reactions the bot adds to a finished answer, in this order


def guild_key(guild_id: int, channel_id: int, thread_id: int) -> ThreadKey:
    """A guild conversation: ``channel`` is the parent text channel, ``thread`` the thread's id."""
    return ThreadKey(PLATFORM, str(guild_id), str(channel_id), str(thread_id))


def dm_key(channel_id: int) -> ThreadKey:
    """One conversation per DM channel (until /reset)."""
    return ThreadKey(PLATFORM, DM_WORKSPACE, str(channel_id), str(channel_id))


class Reaction(enum.Enum):
    """What a user's reaction asks of the bot; the values of GOOD and BAD are the core's feedback values."""

    STOP = "stop"
    RETRY = "retry"
    GOOD = "good"
    BAD = "bad"
    SHOW_WORK = "show_work"


def reaction_meaning(emoji: object) -> Reaction | None:
    """⏹ stops the running answer, 🔁 asks an interrupted one again, 👍/👎 rate one (with or without the variation
    selector or a skin tone), 🔍 shows its code; any other reaction (a custom emoji has no unicode name: None) is
    just a reaction."""
    bare = _EMOJI_VARIANTS.sub("", emoji) if isinstance(emoji, str) else ""
    match bare:
        case "\u23f9":
            return Reaction.STOP
        case "\N{CLOCKWISE RIGHTWARDS AND LEFTWARDS OPEN CIRCLE ARROWS}":
            return Reaction.RETRY
        case "👍":
            return Reaction.GOOD
        case "👎":
            return Reaction.BAD
        case "🔍" | "🔎":
            return Reaction.SHOW_WORK
    return None


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
    bot_name: str = DEFAULT_BOT_NAME,
    user_names: Mapping[int, str] | None = None,
    role_names: Mapping[int, str] | None = None,
    channel_names: Mapping[int, str] | None = None,
) -> str:
    """The message text for the model, with mentions made readable.

    The bot's own mention (or its managed role's) that addresses it, at the start or the end, is removed with the
    punctuation that goes with it ("<@bot>, can you…" → "can you…", "thoughts, <@bot>?" → "thoughts?"); one in
    mid-sentence is part of the sentence, so it becomes the bot's name ("count on <@bot> for…" → "count on
    threadline for…"). Other users, roles and channels become ``@name`` and ``#name``.
    """
    user_names, role_names, channel_names = user_names or {}, role_names or {}, channel_names or {}

    def self_or_keep(m: re.Match[str]) -> str:
        return _SELF if int(m.group(1)) == bot_id else m.group(0)

    def role_self_or_keep(m: re.Match[str]) -> str:
        return _SELF if bot_role_id is not None and int(m.group(1)) == bot_role_id else m.group(0)

    text = _USER_MENTION.sub(self_or_keep, content.replace(_SELF, ""))
    text = _ROLE_MENTION.sub(role_self_or_keep, text)
    text = _LEADING_SELF.sub("", text)
    text = _TRAILING_SELF.sub("", text)
    text = text.replace(_SELF, bot_name or DEFAULT_BOT_NAME)

    def user(m: re.Match[str]) -> str:
        return f"@{user_names.get(int(m.group(1)), 'someone')}"

    def role(m: re.Match[str]) -> str:
        return f"@{role_names.get(int(m.group(1)), 'role')}"

    def channel(m: re.Match[str]) -> str:
        return f"#{channel_names.get(int(m.group(1)), 'channel')}"

    text = _USER_MENTION.sub(user, text)
    text = _ROLE_MENTION.sub(role, text)
    text = _CHANNEL_MENTION.sub(channel, text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def message_nonce(turn_id: int, part: int, *, note: bool = False) -> str:
    """The nonce of the ``part``-th message one turn creates (``turn_id``: the message or interaction it answers).

    Sent with ``enforce_nonce``, Discord returns the message already made with it instead of posting again; a
    nonce derived from the turn (not random) makes a send retried after a timeout, or after a crash, match.
    ``note``: a warning (an error, "interrupted"), counted apart from the answer's parts, so that the notice of an
    interrupted answer is not taken for that answer's first message, nor the retried answer for the notice.
    """
    mark = "w" if note else ""
    nonce = f"{turn_id}.{mark}{part}"
    return nonce if len(nonce) <= NONCE_CHARS else f"{turn_id:x}.{mark}{part:x}"[-NONCE_CHARS:]


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    """Where a turn's answer goes, kept with the message in the durable inbox (``IncomingMessage.reply_address``,
    strings only), so any process can answer it over REST: one whose gateway does not see the guild (another
    shard), or the same one after a restart.

    ``channel``: the channel, thread or DM to post in; a thread still to be opened from ``message`` (a mention in a
    plain channel, or a /ask echo there) has that message's id, in ``parent``. ``turn``: the message or interaction
    the turn answers: its nonces derive from it, so an answer resumed elsewhere matches what was already posted.
    """

    channel: int
    guild: int | None  # None: a DM
    turn: int
    message: int | None = None  # the message answered (a thread still to open grows from it)
    parent: int | None = None  # the channel ``message`` is in
    create_thread: bool = False
    thread_name: str = ""

    def encode(self) -> dict[str, str]:
        return {
            "channel": str(self.channel),
            "guild": "" if self.guild is None else str(self.guild),
            "turn": str(self.turn),
            "message": "" if self.message is None else str(self.message),
            "parent": "" if self.parent is None else str(self.parent),
            "create_thread": "true" if self.create_thread else "false",
            "thread_name": self.thread_name,
        }

    @classmethod
    def decode(cls, data: Mapping[str, str]) -> Self:
        """The address ``encode`` wrote; ValueError when it is not one (a missing or non-numeric id)."""

        def optional(name: str) -> int | None:
            value = str(data.get(name) or "")
            if value and not value.isdigit():
                raise ValueError(f"a Discord reply address needs a numeric {name!r}, not {value!r}")
            return int(value) if value else None

        def required(name: str) -> int:
            value = optional(name)
            if value is None:
                raise ValueError(f"a Discord reply address needs {name!r}")
            return value

        create = str(data.get("create_thread") or "false") == "true"
        address = cls(
            channel=required("channel"),
            guild=optional("guild"),
            turn=required("turn"),
            message=optional("message"),
            parent=optional("parent"),
            create_thread=create,
            thread_name=str(data.get("thread_name") or ""),
        )
        if create and (address.message is None or address.parent is None or address.guild is None):
            raise ValueError("a Discord reply address that opens a thread needs its guild, message and parent")
        return address


def sticker_text(names: Iterable[object]) -> str:
    """Stickers by name ("[sticker: wave]"): the model cannot see them, and a sticker alone is still a message."""
    return " ".join(f"[sticker: {text_or(name, 'sticker')}]" for name in names)


def embed_text(title: object, description: object, fields: Iterable[tuple[object, object]]) -> str:
    """An embed's words on one line (a bot's stats card, a forwarded link preview); empty when it has none."""
    parts = [text_or(title, ""), text_or(description, "")]
    parts += [f"{text_or(name, '')}: {text_or(value, '')}".strip(": ") for name, value in fields]
    return " · ".join(p for p in parts if p)


def forwarded_text(text: str) -> str:
    """A forwarded message as the model reads it: marked, since the person forwarding did not write it."""
    return f"[forwarded] {text}".rstrip()


def reply_context(author: str | None, text: str, *, seen: bool) -> str:
    """What a reply points at, said once: the whole quoted message when the model has not seen it (another
    channel, or a channel that is not yet a conversation with the bot), else a short excerpt naming which
    message it was, so the conversation does not carry the same text twice. ``author`` None: the bot itself."""
    text = " ".join(text.split())
    if seen:
        whose = "your earlier answer" if author is None else f"{author}'s earlier message"
        if not text:
            return f"[replying to {whose}]"
        excerpt = text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1].rstrip() + "…"
        return f'[replying to {whose}: "{excerpt}"]'
    whose = "your message" if author is None else f"{author}'s message"
    if not text:
        return f"[replying to {whose}]"
    quoted = text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 1].rstrip() + "…"
    return f"[replying to {whose}: {quoted}]"


def compose(*parts: str) -> str:
    """The message's pieces (reply context, the author's words, stickers, forwarded messages), one per line."""
    return "\n".join(p for p in (part.strip() for part in parts) if p)


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
    url: str = ""  # where it can be downloaded again, by another process (``Attachment.source``)


def attachment_info(
    *,
    filename: object,
    content_type: object,
    size: object,
    is_voice: bool,
    duration_secs: object,
    read: Callable[[], Awaitable[bytes]],
    url: object = "",
) -> AttachmentInfo:
    """discord.py passes an attachment's payload values through unchecked: keep the ones of the right type."""
    return AttachmentInfo(
        filename=text_or(filename, "file"),
        content_type=content_type if isinstance(content_type, str) and content_type.strip() else None,
        size=size if isinstance(size, int) and not isinstance(size, bool) and size >= 0 else None,
        is_voice=is_voice is True,
        duration_secs=_seconds(duration_secs),
        read=read,
        url=url if isinstance(url, str) and url.startswith(("https://", "http://")) else "",
    )


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def is_image(info: AttachmentInfo) -> bool:
    """Images of a quoted message go along with its text; its other files (a voice note, a PDF) do not."""
    return kind_for_mime(mime_of(info.filename, info.content_type)) is AttachmentKind.IMAGE


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
        source=info.url,
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
    address: ReplyAddress,
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
        reply_address=address.encode(),
    )
