"""Slack payloads → threadline decisions and core types. Pure: no I/O, no slack-sdk calls.

Thread keys are ``slack:<team>:<channel>:<thread root ts>``. A top-level message (a mention in a channel, or any
DM) is the root of the thread the bot answers in; replies carry ``thread_ts`` of that root.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from yarl import URL

from bot.types import AttachmentKind, ThreadKey, kind_for_mime

PLATFORM = "slack"

# Every bot scope the code uses; manifest.yaml must list each one (a test holds it to that).
REQUIRED_SCOPES: tuple[str, ...] = (
    "app_mentions:read",  # app_mention events
    "assistant:write",  # the assistant view, assistant.threads.setSuggestedPrompts/setTitle
    "channels:history",  # message.channels: thread follow-ups without a mention
    "chat:write",  # post, stream, update, setStatus
    "commands",  # /threadline
    "files:read",  # download what people attach
    "files:write",  # upload images, audio and files
    "groups:history",  # message.groups (private channels)
    "im:history",  # message.im (DMs)
    "mpim:history",  # message.mpim (group DMs)
    "reactions:read",  # reaction_added: 🔍 on an answer shows its code
)

# Message subtypes that are a person talking. Everything else (edits, deletions, joins, bot posts…) is dropped.
USER_SUBTYPES = frozenset({"file_share", "thread_broadcast"})

FILES_READ_MISSING = (
    "I can't read {name}: Slack sent me a login page instead of the file, which means my bot token lacks the "
    "`files:read` scope. A workspace admin needs to add `files:read` to the app (it is in manifest.yaml) and "
    "reinstall it."
)

THREAD_COMMANDS = frozenset({"reset", "voice on", "voice off"})

# A canvas shared as a file: its download is an HTML page, which would otherwise read as a missing files:read.
CANVAS_FILETYPES = frozenset({"canvas", "quip"})
CANVAS_MIMETYPE = "application/vnd.slack-docs"
CANVAS_UNREADABLE = "it is a canvas, and I can't read canvases yet. Paste its text here and I'll work with that."
DEFAULT_BOT_NAME = "threadline"

_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # Slack ids and timestamps; never ":" (thread keys split on it)
_DEFAULT_PORTS = {"http": 80, "https": 443}
TITLE_LIMIT = 80
PROMPT_TITLE_LIMIT = 40


@dataclass(frozen=True, slots=True)
class BotIdentity:
    """Who the bot is in this workspace (from ``auth.test``)."""

    user_id: str
    bot_id: str
    team_id: str
    name: str = DEFAULT_BOT_NAME  # auth.test's ``user``: a mention inside a sentence becomes this name


@dataclass(frozen=True, slots=True)
class SlackFile:
    """The fields of a Slack file object that threadline uses."""

    id: str
    name: str
    mimetype: str
    size: int | None
    url: str
    needs_info: bool = False  # Slack Connect: ``file_access: check_file_info`` → call files.info first
    external: bool = False
    voice: bool = False
    duration_secs: float | None = None
    problem: str = ""  # why it cannot be downloaded (told to the user when the engine asks for the bytes)

    @property
    def kind(self) -> AttachmentKind:
        return kind_for_mime(self.mimetype, voice=self.voice)


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """A person's message, normalised from an ``app_mention`` or ``message`` event."""

    team_id: str
    channel: str
    user: str
    text: str  # with the bot's own mention removed
    ts: str
    thread_ts: str | None
    is_dm: bool
    mentions_bot: bool
    files: tuple[SlackFile, ...]
    event_id: str
    user_team: str  # the sender's workspace (differs from team_id in Slack Connect)

    @property
    def root_ts(self) -> str:
        """The ts of the thread the answer goes to: a top-level message starts its own thread."""
        return self.thread_ts or self.ts

    @property
    def key(self) -> ThreadKey:
        return ThreadKey(PLATFORM, self.team_id, self.channel, self.root_ts)

    @property
    def dedupe_keys(self) -> tuple[str, ...]:
        """Both the delivery (event id) and the post (channel + ts): a retried delivery and the
        app_mention/message pair for one post share at least one of them."""
        keys = [f"slack:msg:{self.channel}:{self.ts}"]
        if self.event_id:
            keys.insert(0, f"slack:event:{self.event_id}")
        return tuple(keys)

    @property
    def is_reset(self) -> bool:
        return self.thread_command == "reset"

    @property
    def thread_command(self) -> str | None:
        """A shared command typed as the whole text of a message in a thread (slash commands can't run there):
        ``reset``, ``voice on``, ``voice off``."""
        line = " ".join(self.text.strip().lower().split())
        return line if not self.files and line in THREAD_COMMANDS else None


