"""SQLite backend (one file, WAL): the embedded default for a single process.

The schema version lives in ``PRAGMA user_version``; ``MIGRATIONS[i]`` takes the schema from version i to i+1.
Calls are short single-row statements on indexed tables, so they run on the event loop: a thread hop would
cost more than the statement (README, Performance).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from bot.store.contract import (
    SCHEMA_VERSION,
    AccessRule,
    AnswerRecord,
    BudgetOverride,
    BudgetSpend,
    ChannelSetting,
    ContainerFile,
    Document,
    FeedbackRow,
    HistoryEntry,
    InboxEntry,
    InboxState,
    SchemaTooNew,
    StoredImage,
    StoreUnavailable,
    ThreadFile,
    ThreadRecord,
    UsageRow,
    UsageTotal,
    budget_subject,
    unique,
)
from bot.types import ThreadKey


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


def _v2(db: sqlite_utils.Database) -> None:
    """Per-thread preferences (voice mode…) and each thread's latest image (for edits)."""
    db.table("thread_prefs").create({"thread_key": str, "name": str, "value": str}, pk=("thread_key", "name"))
    db.table("thread_images").create(
        {"thread_key": str, "data": bytes, "mime": str, "source": str, "created_at": float}, pk="thread_key"
    )
    db.table("threads").create_index(["platform", "last_used_at"])


def _v3(db: sqlite_utils.Database) -> None:
    """Feedback on answers (👍/👎), one row per user and answer."""
    db.table("feedback").create(
        {"thread_key": str, "turn": str, "user": str, "value": str, "at": float}, pk=("thread_key", "turn", "user")
    )
    db.table("feedback").create_index(["at"])


def _v4(db: sqlite_utils.Database) -> None:
    """The durable inbox (accepted messages and their state) and per-thread leases (who answers a thread)."""
    db.execute(
        """CREATE TABLE inbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT, thread_key TEXT NOT NULL, state TEXT NOT NULL,
            message TEXT NOT NULL, address TEXT NOT NULL, posted TEXT,
            accepted_at REAL NOT NULL, updated_at REAL NOT NULL)"""
    )
    db.execute("CREATE INDEX inbox_thread_state ON inbox (thread_key, state, id)")  # next_entry
    db.execute("CREATE INDEX inbox_state ON inbox (state, updated_at)")  # unleased_threads, prune_inbox
    db.execute("CREATE TABLE leases (thread_key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL)")


def _v5(db: sqlite_utils.Database) -> None:
    """Teams: access rules set at run time and when each refused user was last told (bot/access_rules.py)."""
    db.execute(
        """CREATE TABLE access_rules (
            platform TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL, effect TEXT NOT NULL,
            set_by TEXT NOT NULL, set_at REAL NOT NULL, PRIMARY KEY (platform, kind, value))"""
    )
    db.execute(
        "CREATE TABLE refusals (platform TEXT NOT NULL, user TEXT NOT NULL, replied_at REAL NOT NULL, "
        "PRIMARY KEY (platform, user))"
    )
    # Budgets and usage reports (bot/budgets.py, bot/usage_report.py): cached input tokens in the ledger, indexes
    # for a channel's spend and a period's report, admins' limits, and each user's request bucket.
    db.execute("ALTER TABLE usage ADD COLUMN cached_input_tokens INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX usage_channel_at ON usage (platform, channel, at)")
    db.execute("CREATE INDEX usage_at ON usage (at)")
    db.execute(
        """CREATE TABLE budgets (
            platform TEXT NOT NULL, scope TEXT NOT NULL, subject TEXT NOT NULL, period TEXT NOT NULL,
            tokens INTEGER NOT NULL, PRIMARY KEY (platform, scope, subject, period))"""
    )
    db.execute(
        """CREATE TABLE request_buckets (
            platform TEXT NOT NULL, user TEXT NOT NULL, tokens REAL NOT NULL, updated_at REAL NOT NULL,
            PRIMARY KEY (platform, user))"""
    )


