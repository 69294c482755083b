"""The store's contract: the records it keeps and the async protocol both backends implement."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bot.errors import UserFacingError
from bot.types import ThreadKey

# Both backends migrate forward to this version; a database with a newer version is refused.
SCHEMA_VERSION = 7


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
    """One response's tokens: the ledger. ``input_tokens`` includes ``cached_input_tokens`` (as OpenAI counts
    them); ``at`` is stamped by the store when it writes the row (the value passed in is ignored)."""

    platform: str
    user: str
    channel: str
    thread: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    at: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """Ledger rows added up per UTC day (``YYYY-MM-DD``), platform, user, channel and model: the reports' unit."""

    day: str
    platform: str
    user: str
    channel: str
    model: str
    turns: int
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class BudgetOverride:
    """An admin's token limit for one user or channel (``scope`` "user" or "channel"; ``subject`` its id) and one
    period ("daily" or "monthly"), in place of the setting. 0 means no limit for this subject."""

    platform: str
    scope: str
    subject: str
    period: str
    tokens: int


@dataclass(frozen=True, slots=True)
class BudgetSpend:
    """Tokens (input + output) a user or channel used since the start of the UTC day and month, and the largest
    single response since the month began (0 when there was none)."""

    day: int
    month: int
    largest: int
    turns: int


@dataclass(frozen=True, slots=True)
class StoredImage:
    """The latest image of a thread (made by the bot or posted by a user), kept so it can be edited later."""

    data: bytes
    mime: str
    source: str  # "generated" or "user"
    created_at: float


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One message of a thread's local history (the local engine, ``bot.local_engine``): ``message`` is a chat
    completions message as JSON text (user, assistant with tool calls, tool result); ``tokens`` its estimated size.
    ``seq`` (increasing within a thread) and ``at`` are stamped by the store (values passed in are ignored)."""

    message: str
    tokens: int = 0
    seq: int = field(default=0, compare=False)
    at: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class ChannelSetting:
    """One per-channel setting (``bot.channel_settings``): its name, the value as stored (already checked), who set
    it (an admin id; empty for a model set by ``model NAME`` before v7) and when."""

    name: str
    value: str
    set_by: str = ""
    set_at: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class FeedbackRow:
    """A 👍/👎 on one answer: ``turn`` names the answer (a platform message id), ``value`` is "good" or "bad"."""

    key: str
    turn: str
    user: str
    value: str
    at: float


@dataclass(frozen=True, slots=True)
class AccessRule:
    """An access rule an admin set at run time. ``kind``: user, channel, role, guild, or dms (``value`` "*");
    ``effect``: allow or deny. One rule per (platform, kind, value): allowing what was denied replaces the deny."""

    platform: str
    kind: str
    value: str
    effect: str
    set_by: str  # the admin, as a platform-prefixed id ("slack:U123")
    set_at: float


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


@dataclass(frozen=True, slots=True)
class Document:
    """A file in a retrieval scope's vector store: its name as the user sent it, the OpenAI file id it was
    uploaded as (files outlive vector stores, so an expired store is rebuilt from these), and its content hash."""

    name: str
    file_id: str
    sha256: str
    added_at: float


def thread_scope(key: ThreadKey) -> str:
    """The retrieval scope of one thread's documents: the whole thread key, so no other thread shares it."""
    return f"thread:{key}"


def channel_scope(platform: str, workspace: str, channel: str) -> str:
    """The retrieval scope of a channel's knowledge base (every thread of that channel searches it)."""
    return f"channel:{platform}:{workspace}:{channel}"


@dataclass(frozen=True, slots=True)
class ThreadFile:
    """A file of one thread that its code interpreter works on: uploaded once to OpenAI Files (``file_id``), so
    a container made again after the old one expired gets it back. ``route`` is ``bot.upload_routing``'s."""

    sha256: str
    filename: str
    mime: str
    route: str
    file_id: str
    added_at: float