def _text(value: Any) -> str:
    """A text field, or "" when the payload holds anything else there."""
    return value if isinstance(value, str) else ""


def _id(value: Any) -> str:
    """An id or a ts (``C0GENERAL``, ``1700000001.000100``), or "" for anything else: ids end up in thread keys."""
    return value if isinstance(value, str) and _ID.fullmatch(value) else ""


def _number(value: Any) -> float | None:
    """A finite JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def is_canvas(raw: dict[str, Any]) -> bool:
    return _text(raw.get("filetype")) in CANVAS_FILETYPES or _text(raw.get("mimetype")).lower() == CANVAS_MIMETYPE


def file_from_payload(raw: dict[str, Any]) -> SlackFile:
    size = _number(raw.get("size"))
    duration_ms = _number(raw.get("duration_ms"))
    return SlackFile(
        id=_text(raw.get("id")),
        name=_text(raw.get("name")) or _text(raw.get("title")) or _text(raw.get("id")) or "file",
        mimetype=_text(raw.get("mimetype")) or "application/octet-stream",
        size=int(size) if size is not None and size >= 0 else None,
        url=_text(raw.get("url_private_download")) or _text(raw.get("url_private")),
        needs_info=raw.get("file_access") == "check_file_info",
        external=raw.get("is_external") is True,
        voice=raw.get("subtype") == "slack_audio",
        duration_secs=duration_ms / 1000 if duration_ms is not None else None,
        problem=CANVAS_UNREADABLE if is_canvas(raw) else "",
    )


def _strip_mentions(text: str, bot: BotIdentity) -> tuple[str, bool]:
    """The text without the bot's own mention where it only addresses the bot (at the start, or after a comma at
    the end: "<@BOT>, can you…", "thanks, <@BOT>!"); inside a sentence it becomes the bot's name ("count on
    <@BOT> for…" → "count on threadline for…"), so the sentence still reads. Other mentions are kept."""
    if not bot.user_id:
        return re.sub(r"[ \t]{2,}", " ", text).strip(), False
    mention = rf"<@{re.escape(bot.user_id)}(?:\|[^>]*)?>"
    found = re.search(mention, text) is not None
    if found:
        text = re.sub(rf"^\s*(?:{mention}\s*[,:;.!?\-–—]*\s*)+", "", text)
        text = re.sub(rf"\s*,\s*{mention}\s*(?=[.!?]*\s*$)", "", text)
        text = re.sub(mention, lambda _: bot.name, text)
    return re.sub(r"[ \t]{2,}", " ", text).strip(), found


@dataclass(frozen=True, slots=True)
class Ignored:
    """An event that is not a person's message for the bot, and why (for a debug line; never payload text)."""

    reason: str
    notable: bool = False  # worth an INFO line: someone meant the bot, but it does not answer there


