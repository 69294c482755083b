"""SQLite store (one file, WAL): thread → conversation, dedupe ids, per-thread file ids, the usage ledger.

The schema version lives in ``PRAGMA user_version``; ``MIGRATIONS[i]`` takes the schema from version i to i+1.
Calls are synchronous and short (single-row reads and writes on an indexed table); they run on the event loop.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils


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


def _v1(db: sqlite_utils.Database) -> None:
    db.table("threads").create(
        {
            "key": str,
            "platform": str,
            "channel": str,
            "conversation_id": str,
            "model": str,
            "created_at": float,
            "last_used_at": float,
            "owned": int,
        },
        pk="key",
    )
    db.table("events").create({"key": str, "seen_at": float}, pk="key")
    db.table("events").create_index(["seen_at"])
    db.table("files").create(
        {"thread_key": str, "sha256": str, "file_id": str, "created_at": float}, pk=("thread_key", "sha256")
    )
    db.table("usage").create(
        {
            "id": int,
            "at": float,
            "platform": str,
            "user": str,
            "channel": str,
            "thread": str,
            "model": str,
            "input_tokens": int,
            "output_tokens": int,
        },
        pk="id",
    )
    db.table("usage").create_index(["platform", "user", "at"])
    db.table("channel_models").create({"platform": str, "channel": str, "model": str}, pk=("platform", "channel"))


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1]
SCHEMA_VERSION = len(MIGRATIONS)


class Store:
    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db = sqlite_utils.Database(conn)
        self._clock = clock
        if str(path) != ":memory:":
            self.db.enable_wal()
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"database {self.path} has schema version {version}, newer than this threadline "
                f"({SCHEMA_VERSION}); upgrade threadline"
            )
        for target in range(version, SCHEMA_VERSION):
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                MIGRATIONS[target](self.db)
                self.conn.execute(f"PRAGMA user_version = {target + 1}")

    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def close(self) -> None:
        self.conn.close()

    # --- threads ---------------------------------------------------------------------------------------------
    def thread(self, key: str) -> ThreadRecord | None:
        row = self.conn.execute(
            "SELECT key, conversation_id, model, created_at, last_used_at, owned FROM threads WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        return ThreadRecord(row[0], row[1], row[2], row[3], row[4], bool(row[5]))

    def save_conversation(self, key: str, *, platform: str, channel: str, conversation_id: str, model: str) -> None:
        now = self._clock()
        self.conn.execute(
            """INSERT INTO threads (key, platform, channel, conversation_id, model, created_at, last_used_at, owned)
               VALUES (?, ?, ?, ?, ?, ?, ?, 0)
               ON CONFLICT(key) DO UPDATE SET conversation_id = excluded.conversation_id,
                 model = excluded.model, created_at = excluded.created_at, last_used_at = excluded.last_used_at""",
            (key, platform, channel, conversation_id, model, now, now),
        )

    def touch(self, key: str) -> None:
        self.conn.execute("UPDATE threads SET last_used_at = ? WHERE key = ?", (self._clock(), key))

    def forget_conversation(self, key: str) -> None:
        """The next message in this thread starts a new conversation; ownership and files stay."""
        self.conn.execute("UPDATE threads SET conversation_id = NULL WHERE key = ?", (key,))
        self.conn.execute("DELETE FROM files WHERE thread_key = ?", (key,))

    def latest_thread_id(self, platform: str) -> str | None:
        """The thread part of the most recently used thread key of a platform (the console resumes it)."""
        row = self.conn.execute(
            "SELECT key FROM threads WHERE platform = ? ORDER BY last_used_at DESC LIMIT 1", (platform,)
        ).fetchone()
        return row[0].split(":", 3)[3] if row else None

    def mark_owned(self, key: str, *, platform: str, channel: str) -> None:
        """Remember that the bot answers in this thread (it survives restarts)."""
        now = self._clock()
        self.conn.execute(
            """INSERT INTO threads (key, platform, channel, created_at, last_used_at, owned)
               VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT(key) DO UPDATE SET owned = 1""",
            (key, platform, channel, now, now),
        )

    def is_owned(self, key: str) -> bool:
        row = self.conn.execute("SELECT owned FROM threads WHERE key = ?", (key,)).fetchone()
        return bool(row and row[0])

    # --- dedupe ----------------------------------------------------------------------------------------------
    def claim_events(self, keys: Iterable[str]) -> bool:
        """Record the event ids atomically; False if any of them was seen before (a duplicate delivery)."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return True
        now = self._clock()
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            marks = ",".join("?" * len(keys))
            if self.conn.execute(f"SELECT 1 FROM events WHERE key IN ({marks}) LIMIT 1", keys).fetchone():
                return False
            self.conn.executemany("INSERT INTO events (key, seen_at) VALUES (?, ?)", [(k, now) for k in keys])
        return True

    def prune_events(self, retention_secs: float) -> int:
        cur = self.conn.execute("DELETE FROM events WHERE seen_at < ?", (self._clock() - retention_secs,))
        return cur.rowcount

    # --- files -----------------------------------------------------------------------------------------------
    def file_id(self, thread_key: str, sha256: str) -> str | None:
        row = self.conn.execute(
            "SELECT file_id FROM files WHERE thread_key = ? AND sha256 = ?", (thread_key, sha256)
        ).fetchone()
        return row[0] if row else None

    def save_file(self, thread_key: str, sha256: str, file_id: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO files (thread_key, sha256, file_id, created_at) VALUES (?, ?, ?, ?)",
            (thread_key, sha256, file_id, self._clock()),
        )

    # --- usage -----------------------------------------------------------------------------------------------
    def record_usage(self, row: UsageRow) -> None:
        self.conn.execute(
            """INSERT INTO usage (at, platform, user, channel, thread, model, input_tokens, output_tokens)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                self._clock(),
                row.platform,
                row.user,
                row.channel,
                row.thread,
                row.model,
                row.input_tokens,
                row.output_tokens,
            ),
        )

    def usage_since(self, platform: str, user: str, since: float) -> tuple[int, int, int]:
        """(turns, input tokens, output tokens) for one user since a timestamp."""
        row = self.conn.execute(
            """SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0)
               FROM usage WHERE platform = ? AND user = ? AND at >= ?""",
            (platform, user, since),
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def usage_rows(self) -> list[UsageRow]:
        rows = self.conn.execute(
            "SELECT platform, user, channel, thread, model, input_tokens, output_tokens FROM usage ORDER BY id"
        ).fetchall()
        return [UsageRow(*r) for r in rows]

    # --- per-channel model --------------------------------------------------------------------------------------
    def channel_model(self, platform: str, channel: str) -> str | None:
        row = self.conn.execute(
            "SELECT model FROM channel_models WHERE platform = ? AND channel = ?", (platform, channel)
        ).fetchone()
        return row[0] if row else None

    def set_channel_model(self, platform: str, channel: str, model: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO channel_models (platform, channel, model) VALUES (?, ?, ?)",
            (platform, channel, model),
        )
