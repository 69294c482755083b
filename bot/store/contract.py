"""The store's contract: the records it keeps and the async protocol both backends implement."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from bot.errors import UserFacingError
from bot.types import ThreadKey

# Both backends migrate forward to this version; a database with a newer version is refused.
SCHEMA_VERSION = 4


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer threadline: refuse it rather than guess."""


class StoreUnavailable(UserFacingError):
    """The database cannot be reached (down, or gone mid-run). The message is short and has no password."""


@dataclass(frozen=True, slots=True)
class ThreadRecord:
    key: str
    conversation_id: str | None
    model: str | None
    created_at: float
    last_used_at: float
    owned: bool


@dataclass(frozen=True, slots=True)
class UsageRow:
    platform: str
    user: str
    channel: str
    thread: str
    model: str
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class StoredImage:
    """The latest image of a thread (made by the bot or posted by a user), kept so it can be edited later."""

    data: bytes
    mime: str
    source: str  # "generated" or "user"
    created_at: float


@dataclass(frozen=True, slots=True)
class FeedbackRow:
    """A 👍/👎 on one answer: ``turn`` names the answer (a platform message id), ``value`` is "good" or "bad"."""

    key: str
    turn: str
    user: str
    value: str
    at: float


class InboxState(enum.StrEnum):
    QUEUED = "queued"  # accepted, waiting for its thread's lease holder
    RUNNING = "running"  # its turn is running (an entry left running under a lapsed lease was interrupted)
    DONE = "done"  # answered (or the answer ended in an error reply: the user was told)
    FAILED = "failed"  # could not be answered at all
    INTERRUPTED = "interrupted"  # the process answering it died; the thread was told; ``retry`` queues it again


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """One accepted message in the durable inbox. ``message`` and ``address`` are JSON written by the core
    (``bot.inbox_codec``); ``posted`` names a message an attempt already posted (a Slack stream's ts)."""

    id: int
    key: ThreadKey
    state: InboxState
    message: str
    address: str
    posted: str | None
    accepted_at: float