def parse_event(body: Any, bot: BotIdentity) -> SlackMessage | Ignored:
    """The person's message in an event callback, or why it is dropped early: bot messages, the bot's own posts,
    edits, deletions and every other non-user subtype (``file_share`` is kept), and anything malformed. Total: any
    JSON at all gives one of the two."""
    event = body.get("event") if isinstance(body, dict) else None
    if not isinstance(event, dict):
        return Ignored("no event object")
    kind = event.get("type")
    if kind not in ("app_mention", "message"):
        return Ignored("not a message event")
    subtype = event.get("subtype")
    if subtype == "document_mention":
        return Ignored("a mention inside a canvas (document_mention)", notable=True)
    if subtype is not None and not (isinstance(subtype, str) and subtype in USER_SUBTYPES):
        return Ignored("a subtype that is not a person talking (edit, deletion, join, bot post…)")
    user = _id(event.get("user"))
    if not user:
        return Ignored("no user")
    if event.get("bot_id") or event.get("bot_profile") or user == bot.user_id or event.get("hidden"):
        return Ignored("a bot's post, or a hidden one")
    channel, ts = _id(event.get("channel")), _id(event.get("ts"))
    if not channel or not ts:
        return Ignored("no channel or ts")
    files = event.get("files")
    text, mentioned = _strip_mentions(_text(event.get("text")), bot)
    team_id = _id(body.get("team_id")) or bot.team_id
    return SlackMessage(
        # The workspace the app is installed in (in Slack Connect, event["team"] can be the sender's).
        team_id=team_id,
        channel=channel,
        user=user,
        text=text,
        ts=ts,
        thread_ts=_id(event.get("thread_ts")) or None,
        is_dm=event.get("channel_type") == "im" or channel.startswith("D"),
        mentions_bot=mentioned or kind == "app_mention",
        files=tuple(file_from_payload(f) for f in files if isinstance(f, dict)) if isinstance(files, list) else (),
        event_id=_id(body.get("event_id")),
        user_team=_id(event.get("user_team")) or _id(event.get("team")) or team_id,
    )


def parse_message(body: Any, bot: BotIdentity) -> SlackMessage | None:
    """``parse_event`` for callers that need no reason: the message, or None."""
    parsed = parse_event(body, bot)
    return parsed if isinstance(parsed, SlackMessage) else None


def should_answer(message: SlackMessage, *, event_type: str, thread_owned: bool, require_mention: bool) -> bool:
    """The trigger rules.

    - ``app_mention``: always (in that message's thread).
    - DMs: every message.
    - Other ``message`` events (channels, private channels, group DMs): only replies in a thread the bot already
      answers, and only without ``require_mention``; a reply that mentions the bot also arrives as
      ``app_mention``, and dedupe keeps exactly one of the two.
    """
    if event_type == "app_mention":
        return True
    if message.is_dm:
        return True
    return bool(message.thread_ts) and thread_owned and not require_mention


def url_origin(url: str) -> str | None:
    """``scheme://host:port`` with the default port made explicit, or None for a URL without a host."""
    try:
        parsed = URL(url.strip())
    except (ValueError, TypeError):
        return None
    if not parsed.scheme or not parsed.host or parsed.scheme.lower() not in _DEFAULT_PORTS:
        return None
    scheme = parsed.scheme.lower()
    port = parsed.explicit_port or _DEFAULT_PORTS[scheme]
    return f"{scheme}://{parsed.host.lower()}:{port}"


def origin_allowed(url: str, allowlist: Iterable[str]) -> bool:
    origin = url_origin(url)
    return origin is not None and origin in {url_origin(entry) for entry in allowlist}


def display_origin(url: str) -> str:
    """The origin as a person would write it (no default port), for messages."""
    origin = url_origin(url)
    if origin is None:
        return "an unknown host"
    scheme, rest = origin.split("://", 1)
    host, port = rest.rsplit(":", 1)
    return f"{scheme}://{host}" if int(port) == _DEFAULT_PORTS[scheme] else origin


def thread_title(message: SlackMessage) -> str:
    """A short title for an assistant thread or agent session, from its first message."""
    text = message.text
    if not text.strip() and message.files:
        text = ", ".join(f.name for f in message.files)
    return short_title(text)