def _v6(db: sqlite_utils.Database) -> None:
    """Retrieval: each scope's vector store (a thread's, a channel knowledge base's) and the documents in it."""
    db.execute(
        "CREATE TABLE vector_stores (scope TEXT PRIMARY KEY, vector_store_id TEXT NOT NULL, created_at REAL NOT NULL)"
    )
    db.execute(
        """CREATE TABLE documents (
            scope TEXT NOT NULL, sha256 TEXT NOT NULL, name TEXT NOT NULL, file_id TEXT NOT NULL,
            added_at REAL NOT NULL, PRIMARY KEY (scope, sha256))"""
    )
    # Containers and thread files: each thread's code-interpreter files and container, the files known to be in
    # a container, files threadline ships (the CJK font), and the responses of answers (for show work).
    db.execute(
        """CREATE TABLE thread_files (
            thread_key TEXT NOT NULL, sha256 TEXT NOT NULL, route TEXT NOT NULL, filename TEXT NOT NULL,
            mime TEXT NOT NULL, file_id TEXT NOT NULL, added_at REAL NOT NULL,
            PRIMARY KEY (thread_key, sha256, route))"""
    )
    db.execute(
        "CREATE TABLE thread_containers (thread_key TEXT PRIMARY KEY, container_id TEXT NOT NULL, created_at REAL)"
    )
    db.execute(
        """CREATE TABLE container_files (
            container_id TEXT NOT NULL, file_id TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL,
            added_at REAL NOT NULL, PRIMARY KEY (container_id, file_id))"""
    )
    db.execute("CREATE TABLE shared_files (sha256 TEXT PRIMARY KEY, file_id TEXT NOT NULL, created_at REAL)")
    db.execute(
        """CREATE TABLE answers (
            thread_key TEXT NOT NULL, response_id TEXT NOT NULL, ref TEXT NOT NULL, code INTEGER NOT NULL,
            at REAL NOT NULL, PRIMARY KEY (thread_key, response_id))"""
    )
    db.execute("CREATE INDEX answers_ref ON answers (ref)")
    db.execute("CREATE INDEX answers_code ON answers (thread_key, code, at)")


def _v7(db: sqlite_utils.Database) -> None:
    """Local history: the thread memory of the local engine (servers without conversations). Per-channel
    settings."""
    db.execute(
        """CREATE TABLE local_history (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, thread_key TEXT NOT NULL, message TEXT NOT NULL,
            tokens INTEGER NOT NULL, at REAL NOT NULL)"""
    )
    db.execute("CREATE INDEX local_history_thread ON local_history (thread_key, seq)")
    # Per-channel settings (bot/channel_settings.py), one row per setting; the per-channel model is the setting
    # "model" now: channel_models' rows move here.
    db.execute(
        """CREATE TABLE channel_settings (
            platform TEXT NOT NULL, channel TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
            set_by TEXT NOT NULL, set_at REAL NOT NULL, PRIMARY KEY (platform, channel, name))"""
    )
    db.execute(
        "INSERT INTO channel_settings (platform, channel, name, value, set_by, set_at) "
        "SELECT platform, channel, 'model', model, '', 0 FROM channel_models "
        "WHERE platform IS NOT NULL AND channel IS NOT NULL AND model IS NOT NULL"
    )
    db.execute("DROP TABLE channel_models")


MIGRATIONS: tuple[Callable[[sqlite_utils.Database], None], ...] = (_v1, _v2, _v3, _v4, _v5, _v6, _v7)
assert len(MIGRATIONS) == SCHEMA_VERSION