@dataclass(frozen=True, slots=True)
class ContainerFile:
    """A file in a code-interpreter container: one threadline put there (``sha256`` of its bytes), or one the
    code made and threadline has posted (``sha256`` empty). ``path`` is where the code finds it."""

    file_id: str
    path: str
    sha256: str = ""


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """One response of an answer: ``ref`` names the platform message that showed it (``""`` where none, e.g.
    the console), ``code`` whether the code interpreter ran in it (``show work`` reads those back)."""

    key: ThreadKey
    response_id: str
    ref: str
    code: bool
    at: float


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

    async def usage_rows(self, since: float = 0.0) -> list[UsageRow]:
        """The ledger's rows written at or after ``since``, oldest first."""
        ...

    async def usage_summary(
        self, since: float, *, platform: str | None = None, user: str | None = None, channel: str | None = None
    ) -> list[UsageTotal]:
        """The ledger since a unix time, added up per UTC day, platform, user, channel and model (filtered by the
        names given), ordered by those."""
        ...

    # --- channel settings ------------------------------------------------------------------------------------
    # Per-channel settings by name (bot/channel_settings.py checks names and values); the per-channel model is
    # the setting "model".
    async def channel_settings(self, platform: str, channel: str) -> list[ChannelSetting]:
        """The channel's settings, by name (one read: the engine makes it once per turn)."""
        ...

    async def set_channel_setting(
        self, platform: str, channel: str, name: str, value: str | None, *, set_by: str
    ) -> None:
        """Set one setting of the channel (``set_at`` stamped by the store); None removes it."""
        ...

    async def clear_channel_settings(self, platform: str, channel: str) -> list[str]:
        """Remove every setting of the channel; returns the names removed, sorted."""
        ...

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

    async def feedback_since(self, since: float) -> list[FeedbackRow]:
        """Every user's latest feedback given at or after a unix time, oldest first (reports count it)."""
        ...

    # --- budgets ---------------------------------------------------------------------------------------------
    async def set_budget(self, platform: str, scope: str, subject: str, period: str, tokens: int | None) -> None:
        """Set an admin's limit for one user or channel and period (``BudgetOverride``); None removes it, so the
        setting applies again."""
        ...

    async def budget_overrides(
        self, platform: str, *, user: str | None = None, channel: str | None = None
    ) -> list[BudgetOverride]:
        """The overrides of this user and of this channel (either may be given); with neither, every override of
        the platform. Ordered by scope, subject, period."""
        ...

    async def budget_spend(
        self,
        platform: str,
        *,
        user: str | None = None,
        channel: str | None = None,
        day_start: float,
        month_start: float,
    ) -> BudgetSpend:
        """What one user, or one channel (give exactly one), used of the ledger since the day and month began."""
        ...

    async def take_request(self, platform: str, user: str, *, per_minute: float, now: float) -> float:
        """Take one request from the user's token bucket (``per_minute`` > 0 tokens, refilled continuously; a new
        bucket is full). Returns 0 when taken, else the seconds until one is available (nothing taken). Atomic,
        so replicas share one bucket per user; ``now`` is the caller's clock."""
        ...

    # --- access rules ----------------------------------------------------------------------------------------
    async def access_rules(self, platform: str) -> list[AccessRule]:
        """Every rule set at run time for one platform, ordered by kind, then value."""
        ...

    async def set_access_rule(self, platform: str, kind: str, value: str, effect: str, *, set_by: str) -> None:
        """Add the rule, or replace the one on the same (platform, kind, value)."""
        ...

    async def remove_access_rule(self, platform: str, kind: str, value: str) -> bool:
        """Remove the rule on (platform, kind, value); False when there was none."""
        ...

    async def clear_access_rules(self, platform: str) -> int:
        """Remove every rule of one platform (back to the settings' defaults); returns how many there were."""
        ...

    async def claim_refusal_reply(self, platform: str, user: str, every_secs: float) -> bool:
        """Whether a refused user may be told so now: True, recording now, when they were never told or last told
        at least ``every_secs`` ago. Atomic, so of two replicas refusing the same user at once only one tells."""
        ...

    # --- retrieval and knowledge base ------------------------------------------------------------------------
    # A scope is ``thread_scope(key)`` (a thread's documents) or ``channel_scope(…)`` (a channel's knowledge
    # base); each has at most one vector store and any number of documents.
    async def vector_store(self, scope: str) -> str | None:
        """The scope's vector store id, if one was made."""
        ...

    async def save_vector_store(self, scope: str, vector_store_id: str) -> None:
        """Keep (or replace, after a rebuild) the scope's vector store id."""
        ...

    async def documents(self, scope: str) -> list[Document]:
        """The scope's documents, oldest first."""
        ...

    async def save_document(self, scope: str, document: Document) -> None:
        """Add a document to the scope (one per content hash: the same bytes again replace the row)."""
        ...

    async def remove_documents(self, scope: str, name: str) -> list[Document]:
        """Remove the scope's documents with this name; returns what was removed."""
        ...

    async def forget_scope(self, scope: str) -> None:
        """Drop the scope's vector store id and documents (a thread's ``reset``)."""
        ...

    # --- containers and thread files -------------------------------------------------------------------------
    # A thread has at most one code-interpreter container; only that thread's key ever finds it, its files and
    # its answers' code, so no other thread can reach them.
    async def add_thread_file(self, key: ThreadKey, file: ThreadFile) -> None:
        """Keep a file for the thread's code interpreter (one per content hash and route: the same bytes again
        replace the row)."""
        ...

    async def thread_files(self, key: ThreadKey) -> list[ThreadFile]:
        """The thread's files, oldest first."""
        ...

    async def thread_container(self, key: ThreadKey) -> str | None:
        """The id of the thread's container, if one was made."""
        ...

    async def save_thread_container(self, key: ThreadKey, container_id: str) -> None:
        """Keep the thread's container id (a new one, made after the old expired, replaces it)."""
        ...

    async def save_container_file(self, container_id: str, file: ContainerFile) -> None:
        """Remember a file that is in the container (uploaded by threadline, or made by code and posted)."""
        ...

    async def container_files(self, container_id: str) -> list[ContainerFile]:
        """The files remembered for a container, oldest first."""
        ...

    async def shared_file(self, sha256: str) -> str | None:
        """The OpenAI file id of a file threadline itself ships (the CJK font), uploaded once for every thread."""
        ...

    async def save_shared_file(self, sha256: str, file_id: str) -> None: ...

    async def save_answer(self, record: AnswerRecord) -> None:
        """Keep one response of an answer (the same response again replaces the row)."""
        ...

    async def code_answers(self, key: ThreadKey, limit: int) -> list[AnswerRecord]:
        """The thread's responses that ran code, newest first."""
        ...

    async def answers_by_ref(self, platform: str, ref: str) -> list[AnswerRecord]:
        """The responses of the answer a platform message showed (``ref``), newest first; empty if unknown."""
        ...

    async def forget_thread_files(self, key: ThreadKey) -> str | None:
        """Drop the thread's files, container and answers (a ``reset``); returns the container id it had."""
        ...

    # --- local history ---------------------------------------------------------------------------------------
    # The local engine's thread memory (servers without conversations): messages in order, per thread.
    async def add_history(self, key: ThreadKey, entries: Sequence[HistoryEntry]) -> None:
        """Append the entries to the thread's history, in order, all or none."""
        ...

    async def history(self, key: ThreadKey) -> list[HistoryEntry]:
        """The thread's history, oldest first, with ``seq`` and ``at`` set."""
        ...

    async def forget_history(self, key: ThreadKey, *, through: int | None = None) -> int:
        """Drop the thread's entries with ``seq`` <= ``through`` (all of them when None); returns how many."""
        ...


def unique(keys: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def budget_subject(user: str | None, channel: str | None) -> tuple[str, str]:
    """``budget_spend``'s subject as (column, value): exactly one of user and channel."""
    if user is not None and channel is None:
        return "user", user
    if channel is not None and user is None:
        return "channel", channel
    raise ValueError("budget_spend takes exactly one of user and channel")