def short_title(text: str) -> str:
    """One line of at most ``TITLE_LIMIT`` characters ("New conversation" for none)."""
    text = " ".join(text.split()) or "New conversation"
    return text if len(text) <= TITLE_LIMIT else text[: TITLE_LIMIT - 1].rstrip() + "…"


def suggested_prompts(prompts: Iterable[str]) -> list[dict[str, str]]:
    """assistant.threads.setSuggestedPrompts entries; Slack shows the title, sends the message (max 4)."""
    out = []
    for prompt in prompts:
        prompt = prompt.strip()
        if not prompt:
            continue
        title = prompt if len(prompt) <= PROMPT_TITLE_LIMIT else prompt[: PROMPT_TITLE_LIMIT - 1].rstrip() + "…"
        out.append({"title": title, "message": prompt})
    return out[:4]


def assistant_thread(body: dict[str, Any]) -> tuple[str, str] | None:
    """(channel id, thread ts) of an ``assistant_thread_started`` event."""
    event = body.get("event") if isinstance(body, dict) else None
    thread = event.get("assistant_thread") if isinstance(event, dict) else None
    if not isinstance(thread, dict):
        return None
    channel, ts = _id(thread.get("channel_id")), _id(thread.get("thread_ts"))
    return (channel, ts) if channel and ts else None


@dataclass(frozen=True, slots=True)
class MessagesTabOpened:
    """Someone opened the bot's Messages tab: with ``agent_view`` this replaces ``assistant_thread_started``."""

    team_id: str
    user: str
    channel: str  # the DM, or "" when the event does not name it


def messages_tab_opened(body: Any) -> MessagesTabOpened | None:
    """An ``app_home_opened`` event for the Messages tab, or None (the Home or About tab, no user)."""
    event = body.get("event") if isinstance(body, dict) else None
    if not isinstance(event, dict) or event.get("type") != "app_home_opened" or event.get("tab") != "messages":
        return None
    user = _id(event.get("user"))
    if not user:
        return None
    return MessagesTabOpened(team_id=_id(body.get("team_id")), user=user, channel=_id(event.get("channel")))


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, slots=True)
class SessionStopped:
    """Someone pressed the stop button of a thread's agent session (``agent_session_stopped``)."""

    key: ThreadKey
    streaming: tuple[str, ...]  # the messages that were streaming then (``streaming_message_ts``)


def session_stopped(body: Any, default_team: str) -> SessionStopped | None:
    """The thread an ``agent_session_stopped`` event stops, or None for anything else or a malformed one."""
    event = _object(body.get("event")) if isinstance(body, dict) else {}
    if event.get("type") != "agent_session_stopped":
        return None
    channel, thread = _id(event.get("channel")), _id(event.get("thread_ts"))
    if not channel or not thread:
        return None
    team = _id(body.get("team_id")) or default_team
    listed = event.get("streaming_message_ts")
    streaming = tuple(ts for ts in map(_id, listed) if ts) if isinstance(listed, list) else ()
    return SessionStopped(ThreadKey(PLATFORM, team, channel, thread), streaming)


# The action id of the feedback buttons under every final answer, and the values of its two buttons.
FEEDBACK_ACTION_ID = "threadline_feedback"
FEEDBACK_VALUES = frozenset({"good", "bad"})


@dataclass(frozen=True, slots=True)
class FeedbackClick:
    """A person's 👍 or 👎 on one answer: the answer is the message (``turn``, its ts) the buttons sit on."""

    key: ThreadKey
    turn: str
    user: str
    value: str  # "good" or "bad"