class Store(Protocol):
    """Everything a turn reads or writes between turns. Every call is a short, single-purpose transaction.

    Thread-scoped data (conversation, files, preferences, images) is keyed by the whole ``ThreadKey``, so one
    thread's files can never be found from another.
    """

    @property
    def shared(self) -> bool:
        """Whether other processes may use this database at once (PostgreSQL). SQLite is one process's: its leases
        are dropped at start-up, since whoever held them is gone."""
        ...

    @property
    def location(self) -> str:
        """Where the data lives, for logs and the doctor: a path, or a URL without its password."""
        ...

    async def close(self) -> None: ...

    async def schema_version(self) -> int: ...

    async def probe(self) -> int:
        """Write and roll back a row: raises if the database is not writable; returns the schema version."""
        ...

    # --- threads ---------------------------------------------------------------------------------------------
    async def thread(self, key: ThreadKey) -> ThreadRecord | None: ...

    async def save_conversation(self, key: ThreadKey, *, conversation_id: str, model: str) -> None: ...

    async def touch(self, key: ThreadKey) -> None: ...

    async def forget_conversation(self, key: ThreadKey) -> None:
        """The next message in this thread starts a new conversation; ownership and preferences stay."""
        ...

    async def latest_thread_id(self, platform: str) -> str | None:
        """The thread part of the most recently used thread of a platform (the console resumes it)."""
        ...

    async def mark_owned(self, key: ThreadKey) -> None:
        """Remember that the bot answers in this thread (it survives restarts)."""
        ...

    async def is_owned(self, key: ThreadKey) -> bool: ...

    # --- dedupe ----------------------------------------------------------------------------------------------
    async def claim_events(self, keys: Iterable[str]) -> bool:
        """Record the event ids atomically; False if any was seen before (a duplicate delivery)."""
        ...

    async def prune_events(self, retention_secs: float) -> int: ...

    # --- durable inbox ---------------------------------------------------------------------------------------
    async def accept(self, dedupe_keys: Iterable[str], key: ThreadKey, *, message: str, address: str) -> int | None:
        """In one transaction: claim the dedupe keys, write the message as queued, mark the thread owned. Returns
        the entry id (ids grow in arrival order), or None, writing nothing, when any key was seen before."""
        ...

    async def next_entry(self, key: ThreadKey) -> InboxEntry | None:
        """The thread's oldest entry that is queued or running (a running one, to a new lease holder, was
        interrupted)."""
        ...

    async def inbox_entry(self, entry_id: int) -> InboxEntry | None: ...

    async def set_inbox_state(self, entry_id: int, state: InboxState) -> None: ...

    async def note_posted(self, entry_id: int, posted: str) -> None:
        """Remember the message an attempt posted first, before it streams into it."""
        ...

    async def last_interrupted(self, key: ThreadKey) -> InboxEntry | None:
        """The thread's newest interrupted entry (``retry`` queues it again)."""
        ...

    async def prune_inbox(self, retention_secs: float) -> int:
        """Delete done and failed entries older than this."""
        ...

    # --- per-thread leases -------------------------------------------------------------------------------------
    async def take_lease(self, key: ThreadKey, owner: str, ttl_secs: float) -> bool:
        """Hold the thread for ``owner`` until now + ttl: True when it was free, lapsed, or already ``owner``'s.
        Decided in the database (its clock, for PostgreSQL), so two replicas never both win."""
        ...

    async def renew_leases(self, owner: str, ttl_secs: float) -> list[ThreadKey]:
        """The heartbeat: extend every live lease of ``owner``; returns the threads it still holds."""
        ...

    async def release_lease(self, key: ThreadKey, owner: str) -> None: ...

    async def unleased_threads(self, limit: int) -> list[ThreadKey]:
        """Threads with queued or running entries and no live lease (their holder died, or nobody took them)."""
        ...

    async def clear_leases(self) -> None:
        """Drop every lease (a single-process database at start-up)."""
        ...

    # --- files -----------------------------------------------------------------------------------------------
    async def file_id(self, key: ThreadKey, sha256: str) -> str | None: ...

    async def save_file(self, key: ThreadKey, sha256: str, file_id: str) -> None: ...

    # --- usage -----------------------------------------------------------------------------------------------
    async def record_usage(self, row: UsageRow) -> None: ...

    async def usage_since(self, platform: str, user: str, since: float) -> tuple[int, int, int]:
        """(turns, input tokens, output tokens) for one user since a unix time."""
        ...

    async def usage_rows(self) -> list[UsageRow]: ...

    # --- per-channel model -----------------------------------------------------------------------------------
    async def channel_model(self, platform: str, channel: str) -> str | None: ...

    async def set_channel_model(self, platform: str, channel: str, model: str) -> None: ...

    async def channel_models(self) -> list[tuple[str, str, str]]:
        """Every per-channel model choice: (platform, channel, model)."""
        ...

    # --- per-thread preferences and images -------------------------------------------------------------------
    async def thread_pref(self, key: ThreadKey, name: str) -> str | None: ...

    async def set_thread_pref(self, key: ThreadKey, name: str, value: str | None) -> None:
        """Set a preference of one thread (e.g. ``voice``); None removes it."""
        ...

    async def save_thread_image(self, key: ThreadKey, image: StoredImage) -> None:
        """Keep this as the thread's latest image (only the latest is kept)."""
        ...

    async def last_thread_image(self, key: ThreadKey) -> StoredImage | None: ...

    # --- feedback --------------------------------------------------------------------------------------------
    async def record_feedback(self, key: ThreadKey, *, turn: str, user: str, value: str) -> None:
        """One user's latest feedback on one answer (a second click replaces the first)."""
        ...

    async def recent_feedback(self, limit: int) -> list[FeedbackRow]:
        """The latest feedback, newest first."""
        ...


def unique(keys: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(keys))