class SqliteStore:
    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        memory = str(path) == ":memory:"
        try:
            if not memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StoreUnavailable(f"database {self.path} is not writable ({reason})") from exc
        self.db = sqlite_utils.Database(conn)
        self._clock = clock
        try:
            if not memory:
                self.db.enable_wal()
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except sqlite3.Error as exc:
            conn.close()
            raise StoreUnavailable(f"database {self.path} cannot be used ({exc})") from exc

    @property
    def shared(self) -> bool:
        return False

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"database {self.path} has schema version {version}, newer than this threadline "
                f"({SCHEMA_VERSION}); upgrade threadline"
            )
        for target in range(version, SCHEMA_VERSION):
            with self.conn:
                self.conn.execute("BEGIN IMMEDIATE")
                MIGRATIONS[target](self.db)
                self.conn.execute(f"PRAGMA user_version = {target + 1}")

    async def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    async def probe(self) -> int:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS doctor_probe (x)")
            self.conn.execute("INSERT INTO doctor_probe VALUES (1)")
        return await self.schema_version()

    async def close(self) -> None:
        self.conn.close()

    # --- threads ---------------------------------------------------------------------------------------------
    async def thread(self, key: ThreadKey) -> ThreadRecord | None:
        row = self.conn.execute(
            "SELECT key, conversation_id, model, created_at, last_used_at, owned FROM threads WHERE key = ?",
            (str(key),),
        ).fetchone()
        if row is None:
            return None
        return ThreadRecord(row[0], row[1], row[2], row[3], row[4], bool(row[5]))

    async def save_conversation(self, key: ThreadKey, *, conversation_id: str, model: str) -> None:
        now = self._clock()
        self.conn.execute(
            """INSERT INTO threads (key, platform, channel, conversation_id, model, created_at, last_used_at, owned)
               VALUES (?, ?, ?, ?, ?, ?, ?, 0)
               ON CONFLICT(key) DO UPDATE SET conversation_id = excluded.conversation_id,
                 model = excluded.model, created_at = excluded.created_at, last_used_at = excluded.last_used_at""",
            (str(key), key.platform, key.channel, conversation_id, model, now, now),
        )

    async def touch(self, key: ThreadKey) -> None:
        self.conn.execute("UPDATE threads SET last_used_at = ? WHERE key = ?", (self._clock(), str(key)))

    async def forget_conversation(self, key: ThreadKey) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("UPDATE threads SET conversation_id = NULL WHERE key = ?", (str(key),))
            self.conn.execute("DELETE FROM files WHERE thread_key = ?", (str(key),))

    async def latest_thread_id(self, platform: str) -> str | None:
        row = self.conn.execute(
            "SELECT key FROM threads WHERE platform = ? ORDER BY last_used_at DESC LIMIT 1", (platform,)
        ).fetchone()
        return ThreadKey.parse(row[0]).thread if row else None

    async def mark_owned(self, key: ThreadKey) -> None:
        now = self._clock()
        self.conn.execute(
            """INSERT INTO threads (key, platform, channel, created_at, last_used_at, owned)
               VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT(key) DO UPDATE SET owned = 1""",
            (str(key), key.platform, key.channel, now, now),
        )

    async def is_owned(self, key: ThreadKey) -> bool:
        row = self.conn.execute("SELECT owned FROM threads WHERE key = ?", (str(key),)).fetchone()
        return bool(row and row[0])

    # --- dedupe ----------------------------------------------------------------------------------------------
    async def claim_events(self, keys: Iterable[str]) -> bool:
        keys = unique(keys)
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

    async def prune_events(self, retention_secs: float) -> int:
        cur = self.conn.execute("DELETE FROM events WHERE seen_at < ?", (self._clock() - retention_secs,))
        return cur.rowcount

    # --- durable inbox ---------------------------------------------------------------------------------------
    async def accept(self, dedupe_keys: Iterable[str], key: ThreadKey, *, message: str, address: str) -> int | None:
        keys = unique(dedupe_keys)
        now = self._clock()
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            marks = ",".join("?" * len(keys))
            if keys and self.conn.execute(f"SELECT 1 FROM events WHERE key IN ({marks}) LIMIT 1", keys).fetchone():
                return None
            self.conn.executemany("INSERT INTO events (key, seen_at) VALUES (?, ?)", [(k, now) for k in keys])
            cur = self.conn.execute(
                """INSERT INTO inbox (thread_key, state, message, address, accepted_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                (str(key), InboxState.QUEUED.value, message, address, now, now),
            )
            self.conn.execute(
                """INSERT INTO threads (key, platform, channel, created_at, last_used_at, owned)
                   VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT(key) DO UPDATE SET owned = 1""",
                (str(key), key.platform, key.channel, now, now),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

    async def next_entry(self, key: ThreadKey) -> InboxEntry | None:
        row = self.conn.execute(
            f"{_ENTRY} WHERE thread_key = ? AND state IN (?, ?) ORDER BY id LIMIT 1",
            (str(key), InboxState.QUEUED.value, InboxState.RUNNING.value),
        ).fetchone()
        return _entry(row) if row else None

    async def inbox_entry(self, entry_id: int) -> InboxEntry | None:
        row = self.conn.execute(f"{_ENTRY} WHERE id = ?", (entry_id,)).fetchone()
        return _entry(row) if row else None

    async def set_inbox_state(self, entry_id: int, state: InboxState) -> None:
        self.conn.execute(
            "UPDATE inbox SET state = ?, updated_at = ? WHERE id = ?", (state.value, self._clock(), entry_id)
        )

    async def note_posted(self, entry_id: int, posted: str) -> None:
        self.conn.execute("UPDATE inbox SET posted = ?, updated_at = ? WHERE id = ?", (posted, self._clock(), entry_id))

    async def last_interrupted(self, key: ThreadKey) -> InboxEntry | None:
        row = self.conn.execute(
            f"{_ENTRY} WHERE thread_key = ? AND state = ? ORDER BY id DESC LIMIT 1",
            (str(key), InboxState.INTERRUPTED.value),
        ).fetchone()
        return _entry(row) if row else None

    async def prune_inbox(self, retention_secs: float) -> int:
        cur = self.conn.execute(
            "DELETE FROM inbox WHERE state IN (?, ?) AND updated_at < ?",
            (InboxState.DONE.value, InboxState.FAILED.value, self._clock() - retention_secs),
        )
        return cur.rowcount

    # --- per-thread leases -------------------------------------------------------------------------------------
    # Wall-clock time (not the injectable clock): a lease outlives the call that took it, like PostgreSQL's.
    async def take_lease(self, key: ThreadKey, owner: str, ttl_secs: float) -> bool:
        now = time.time()
        cur = self.conn.execute(
            """INSERT INTO leases (thread_key, owner, expires_at) VALUES (?, ?, ?)
               ON CONFLICT(thread_key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
               WHERE leases.expires_at < ? OR leases.owner = excluded.owner""",
            (str(key), owner, now + ttl_secs, now),
        )
        return cur.rowcount == 1

    async def renew_leases(self, owner: str, ttl_secs: float) -> list[ThreadKey]:
        now = time.time()
        rows = self.conn.execute(
            "UPDATE leases SET expires_at = ? WHERE owner = ? AND expires_at >= ? RETURNING thread_key",
            (now + ttl_secs, owner, now),
        ).fetchall()
        return sorted((ThreadKey.parse(row[0]) for row in rows), key=str)

    async def release_lease(self, key: ThreadKey, owner: str) -> None:
        self.conn.execute("DELETE FROM leases WHERE thread_key = ? AND owner = ?", (str(key), owner))

    async def unleased_threads(self, limit: int) -> list[ThreadKey]:
        rows = self.conn.execute(
            """SELECT thread_key FROM inbox WHERE state IN (?, ?) AND NOT EXISTS (
                   SELECT 1 FROM leases WHERE leases.thread_key = inbox.thread_key AND leases.expires_at >= ?)
               GROUP BY thread_key ORDER BY MIN(id) LIMIT ?""",
            (InboxState.QUEUED.value, InboxState.RUNNING.value, time.time(), limit),
        ).fetchall()
        return [ThreadKey.parse(row[0]) for row in rows]

    async def clear_leases(self) -> None:
        self.conn.execute("DELETE FROM leases")

    # --- files -----------------------------------------------------------------------------------------------
    async def file_id(self, key: ThreadKey, sha256: str) -> str | None:
        row = self.conn.execute(
            "SELECT file_id FROM files WHERE thread_key = ? AND sha256 = ?", (str(key), sha256)
        ).fetchone()
        return row[0] if row else None

    async def save_file(self, key: ThreadKey, sha256: str, file_id: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO files (thread_key, sha256, file_id, created_at) VALUES (?, ?, ?, ?)",
            (str(key), sha256, file_id, self._clock()),
        )

    # --- usage -----------------------------------------------------------------------------------------------
    async def record_usage(self, row: UsageRow) -> None:
        self.conn.execute(
            """INSERT INTO usage (at, platform, user, channel, thread, model, input_tokens, output_tokens,
                 cached_input_tokens) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                self._clock(),
                row.platform,
                row.user,
                row.channel,
                row.thread,
                row.model,
                row.input_tokens,
                row.output_tokens,
                row.cached_input_tokens,
            ),
        )

    async def usage_since(self, platform: str, user: str, since: float) -> tuple[int, int, int]:
        row = self.conn.execute(
            """SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0)
               FROM usage WHERE platform = ? AND user = ? AND at >= ?""",
            (platform, user, since),
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    async def usage_rows(self, since: float = 0.0) -> list[UsageRow]:
        rows = self.conn.execute(
            """SELECT platform, user, channel, thread, model, input_tokens, output_tokens, cached_input_tokens, at
               FROM usage WHERE at >= ? ORDER BY id""",
            (since,),
        ).fetchall()
        return [UsageRow(*r) for r in rows]

    async def usage_summary(
        self, since: float, *, platform: str | None = None, user: str | None = None, channel: str | None = None
    ) -> list[UsageTotal]:
        where, params = _filters({"platform": platform, "user": user, "channel": channel})
        rows = self.conn.execute(
            f"""SELECT strftime('%Y-%m-%d', at, 'unixepoch') AS day, platform, user, channel, model, COUNT(*),
                  SUM(input_tokens), SUM(cached_input_tokens), SUM(output_tokens)
               FROM usage WHERE at >= ?{where}
               GROUP BY day, platform, user, channel, model ORDER BY day, platform, user, channel, model""",
            (since, *params),
        ).fetchall()
        return [UsageTotal(str(d), str(p), str(u), str(c), str(m), *map(int, n)) for d, p, u, c, m, *n in rows]

    # --- channel settings ------------------------------------------------------------------------------------
    async def channel_settings(self, platform: str, channel: str) -> list[ChannelSetting]:
        rows = self.conn.execute(
            "SELECT name, value, set_by, set_at FROM channel_settings WHERE platform = ? AND channel = ? ORDER BY name",
            (platform, channel),
        ).fetchall()
        return [ChannelSetting(str(n), str(v), str(b), float(a)) for n, v, b, a in rows]

    async def set_channel_setting(
        self, platform: str, channel: str, name: str, value: str | None, *, set_by: str
    ) -> None:
        if value is None:
            self.conn.execute(
                "DELETE FROM channel_settings WHERE platform = ? AND channel = ? AND name = ?",
                (platform, channel, name),
            )
            return
        self.conn.execute(
            "INSERT OR REPLACE INTO channel_settings (platform, channel, name, value, set_by, set_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (platform, channel, name, value, set_by, self._clock()),
        )

    async def clear_channel_settings(self, platform: str, channel: str) -> list[str]:
        rows = self.conn.execute(
            "DELETE FROM channel_settings WHERE platform = ? AND channel = ? RETURNING name", (platform, channel)
        ).fetchall()
        return sorted(str(row[0]) for row in rows)

    async def channel_model(self, platform: str, channel: str) -> str | None:
        row = self.conn.execute(
            "SELECT value FROM channel_settings WHERE platform = ? AND channel = ? AND name = 'model'",
            (platform, channel),
        ).fetchone()
        return str(row[0]) if row else None

    async def set_channel_model(self, platform: str, channel: str, model: str) -> None:
        await self.set_channel_setting(platform, channel, "model", model, set_by="")

    async def channel_models(self) -> list[tuple[str, str, str]]:
        rows = self.conn.execute(
            "SELECT platform, channel, value FROM channel_settings WHERE name = 'model' ORDER BY platform, channel"
        ).fetchall()
        return [(str(p), str(c), str(m)) for p, c, m in rows]

    # --- per-thread preferences and images -------------------------------------------------------------------
    async def thread_pref(self, key: ThreadKey, name: str) -> str | None:
        row = self.conn.execute(
            "SELECT value FROM thread_prefs WHERE thread_key = ? AND name = ?", (str(key), name)
        ).fetchone()
        return str(row[0]) if row else None

    async def set_thread_pref(self, key: ThreadKey, name: str, value: str | None) -> None:
        if value is None:
            self.conn.execute("DELETE FROM thread_prefs WHERE thread_key = ? AND name = ?", (str(key), name))
        else:
            self.conn.execute(
                "INSERT OR REPLACE INTO thread_prefs (thread_key, name, value) VALUES (?, ?, ?)",
                (str(key), name, value),
            )

    async def save_thread_image(self, key: ThreadKey, image: StoredImage) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO thread_images (thread_key, data, mime, source, created_at) VALUES (?, ?, ?, ?, ?)",
            (str(key), image.data, image.mime, image.source, image.created_at),
        )

    async def record_feedback(self, key: ThreadKey, *, turn: str, user: str, value: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO feedback (thread_key, turn, user, value, at) VALUES (?, ?, ?, ?, ?)",
            (str(key), turn, user, value, self._clock()),
        )

    async def recent_feedback(self, limit: int) -> list[FeedbackRow]:
        rows = self.conn.execute(
            "SELECT thread_key, turn, user, value, at FROM feedback ORDER BY at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [FeedbackRow(str(k), str(t), str(u), str(v), float(a)) for k, t, u, v, a in rows]

    async def feedback_since(self, since: float) -> list[FeedbackRow]:
        rows = self.conn.execute(
            "SELECT thread_key, turn, user, value, at FROM feedback WHERE at >= ? ORDER BY at", (since,)
        ).fetchall()
        return [FeedbackRow(str(k), str(t), str(u), str(v), float(a)) for k, t, u, v, a in rows]

    # --- budgets ---------------------------------------------------------------------------------------------
    async def set_budget(self, platform: str, scope: str, subject: str, period: str, tokens: int | None) -> None:
        if tokens is None:
            self.conn.execute(
                "DELETE FROM budgets WHERE platform = ? AND scope = ? AND subject = ? AND period = ?",
                (platform, scope, subject, period),
            )
        else:
            self.conn.execute(
                "INSERT OR REPLACE INTO budgets (platform, scope, subject, period, tokens) VALUES (?, ?, ?, ?, ?)",
                (platform, scope, subject, period, tokens),
            )

    async def budget_overrides(
        self, platform: str, *, user: str | None = None, channel: str | None = None
    ) -> list[BudgetOverride]:
        query = "SELECT platform, scope, subject, period, tokens FROM budgets WHERE platform = ?"
        params: tuple[Any, ...] = (platform,)
        if user is not None or channel is not None:
            query += " AND ((scope = 'user' AND subject = ?) OR (scope = 'channel' AND subject = ?))"
            params += (user, channel)
        rows = self.conn.execute(f"{query} ORDER BY scope, subject, period", params).fetchall()
        return [BudgetOverride(str(p), str(s), str(j), str(d), int(t)) for p, s, j, d, t in rows]

    async def budget_spend(
        self,
        platform: str,
        *,
        user: str | None = None,
        channel: str | None = None,
        day_start: float,
        month_start: float,
    ) -> BudgetSpend:
        column, subject = budget_subject(user, channel)
        row = self.conn.execute(
            f"""SELECT COALESCE(SUM(CASE WHEN at >= ? THEN input_tokens + output_tokens ELSE 0 END), 0),
                  COALESCE(SUM(input_tokens + output_tokens), 0), COALESCE(MAX(input_tokens + output_tokens), 0),
                  COUNT(*)
               FROM usage WHERE platform = ? AND {column} = ? AND at >= ?""",
            (day_start, platform, subject, month_start),
        ).fetchone()
        return BudgetSpend(int(row[0]), int(row[1]), int(row[2]), int(row[3]))

    async def take_request(self, platform: str, user: str, *, per_minute: float, now: float) -> float:
        size, rate = max(per_minute, 1.0), per_minute / 60
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            row = self.conn.execute(
                "SELECT tokens, updated_at FROM request_buckets WHERE platform = ? AND user = ?", (platform, user)
            ).fetchone()
            tokens = size if row is None else min(size, float(row[0]) + max(0.0, now - float(row[1])) * rate)
            if tokens < 1:
                return (1 - tokens) / rate
            self.conn.execute(
                "INSERT OR REPLACE INTO request_buckets (platform, user, tokens, updated_at) VALUES (?, ?, ?, ?)",
                (platform, user, tokens - 1, now),
            )
        return 0.0

    async def last_thread_image(self, key: ThreadKey) -> StoredImage | None:
        row = self.conn.execute(
            "SELECT data, mime, source, created_at FROM thread_images WHERE thread_key = ?", (str(key),)
        ).fetchone()
        return StoredImage(bytes(row[0]), str(row[1]), str(row[2]), float(row[3])) if row else None

    # --- access rules ----------------------------------------------------------------------------------------
    async def access_rules(self, platform: str) -> list[AccessRule]:
        rows = self.conn.execute(
            "SELECT platform, kind, value, effect, set_by, set_at FROM access_rules WHERE platform = ? "
            "ORDER BY kind, value",
            (platform,),
        ).fetchall()
        return [AccessRule(str(p), str(k), str(v), str(e), str(b), float(a)) for p, k, v, e, b, a in rows]

    async def set_access_rule(self, platform: str, kind: str, value: str, effect: str, *, set_by: str) -> None:
        self.conn.execute(
            """INSERT OR REPLACE INTO access_rules (platform, kind, value, effect, set_by, set_at)
               VALUES (?, ?, ?, ?, ?, ?)""",
            (platform, kind, value, effect, set_by, self._clock()),
        )

    async def remove_access_rule(self, platform: str, kind: str, value: str) -> bool:
        cur = self.conn.execute(
            "DELETE FROM access_rules WHERE platform = ? AND kind = ? AND value = ?", (platform, kind, value)
        )
        return cur.rowcount > 0

    async def clear_access_rules(self, platform: str) -> int:
        return self.conn.execute("DELETE FROM access_rules WHERE platform = ?", (platform,)).rowcount

    async def claim_refusal_reply(self, platform: str, user: str, every_secs: float) -> bool:
        now = self._clock()
        cur = self.conn.execute(
            """INSERT INTO refusals (platform, user, replied_at) VALUES (?, ?, ?)
               ON CONFLICT(platform, user) DO UPDATE SET replied_at = excluded.replied_at
               WHERE refusals.replied_at <= ?""",
            (platform, user, now, now - every_secs),
        )
        return cur.rowcount == 1

    # --- retrieval and knowledge base ------------------------------------------------------------------------
    async def vector_store(self, scope: str) -> str | None:
        row = self.conn.execute("SELECT vector_store_id FROM vector_stores WHERE scope = ?", (scope,)).fetchone()
        return str(row[0]) if row else None

    async def save_vector_store(self, scope: str, vector_store_id: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO vector_stores (scope, vector_store_id, created_at) VALUES (?, ?, ?)",
            (scope, vector_store_id, self._clock()),
        )

    async def documents(self, scope: str) -> list[Document]:
        rows = self.conn.execute(
            "SELECT name, file_id, sha256, added_at FROM documents WHERE scope = ? ORDER BY added_at, name", (scope,)
        ).fetchall()
        return [Document(str(n), str(f), str(h), float(a)) for n, f, h, a in rows]

    async def save_document(self, scope: str, document: Document) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO documents (scope, sha256, name, file_id, added_at) VALUES (?, ?, ?, ?, ?)",
            (scope, document.sha256, document.name, document.file_id, document.added_at),
        )

    async def remove_documents(self, scope: str, name: str) -> list[Document]:
        rows = self.conn.execute(
            "DELETE FROM documents WHERE scope = ? AND name = ? RETURNING name, file_id, sha256, added_at",
            (scope, name),
        ).fetchall()
        return [Document(str(n), str(f), str(h), float(a)) for n, f, h, a in rows]

    async def forget_scope(self, scope: str) -> None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.execute("DELETE FROM documents WHERE scope = ?", (scope,))
            self.conn.execute("DELETE FROM vector_stores WHERE scope = ?", (scope,))

    # --- containers and thread files -------------------------------------------------------------------------
    async def add_thread_file(self, key: ThreadKey, file: ThreadFile) -> None:
        self.conn.execute(
            """INSERT OR REPLACE INTO thread_files (thread_key, sha256, route, filename, mime, file_id, added_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            (str(key), file.sha256, file.route, file.filename, file.mime, file.file_id, file.added_at),
        )

    async def thread_files(self, key: ThreadKey) -> list[ThreadFile]:
        rows = self.conn.execute(
            """SELECT sha256, filename, mime, route, file_id, added_at FROM thread_files WHERE thread_key = ?
               ORDER BY added_at, filename""",
            (str(key),),
        ).fetchall()
        return [ThreadFile(str(h), str(n), str(m), str(r), str(f), float(a)) for h, n, m, r, f, a in rows]

    async def thread_container(self, key: ThreadKey) -> str | None:
        row = self.conn.execute(
            "SELECT container_id FROM thread_containers WHERE thread_key = ?", (str(key),)
        ).fetchone()
        return str(row[0]) if row else None

    async def save_thread_container(self, key: ThreadKey, container_id: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO thread_containers (thread_key, container_id, created_at) VALUES (?, ?, ?)",
            (str(key), container_id, self._clock()),
        )

    async def save_container_file(self, container_id: str, file: ContainerFile) -> None:
        self.conn.execute(
            """INSERT OR REPLACE INTO container_files (container_id, file_id, path, sha256, added_at)
               VALUES (?, ?, ?, ?, ?)""",
            (container_id, file.file_id, file.path, file.sha256, self._clock()),
        )

    async def container_files(self, container_id: str) -> list[ContainerFile]:
        rows = self.conn.execute(
            "SELECT file_id, path, sha256 FROM container_files WHERE container_id = ? ORDER BY added_at, rowid",
            (container_id,),
        ).fetchall()
        return [ContainerFile(str(f), str(p), str(h)) for f, p, h in rows]

    async def shared_file(self, sha256: str) -> str | None:
        row = self.conn.execute("SELECT file_id FROM shared_files WHERE sha256 = ?", (sha256,)).fetchone()
        return str(row[0]) if row else None

    async def save_shared_file(self, sha256: str, file_id: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO shared_files (sha256, file_id, created_at) VALUES (?, ?, ?)",
            (sha256, file_id, self._clock()),
        )

    async def save_answer(self, record: AnswerRecord) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO answers (thread_key, response_id, ref, code, at) VALUES (?, ?, ?, ?, ?)",
            (str(record.key), record.response_id, record.ref, int(record.code), record.at),
        )

    async def code_answers(self, key: ThreadKey, limit: int) -> list[AnswerRecord]:
        rows = self.conn.execute(
            f"{_ANSWER} WHERE thread_key = ? AND code = 1 ORDER BY at DESC, rowid DESC LIMIT ?", (str(key), limit)
        ).fetchall()
        return [_answer(row) for row in rows]

    async def answers_by_ref(self, platform: str, ref: str) -> list[AnswerRecord]:
        rows = self.conn.execute(
            f"{_ANSWER} WHERE ref = ? AND substr(thread_key, 1, ?) = ? ORDER BY at DESC, rowid DESC",
            (ref, len(platform) + 1, f"{platform}:"),
        ).fetchall()
        return [_answer(row) for row in rows]

    async def forget_thread_files(self, key: ThreadKey) -> str | None:
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            row = self.conn.execute(
                "DELETE FROM thread_containers WHERE thread_key = ? RETURNING container_id", (str(key),)
            ).fetchone()
            if row is not None:
                self.conn.execute("DELETE FROM container_files WHERE container_id = ?", (row[0],))
            self.conn.execute("DELETE FROM thread_files WHERE thread_key = ?", (str(key),))
            self.conn.execute("DELETE FROM answers WHERE thread_key = ?", (str(key),))
        return str(row[0]) if row else None

    # --- local history ---------------------------------------------------------------------------------------
    async def add_history(self, key: ThreadKey, entries: Sequence[HistoryEntry]) -> None:
        now = self._clock()
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT INTO local_history (thread_key, message, tokens, at) VALUES (?, ?, ?, ?)",
                [(str(key), entry.message, entry.tokens, now) for entry in entries],
            )

    async def history(self, key: ThreadKey) -> list[HistoryEntry]:
        rows = self.conn.execute(
            "SELECT message, tokens, seq, at FROM local_history WHERE thread_key = ? ORDER BY seq", (str(key),)
        ).fetchall()
        return [HistoryEntry(str(m), int(t), int(s), float(a)) for m, t, s, a in rows]

    async def forget_history(self, key: ThreadKey, *, through: int | None = None) -> int:
        if through is None:
            cursor = self.conn.execute("DELETE FROM local_history WHERE thread_key = ?", (str(key),))
        else:
            cursor = self.conn.execute(
                "DELETE FROM local_history WHERE thread_key = ? AND seq <= ?", (str(key), through)
            )
        return int(cursor.rowcount)


_ENTRY = "SELECT id, thread_key, state, message, address, posted, accepted_at FROM inbox"


def _filters(values: dict[str, str | None]) -> tuple[str, tuple[str, ...]]:
    """`` AND column = ?`` for each value given (the column names are ours, never input)."""
    given = {column: value for column, value in values.items() if value is not None}
    return "".join(f" AND {column} = ?" for column in given), tuple(given.values())


def _entry(row: tuple[Any, ...]) -> InboxEntry:
    entry_id, key, state, message, address, posted, accepted_at = row
    return InboxEntry(
        int(entry_id), ThreadKey.parse(key), InboxState(state), message, address, posted, float(accepted_at)
    )


_ANSWER = "SELECT thread_key, response_id, ref, code, at FROM answers"


def _answer(row: tuple[Any, ...]) -> AnswerRecord:
    key, response_id, ref, code, at = row
    return AnswerRecord(ThreadKey.parse(key), str(response_id), str(ref), bool(code), float(at))