def feedback_click(body: Any, default_team: str) -> FeedbackClick | None:
    """The click in a ``block_actions`` payload on an answer's feedback buttons, or None (another action, a
    message outside a thread, a value the buttons never carry)."""
    if not isinstance(body, dict) or body.get("type") != "block_actions":
        return None
    actions = body.get("actions")
    action = (
        next(
            (a for a in actions if isinstance(a, dict) and a.get("action_id") == FEEDBACK_ACTION_ID),
            None,
        )
        if isinstance(actions, list)
        else None
    )
    value = action.get("value") if action is not None else None
    if not isinstance(value, str) or value not in FEEDBACK_VALUES:
        return None
    message, container = _object(body.get("message")), _object(body.get("container"))
    channel = _id(_object(body.get("channel")).get("id")) or _id(container.get("channel_id"))
    turn = _id(message.get("ts")) or _id(container.get("message_ts"))
    thread = _id(message.get("thread_ts")) or _id(container.get("thread_ts"))
    user = _id(_object(body.get("user")).get("id"))
    if not (channel and turn and thread and user):
        return None
    team = _id(_object(body.get("team")).get("id")) or default_team
    return FeedbackClick(ThreadKey(PLATFORM, team, channel, thread), turn=turn, user=user, value=value)


# The reactions that ask for an answer's code (``show work``): 🔍 and 🔎.
SHOW_WORK_REACTIONS = frozenset({"mag", "mag_right"})


@dataclass(frozen=True, slots=True)
class ShowWorkReaction:
    """A 🔍 on a message: ``ref`` (``channel:ts``) names it, as the engine keeps each answer's message."""

    team_id: str
    channel: str
    ref: str
    user: str
    event_id: str


def show_work_reaction(body: Any, default_team: str) -> ShowWorkReaction | None:
    """The 🔍 in a ``reaction_added`` event on a message, or None (another emoji, a file, a malformed event)."""
    event = _object(body.get("event")) if isinstance(body, dict) else {}
    if event.get("type") != "reaction_added" or event.get("reaction") not in SHOW_WORK_REACTIONS:
        return None
    item = _object(event.get("item"))
    channel, ts, user = _id(item.get("channel")), _id(item.get("ts")), _id(event.get("user"))
    if item.get("type") != "message" or not (channel and ts and user):
        return None
    team = _id(body.get("team_id")) or default_team
    event_id = _id(body.get("event_id")) or f"{channel}:{ts}:{user}:{_id(event.get('event_ts'))}"
    return ShowWorkReaction(team, channel, f"{channel}:{ts}", user, event_id)


def missing_scopes(granted_header: str | None) -> list[str]:
    """Required scopes absent from an ``x-oauth-scopes`` header value, in a stable order."""
    granted = {s.strip() for s in (granted_header or "").split(",") if s.strip()}
    return [scope for scope in REQUIRED_SCOPES if scope not in granted]


@dataclass(frozen=True, slots=True)
class SlashCommand:
    team_id: str
    channel: str
    user: str
    text: str
    is_dm: bool
    trigger_id: str = ""

    @property
    def argument(self) -> str:
        """What follows the command's name (``imagine a red bicycle`` → ``a red bicycle``)."""
        return self.text.strip().partition(" ")[2].strip()

    @property
    def key(self) -> ThreadKey:
        """Slash commands cannot be used in threads, so they address the channel (``model`` is per channel);
        the thread part is empty."""
        return ThreadKey(PLATFORM, self.team_id, self.channel, "")

    @property
    def name(self) -> str:
        return self.text.strip().split(" ", 1)[0].lower()


def parse_slash_command(body: dict[str, Any]) -> SlashCommand:
    channel = _id(body.get("channel_id"))
    return SlashCommand(
        team_id=_id(body.get("team_id")),
        channel=channel,
        user=_id(body.get("user_id")),
        text=_text(body.get("text")),
        is_dm=channel.startswith("D") or body.get("channel_name") == "directmessage",
        trigger_id=_text(body.get("trigger_id")),
    )


SLASH_RESET_HELP = (
    "Slack doesn't let slash commands run inside a thread, and every new top-level message already starts a fresh "
    "conversation. To restart an existing thread, reply `reset` in it (in channels: `@threadline reset`)."
)
