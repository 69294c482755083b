"""Platform-neutral core types. Adapters build these; the core never sees a raw platform payload."""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ThreadKey:
    """Identifies one platform thread, and so one model-side conversation."""

    platform: str
    workspace: str
    channel: str
    thread: str

    def __str__(self) -> str:
        return f"{self.platform}:{self.workspace}:{self.channel}:{self.thread}"

    @classmethod
    def parse(cls, text: str) -> ThreadKey:
        platform, workspace, channel, thread = text.split(":", 3)
        return cls(platform, workspace, channel, thread)


class AttachmentKind(enum.StrEnum):
    IMAGE = "image"
    VOICE = "voice"  # a voice note: transcribe it, and answer with speech
    AUDIO = "audio"  # an audio file: transcribe it
    DOCUMENT = "document"  # PDF, text, spreadsheet…: give it to the model as a file
    OTHER = "other"


IMAGE_MIME_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif"})


def kind_for_mime(mime: str, *, voice: bool = False) -> AttachmentKind:
    """Classify an attachment by MIME type; adapters pass ``voice`` when the platform marks a voice note."""
    mime = mime.split(";", 1)[0].strip().lower()
    if mime.startswith("image/"):
        return AttachmentKind.IMAGE
    if mime.startswith("audio/") or mime in {"video/mp4", "video/webm", "video/mpeg"}:
        return AttachmentKind.VOICE if voice else AttachmentKind.AUDIO
    if mime in {"application/octet-stream", ""}:
        return AttachmentKind.OTHER
    return AttachmentKind.DOCUMENT


Fetch = Callable[[], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with a message. ``fetch`` downloads it only when the engine needs the bytes."""

    kind: AttachmentKind
    mime: str
    filename: str
    size: int | None
    fetch: Fetch = field(compare=False, repr=False)
    duration_secs: float | None = None
    # Where the adapter can fetch it again in another process (a URL, a file id, a path), kept in the durable
    # inbox; "" when it cannot be fetched again (the turn then runs without it).
    source: str = ""


class TurnKind(enum.StrEnum):
    CHAT = "chat"  # a message to answer (images attached with a change request become edits)
    IMAGINE = "imagine"  # /imagine: the text is an image prompt
    SHOW_WORK = "show_work"  # show the code the interpreter ran for an answer (``target``), or the latest one


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    key: ThreadKey
    user_id: str
    text: str
    dedupe_keys: tuple[str, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    user_name: str = ""
    is_dm: bool = False
    user_roles: tuple[str, ...] = ()
    kind: TurnKind = TurnKind.CHAT
    image_size: str = "auto"  # /imagine options
    image_quality: str = "auto"
    answer_format: str = "text"  # "json": the answer is a JSON object, shown as a code block (bot.answer_format)
    target: str = ""  # the platform message a reaction named (its answer's code, for SHOW_WORK)
    received_at: float = field(default_factory=time.monotonic, compare=False)
    # Where the answer goes, in the adapter's own terms (channel, thread ts, recipient…): kept in the durable
    # inbox so any process can answer the message after a crash (``Resumer.reply_for``).
    reply_address: dict[str, str] = field(default_factory=dict, compare=False)


class PartKind(enum.StrEnum):
    IMAGE = "image"
    AUDIO = "audio"  # a spoken reply; adapters may send it as a native voice message
    FILE = "file"


@dataclass(frozen=True, slots=True)
class TaskStep:
    """A unit of tool work in an answer ("Running code"), started (``done=False``) and later finished."""

    id: str
    title: str
    done: bool = False

    @property
    def status(self) -> str:
        """The step as a status line, for platforms that have no steps ("running code…")."""
        return f"{self.title[:1].lower()}{self.title[1:]}…"


@dataclass(frozen=True, slots=True)
class OutgoingFile:
    kind: PartKind
    filename: str
    mime: str
    data: bytes = field(repr=False)
    title: str = ""
    duration_secs: float | None = None
