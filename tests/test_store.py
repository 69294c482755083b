"""The store keeps everything across a restart, migrates forward, dedupes atomically, and says so when the
database is gone. Every contract test runs on both backends: SQLite (a file) and PostgreSQL (a real server:
``THREADLINE_TEST_DATABASE_URL``, else the embedded one from tests/pg_server.py; a fresh database per test)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import sqlite_utils
from psycopg import sql

from bot.store import (
    SCHEMA_VERSION,
    AnswerRecord,
    ChannelSetting,
    ContainerFile,
    Document,
    HistoryEntry,
    InboxState,
    Store,
    StoredImage,
    StoreUnavailable,
    ThreadFile,
    UsageRow,
    channel_scope,
    open_store,
    parse_database,
    thread_scope,
)
from bot.store.location import DatabaseLocation
from bot.store.postgres import MIGRATIONS as PG_MIGRATIONS
from bot.store.postgres import RECONNECT_TIMEOUT, PostgresStore
from bot.store.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from bot.store.sqlite import SqliteStore
from bot.types import ThreadKey
from tests.pg_server import EmbeddedPostgres, database_url, free_port, fresh_database

PASSWORD = "s3cr3t-PW"
SLACK = ThreadKey("slack", "T1", "C1", "1.0")
DISCORD = ThreadKey("discord", "G1", "42", "42")

# The previous release's data (schema v1), one row per table, as (table, columns, values).
V1_ROWS: tuple[tuple[str, tuple[str, ...], tuple[Any, ...]], ...] = (
    (
        "threads",
        ("key", "platform", "channel", "conversation_id", "model", "created_at", "last_used_at", "owned"),
        (str(SLACK), "slack", "C1", "conv_old", "m1", 1.0, 2.0, 1),
    ),
    ("events", ("key", "seen_at"), ("slack:event:Ev0", 1.0)),
    ("files", ("thread_key", "sha256", "file_id", "created_at"), (str(SLACK), "ab" * 32, "file-0", 1.0)),
    (
        "usage",
        ("at", "platform", "user", "channel", "thread", "model", "input_tokens", "output_tokens"),
        (1.0, "slack", "U1", "C1", "1.0", "m1", 10, 20),
    ),
    ("channel_models", ("platform", "channel", "model"), ("slack", "C1", "gpt-old")),
)
# What schema v2 and v3 added, one row per table.
V3_ROWS: tuple[tuple[str, tuple[str, ...], tuple[Any, ...]], ...] = (
    ("thread_prefs", ("thread_key", "name", "value"), (str(SLACK), "voice", "on")),
    (
        "thread_images",
        ("thread_key", "data", "mime", "source", "created_at"),
        (str(SLACK), b"\x89PNG-old", "image/png", "user", 3.0),
    ),
    ("feedback", ("thread_key", "turn", "user", "value", "at"), (str(SLACK), "m1", "U1", "good", 4.0)),
)
# What schema v4 added (the durable inbox), one row.
V4_ROWS: tuple[tuple[str, tuple[str, ...], tuple[Any, ...]], ...] = (
    (
        "inbox",
        ("thread_key", "state", "message", "address", "posted", "accepted_at", "updated_at"),
        (str(SLACK), "queued", '{"text": "old"}', '{"channel": "C1"}', None, 5.0, 5.0),
    ),
)
T = TypeVar("T")


class Backend:
    """One test's database on one backend: open it (again and again: the restart tests), tamper with it raw."""

    def __init__(self, name: str, target: str) -> None:
        self.name = name
        self.target = target  # SQLite: the file; PostgreSQL: the database URL
        self.opened: list[Store] = []

    async def open(self, *, clock: Callable[[], float] = time.time, pool_size: int = 4) -> Store:
        store: Store
        if self.name == "sqlite":
            store = SqliteStore(self.target, clock=clock)
        else:
            store = await PostgresStore.open(parse_database(self.target), pool_size=pool_size, clock=clock)
        self.opened.append(store)
        return store

    async def execute(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        """Run raw SQL outside the store (``?`` placeholders; they become ``%s`` on PostgreSQL)."""
        if self.name == "sqlite":
            conn = sqlite3.connect(self.target, isolation_level=None)
            try:
                conn.execute(statement, params)
            finally:
                conn.close()
        else:
            async with await psycopg.AsyncConnection.connect(self.target, autocommit=True) as pg:
                await pg.execute(statement.replace("?", "%s"), params)

    async def set_schema_version(self, version: int) -> None:
        if self.name == "sqlite":
            await self.execute(f"PRAGMA user_version = {version}")
        else:
            await self.execute("UPDATE schema_version SET version = ?", (version,))

    async def create_v1(self) -> None:
        """The schema and data a database of the previous release (schema v1) has."""
        await self.create_at(1, V1_ROWS)

    async def create_at(self, version: int, rows: tuple[tuple[str, tuple[str, ...], tuple[Any, ...]], ...]) -> None:
        """A database an older threadline left at schema ``version``, holding ``rows``."""
        if self.name == "sqlite":
            db = sqlite_utils.Database(self.target)
            for migration in SQLITE_MIGRATIONS[:version]:
                migration(db)
            db.execute(f"PRAGMA user_version = {version}")
            db.close()
        else:
            async with await psycopg.AsyncConnection.connect(self.target, autocommit=True) as pg:
                for statements in PG_MIGRATIONS[:version]:
                    for statement in statements:
                        await pg.execute(statement)
                await pg.execute("CREATE TABLE schema_version (one boolean PRIMARY KEY, version integer NOT NULL)")
                await pg.execute("INSERT INTO schema_version VALUES (true, %s)", (version,))
        for table, columns, values in rows:
            if self.name == "postgresql":
                values = tuple(bool(v) if c == "owned" else v for c, v in zip(columns, values, strict=True))
            names = ", ".join(f'"{c}"' for c in columns)
            await self.execute(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})", values)

    async def lease_left(self, key: ThreadKey) -> float:
        """Seconds until the lease of ``key`` lapses, read raw (by the database's clock on PostgreSQL)."""
        if self.name == "sqlite":
            conn = sqlite3.connect(self.target)
            try:
                row = conn.execute("SELECT expires_at FROM leases WHERE thread_key = ?", (str(key),)).fetchone()
            finally:
                conn.close()
            return float(row[0]) - time.time()
        async with await psycopg.AsyncConnection.connect(self.target, autocommit=True) as pg:
            cur = await pg.execute(
                "SELECT extract(epoch FROM expires_at - clock_timestamp()) FROM leases WHERE thread_key = %s",
                (str(key),),
            )
            found = await cur.fetchone()
        assert found is not None
        return float(found[0])

    async def race(self, calls: int, call: Callable[[Store, int], Coroutine[Any, Any, T]]) -> list[T]:
        """``call(store, i)`` for every i at once, each on its own connection: threads with their own
        ``SqliteStore`` released together by a barrier on SQLite, the pooled connections of five replicas on
        PostgreSQL. The schema must exist already (open a store first)."""
        if self.name == "postgresql":
            replicas = [await self.open(pool_size=10) for _ in range(5)]
            return list(await asyncio.gather(*(call(replicas[i % 5], i) for i in range(calls))))
        barrier = threading.Barrier(calls, timeout=30)
        results: list[Any] = [None] * calls
        errors: list[BaseException] = []

        def one(index: int) -> None:
            store = SqliteStore(self.target)
            try:
                barrier.wait()
                results[index] = asyncio.run(call(store, index))
            except BaseException as exc:
                errors.append(exc)
            finally:
                asyncio.run(store.close())

        def run_all() -> None:
            threads = [threading.Thread(target=one, args=(i,)) for i in range(calls)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        await asyncio.to_thread(run_all)
        if errors:
            raise errors[0]
        return results

    async def close_all(self) -> None:
        for store in self.opened:
            await store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        chosen = Backend("sqlite", str(tmp_path / "threadline.db"))
        yield chosen
        await chosen.close_all()
        return
    async with fresh_database(postgres_url) as url:
        chosen = Backend("postgresql", url)
        yield chosen
        await chosen.close_all()


# --- the contract, on both backends ---------------------------------------------------------------------------


async def test_everything_survives_a_restart(backend: Backend) -> None:
    store = await backend.open()
    await store.save_conversation(SLACK, conversation_id="conv_a", model="m1")
    await store.mark_owned(DISCORD)
    assert await store.claim_events(["slack:event:Ev1", "slack:msg:C1:1.0"])
    await store.save_file(SLACK, "ab" * 32, "file-1")
    await store.record_usage(UsageRow("slack", "U1", "C1", "1.0", "m1", 120, 30))
    await store.set_channel_model("slack", "C1", "gpt-6-luna")
    await store.set_thread_pref(SLACK, "voice", "on")
    image = StoredImage(b"\x89PNG\r\n\x1a\n\x00\xff" * 100, "image/png", "generated", 1234.5)
    await store.save_thread_image(SLACK, image)
    await store.close()

    reopened = await backend.open()
    record = await reopened.thread(SLACK)
    assert record is not None and record.conversation_id == "conv_a" and record.model == "m1"
    assert await reopened.is_owned(DISCORD)
    assert not await reopened.claim_events(["slack:msg:C1:1.0"]), "a seen event must stay seen after a restart"
    assert await reopened.file_id(SLACK, "ab" * 32) == "file-1"
    assert await reopened.usage_since("slack", "U1", 0) == (1, 120, 30)
    assert await reopened.channel_model("slack", "C1") == "gpt-6-luna"
    assert await reopened.thread_pref(SLACK, "voice") == "on"
    assert await reopened.last_thread_image(SLACK) == image
    assert await reopened.schema_version() == SCHEMA_VERSION
    if isinstance(reopened, SqliteStore):
        assert reopened.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_claim_is_all_or_nothing(backend: Backend) -> None:
    store = await backend.open()
    assert await store.claim_events(["a"])
    assert not await store.claim_events(["b", "a"]), "one known id makes the whole delivery a duplicate"
    assert await store.claim_events(["b"]), "a refused claim must not have recorded its other ids"
    assert await store.claim_events([]), "nothing to claim is not a duplicate"
    assert await store.claim_events(["c", "c"]), "an id repeated within one delivery is one id"


async def test_concurrent_claims_of_one_key_have_one_winner(backend: Backend) -> None:
    """50 deliveries of one event at once, each on its own connection (threads on SQLite, pooled connections
    of five replicas on PostgreSQL): exactly one wins, and the losers' other ids are not recorded."""
    first = await backend.open()
    keys = [["ev:shared", f"ev:own-{i}"] for i in range(50)]
    results = await backend.race(len(keys), lambda store, i: store.claim_events(keys[i]))
    assert sum(results) == 1, f"{sum(results)} deliveries of one event won"
    winner = results.index(True)
    for i in range(50):
        assert await first.claim_events([f"ev:own-{i}"]) == (i != winner), "a refused claim recorded an id"


async def test_old_events_are_pruned_after_retention(backend: Backend) -> None:
    now = [1000.0]
    store = await backend.open(clock=lambda: now[0])
    await store.claim_events(["old"])
    now[0] += 3600
    await store.claim_events(["new"])
    assert await store.prune_events(retention_secs=1800) == 1
    assert await store.claim_events(["old"]) and not await store.claim_events(["new"])


async def test_feedback_keeps_each_users_latest_click_newest_first(backend: Backend) -> None:
    now = [100.0]
    store = await backend.open(clock=lambda: now[0])
    key = ThreadKey("slack", "T1", "C1", "t1")
    await store.record_feedback(key, turn="m1", user="U1", value="good")
    now[0] += 1
    await store.record_feedback(key, turn="m1", user="U2", value="bad")
    now[0] += 1
    await store.record_feedback(key, turn="m1", user="U1", value="bad")  # U1 changed their mind
    rows = await store.recent_feedback(10)
    assert [(r.user, r.value, r.at) for r in rows] == [("U1", "bad", 102.0), ("U2", "bad", 101.0)]
    assert rows[0].key == str(key) and rows[0].turn == "m1"
    assert len(await store.recent_feedback(1)) == 1
    await store.close()
    reopened = await backend.open()
    assert len(await reopened.recent_feedback(10)) == 2, "feedback survives a restart"


async def test_files_are_per_thread(backend: Backend) -> None:
    store = await backend.open()
    await store.save_file(ThreadKey("slack", "T1", "C1", "t1"), "ff" * 32, "file-1")
    assert await store.file_id(ThreadKey("slack", "T1", "C1", "t2"), "ff" * 32) is None, (
        "another thread must never get this thread's file"
    )
    await store.save_file(ThreadKey("slack", "T1", "C1", "t1"), "ff" * 32, "file-2")
    assert await store.file_id(ThreadKey("slack", "T1", "C1", "t1"), "ff" * 32) == "file-2"


async def test_reset_forgets_conversation_but_keeps_ownership(backend: Backend) -> None:
    store = await backend.open()
    key = ThreadKey("discord", "G1", "c", "k")
    await store.mark_owned(key)
    await store.save_conversation(key, conversation_id="conv_1", model="m")
    await store.save_file(key, "ee" * 32, "file-1")
    await store.set_thread_pref(key, "voice", "on")
    await store.forget_conversation(key)
    record = await store.thread(key)
    assert record is not None and record.conversation_id is None and record.owned
    assert await store.file_id(key, "ee" * 32) is None, "files belong to the forgotten conversation"
    assert await store.thread_pref(key, "voice") == "on", "preferences outlive a reset"


async def test_the_rest_of_the_contract(backend: Backend) -> None:
    now = [100.0]
    store = await backend.open(clock=lambda: now[0])
    assert await store.thread(SLACK) is None and not await store.is_owned(SLACK)
    assert await store.latest_thread_id("slack") is None
    for n in range(3):
        now[0] += 1
        await store.save_conversation(ThreadKey("slack", "T1", "C1", f"{n}.0"), conversation_id=f"c{n}", model="m")
    now[0] += 1
    await store.touch(ThreadKey("slack", "T1", "C1", "1.0"))
    assert await store.latest_thread_id("slack") == "1.0"
    assert await store.latest_thread_id("discord") is None

    await store.record_usage(UsageRow("slack", "U1", "C1", "1.0", "m", 1, 2))
    now[0] += 10
    await store.record_usage(UsageRow("slack", "U1", "C1", "1.0", "m", 3, 4))
    await store.record_usage(UsageRow("slack", "U2", "C1", "1.0", "m", 5, 6))
    assert await store.usage_since("slack", "U1", now[0] - 5) == (1, 3, 4)
    assert await store.usage_since("slack", "U9", 0) == (0, 0, 0)
    assert [r.input_tokens for r in await store.usage_rows()] == [1, 3, 5]

    for platform, channel, model in [("slack", "b", "m2"), ("slack", "B", "m1"), ("discord", "z", "m3")]:
        await store.set_channel_model(platform, channel, model)
    await store.set_channel_model("slack", "b", "m4")
    assert await store.channel_models() == [("discord", "z", "m3"), ("slack", "B", "m1"), ("slack", "b", "m4")]
    assert await store.channel_model("discord", "B") is None

    await store.set_thread_pref(SLACK, "voice", "on")
    await store.set_thread_pref(SLACK, "voice", "off")
    assert await store.thread_pref(SLACK, "voice") == "off"
    assert await store.thread_pref(DISCORD, "voice") is None
    await store.set_thread_pref(SLACK, "voice", None)
    assert await store.thread_pref(SLACK, "voice") is None

    assert await store.last_thread_image(SLACK) is None
    await store.save_thread_image(SLACK, StoredImage(b"one", "image/png", "user", 1.0))
    await store.save_thread_image(SLACK, StoredImage(b"two", "image/webp", "generated", 2.0))
    assert await store.last_thread_image(SLACK) == StoredImage(b"two", "image/webp", "generated", 2.0)
    assert await store.last_thread_image(DISCORD) is None

    assert await store.probe() == SCHEMA_VERSION
    assert await store.claim_events(["threadline:probe"]), "the probe's write was rolled back"
    assert await store.usage_since("slack", "U1", 0) == (2, 4, 6), "the probe wrote nothing"


# --- access rules and refusal replies, on both backends -------------------------------------------------------


async def test_access_rules_are_per_platform_replaced_removed_and_kept(backend: Backend) -> None:
    now = [100.0]
    store = await backend.open(clock=lambda: now[0])
    assert await store.access_rules("slack") == []
    await store.set_access_rule("slack", "user", "U2", "allow", set_by="slack:UA")
    await store.set_access_rule("slack", "channel", "C1", "deny", set_by="slack:UA")
    await store.set_access_rule("discord", "user", "U2", "deny", set_by="discord:1")
    now[0] += 1
    await store.set_access_rule("slack", "user", "U2", "deny", set_by="slack:UB")  # replaces the allow
    await store.set_access_rule("slack", "dms", "*", "deny", set_by="slack:UB")
    await store.set_access_rule("slack", "user", "U1", "allow", set_by="slack:UB")
    assert [(r.kind, r.value, r.effect, r.set_by, r.set_at) for r in await store.access_rules("slack")] == [
        ("channel", "C1", "deny", "slack:UA", 100.0),
        ("dms", "*", "deny", "slack:UB", 101.0),
        ("user", "U1", "allow", "slack:UB", 101.0),
        ("user", "U2", "deny", "slack:UB", 101.0),
    ]
    assert [r.platform for r in await store.access_rules("discord")] == ["discord"]

    assert await store.remove_access_rule("slack", "channel", "C1")
    assert not await store.remove_access_rule("slack", "channel", "C1"), "nothing left to remove"
    reopened = await backend.open()
    kept = [(r.kind, r.value) for r in await reopened.access_rules("slack")]
    assert kept == [("dms", "*"), ("user", "U1"), ("user", "U2")]
    assert await reopened.clear_access_rules("slack") == 3
    assert await reopened.access_rules("slack") == []
    assert len(await reopened.access_rules("discord")) == 1, "a reset of one platform leaves the others alone"


async def test_a_refused_user_is_told_at_most_once_per_interval(backend: Backend) -> None:
    now = [1000.0]
    store = await backend.open(clock=lambda: now[0])
    assert await store.claim_refusal_reply("slack", "U1", 3600)
    now[0] += 3599
    assert not await store.claim_refusal_reply("slack", "U1", 3600), "within the hour: not again"
    assert await store.claim_refusal_reply("slack", "U2", 3600), "another user is told"
    assert await store.claim_refusal_reply("discord", "U1", 3600), "the same id on another platform is told"
    now[0] += 1
    assert await store.claim_refusal_reply("slack", "U1", 3600), "an hour after the last reply: told again"
    assert not await store.claim_refusal_reply("slack", "U1", 3600)
    reopened = await backend.open(clock=lambda: now[0] + 10)
    assert not await reopened.claim_refusal_reply("slack", "U1", 3600), "the time of the last reply is kept"
    assert await reopened.claim_refusal_reply("slack", "U1", 0), "an interval of 0 always tells"


async def test_concurrent_refusals_of_one_user_tell_once(backend: Backend) -> None:
    await (await backend.open()).close()
    told = await backend.race(10, lambda store, _: store.claim_refusal_reply("slack", "U1", 3600))
    assert sorted(told) == [False] * 9 + [True]


# --- budgets and the usage ledger's reports, on both backends -------------------------------------------------

DAY = 86400.0
NOV_30 = 1_764_460_800.0  # 2025-11-30 00:00 UTC


async def test_usage_summary_adds_up_the_ledger_per_day_user_channel_and_model(backend: Backend) -> None:
    now = [NOV_30 + 3600]
    store = await backend.open(clock=lambda: now[0])
    await store.record_usage(UsageRow("slack", "U1", "C1", "t1", "m1", 100, 10, cached_input_tokens=40))
    await store.record_usage(UsageRow("slack", "U1", "C1", "t1", "m1", 200, 20, cached_input_tokens=50))
    await store.record_usage(UsageRow("slack", "U2", "C2", "t2", "m2", 1, 2))
    now[0] += DAY  # 2025-12-01
    await store.record_usage(UsageRow("slack", "U1", "C1", "t1", "m1", 5, 6))
    await store.record_usage(UsageRow("discord", "U1", "9", "9", "m1", 7, 8, cached_input_tokens=7))

    rows = await store.usage_rows()
    assert [(r.input_tokens, r.cached_input_tokens) for r in rows] == [(100, 40), (200, 50), (1, 0), (5, 0), (7, 7)]
    assert [r.at for r in rows] == [NOV_30 + 3600] * 3 + [NOV_30 + DAY + 3600] * 2, "the store stamps each row"
    assert len(await store.usage_rows(since=NOV_30 + DAY)) == 2

    summary = await store.usage_summary(0)
    assert [(t.day, t.platform, t.user, t.channel, t.model, t.turns) for t in summary] == [
        ("2025-11-30", "slack", "U1", "C1", "m1", 2),
        ("2025-11-30", "slack", "U2", "C2", "m2", 1),
        ("2025-12-01", "discord", "U1", "9", "m1", 1),
        ("2025-12-01", "slack", "U1", "C1", "m1", 1),
    ]
    assert (summary[0].input_tokens, summary[0].cached_input_tokens, summary[0].output_tokens) == (300, 90, 30)
    for column in ("input_tokens", "cached_input_tokens", "output_tokens"):
        assert sum(getattr(t, column) for t in summary) == sum(getattr(r, column) for r in rows), column
    assert sum(t.turns for t in summary) == len(rows)

    assert [t.day for t in await store.usage_summary(NOV_30 + DAY)] == ["2025-12-01", "2025-12-01"]
    assert [(t.user, t.day) for t in await store.usage_summary(0, platform="slack", user="U1")] == [
        ("U1", "2025-11-30"),
        ("U1", "2025-12-01"),
    ]
    assert [t.user for t in await store.usage_summary(0, platform="slack", channel="C2")] == ["U2"]
    assert await store.usage_summary(0, platform="slack", channel="nowhere") == []


async def test_budget_spend_counts_a_user_or_channel_since_the_day_and_month_began(backend: Backend) -> None:
    now = [NOV_30 + 3600]
    store = await backend.open(clock=lambda: now[0])
    await store.record_usage(UsageRow("slack", "U1", "C1", "t", "m", 1000, 1000))  # November: not this month
    now[0] = NOV_30 + DAY + 60  # 2025-12-01 00:01
    await store.record_usage(UsageRow("slack", "U1", "C1", "t", "m", 300, 100))
    now[0] += DAY  # 2025-12-02
    await store.record_usage(UsageRow("slack", "U1", "C2", "t", "m", 20, 5))
    await store.record_usage(UsageRow("slack", "U2", "C1", "t", "m", 600, 0))
    await store.record_usage(UsageRow("discord", "U1", "C1", "t", "m", 9999, 0))
    window = {"day_start": NOV_30 + 2 * DAY, "month_start": NOV_30 + DAY}

    user = await store.budget_spend("slack", user="U1", **window)
    assert (user.day, user.month, user.largest, user.turns) == (25, 425, 400, 2)
    channel = await store.budget_spend("slack", channel="C1", **window)
    assert (channel.day, channel.month, channel.largest, channel.turns) == (600, 1000, 600, 2)
    nobody = await store.budget_spend("slack", user="U9", **window)
    assert (nobody.day, nobody.month, nobody.largest, nobody.turns) == (0, 0, 0, 0)
    with pytest.raises(ValueError, match="exactly one"):
        await store.budget_spend("slack", user="U1", channel="C1", **window)


async def test_budget_overrides_are_set_replaced_removed_and_kept(backend: Backend) -> None:
    store = await backend.open()
    assert await store.budget_overrides("slack") == []
    await store.set_budget("slack", "user", "U1", "daily", 1000)
    await store.set_budget("slack", "user", "U1", "monthly", 0)
    await store.set_budget("slack", "channel", "C1", "daily", 5000)
    await store.set_budget("slack", "user", "U2", "daily", 7)
    await store.set_budget("discord", "user", "U1", "daily", 9)
    await store.set_budget("slack", "user", "U1", "daily", 2000)  # replaces
    mine = await store.budget_overrides("slack", user="U1", channel="C1")
    assert [(o.scope, o.subject, o.period, o.tokens) for o in mine] == [
        ("channel", "C1", "daily", 5000),
        ("user", "U1", "daily", 2000),
        ("user", "U1", "monthly", 0),
    ]
    assert [o.subject for o in await store.budget_overrides("slack", user="U2")] == ["U2"]
    assert [o.subject for o in await store.budget_overrides("slack", channel="U1")] == [], "scopes do not mix"
    assert len(await store.budget_overrides("slack")) == 4
    await store.set_budget("slack", "user", "U1", "monthly", None)
    await store.set_budget("slack", "user", "U9", "monthly", None)  # nothing to remove: no error
    reopened = await backend.open()
    assert [(o.subject, o.period) for o in await reopened.budget_overrides("slack", user="U1")] == [("U1", "daily")]
    assert [o.tokens for o in await reopened.budget_overrides("discord")] == [9]


async def test_a_request_bucket_holds_a_minute_of_requests_and_refills(backend: Backend) -> None:
    store = await backend.open()
    t = 1000.0
    assert [await store.take_request("slack", "U1", per_minute=3, now=t) for _ in range(3)] == [0.0] * 3
    wait = await store.take_request("slack", "U1", per_minute=3, now=t)
    assert wait == pytest.approx(20.0), "one request every 20 s at 3 a minute"
    assert await store.take_request("slack", "U2", per_minute=3, now=t) == 0.0, "each user has a bucket"
    assert await store.take_request("discord", "U1", per_minute=3, now=t) == 0.0, "per platform"
    assert await store.take_request("slack", "U1", per_minute=3, now=t + 10) == pytest.approx(10.0)
    reopened = await backend.open()
    assert await reopened.take_request("slack", "U1", per_minute=3, now=t + 20) == 0.0, "kept; refilled by one"
    assert await reopened.take_request("slack", "U1", per_minute=3, now=t + 20) > 0
    assert [await reopened.take_request("slack", "U1", per_minute=3, now=t + 600) for _ in range(4)][:3] == [0.0] * 3
    assert await reopened.take_request("slack", "U1", per_minute=3, now=t + 600) > 0, "full holds 3, not 30"


async def test_concurrent_requests_share_one_bucket(backend: Backend) -> None:
    await (await backend.open()).close()
    waits = await backend.race(10, lambda store, _: store.take_request("slack", "U1", per_minute=4, now=5000.0))
    assert sorted(w == 0.0 for w in waits) == [False] * 6 + [True] * 4


async def test_feedback_since_is_oldest_first(backend: Backend) -> None:
    now = [100.0]
    store = await backend.open(clock=lambda: now[0])
    await store.record_feedback(SLACK, turn="a1", user="U1", value="good")
    now[0] = 200.0
    await store.record_feedback(DISCORD, turn="a2", user="U2", value="bad")
    assert [(f.turn, f.value) for f in await store.feedback_since(0)] == [("a1", "good"), ("a2", "bad")]
    assert [f.turn for f in await store.feedback_since(150)] == ["a2"]


async def test_a_v4_ledger_gets_no_cached_tokens_and_empty_budgets(backend: Backend) -> None:
    await backend.create_at(4, V1_ROWS + V3_ROWS + V4_ROWS)
    store = await backend.open()
    (row,) = await store.usage_rows()
    assert (row.input_tokens, row.cached_input_tokens, row.output_tokens, row.at) == (10, 0, 20, 1.0)
    assert await store.budget_overrides("slack") == []
    spend = await store.budget_spend("slack", user="U1", day_start=0, month_start=0)
    assert (spend.month, spend.largest, spend.turns) == (30, 30, 1)


# --- the durable inbox and per-thread leases, on both backends ------------------------------------------------


def _message(n: int) -> dict[str, str]:
    return {"message": f'{{"text": "m{n}"}}', "address": f'{{"channel": "C1", "n": "{n}"}}'}


async def _accept(store: Store, dedupe_key: str, key: ThreadKey, n: int = 0) -> int:
    entry_id = await store.accept([dedupe_key], key, **_message(n))
    assert entry_id is not None, f"{dedupe_key} was refused"
    return entry_id


async def test_accept_writes_the_entry_and_owns_the_thread_once(backend: Backend) -> None:
    store = await backend.open(clock=lambda: 500.0)
    first = await store.accept(["slack:event:Ev1", "slack:msg:C1:1.0"], SLACK, **_message(1))
    assert first is not None
    entry = await store.inbox_entry(first)
    assert entry is not None
    assert (entry.id, entry.key, entry.state, entry.posted, entry.accepted_at) == (
        first,
        SLACK,
        InboxState.QUEUED,
        None,
        500.0,
    )
    assert (entry.message, entry.address) == ('{"text": "m1"}', '{"channel": "C1", "n": "1"}')
    assert await store.is_owned(SLACK), "accepting a message makes the thread the bot's"
    await store.set_inbox_state(first, InboxState.RUNNING)

    assert await store.accept(["slack:msg:C1:1.0", "slack:event:Ev2"], SLACK, **_message(2)) is None
    assert await store.accept(["slack:event:Ev1"], DISCORD, **_message(3)) is None
    running = await store.inbox_entry(first)
    assert running is not None and running.state is InboxState.RUNNING, "a duplicate touched the first entry"
    assert not await store.is_owned(DISCORD), "a duplicate marked its thread owned"
    assert await store.claim_events(["slack:event:Ev2"]), "a duplicate recorded its other dedupe key"
    assert await store.next_entry(DISCORD) is None
    await store.set_inbox_state(first, InboxState.DONE)
    assert await store.next_entry(SLACK) is None, "a duplicate wrote a second entry"
    assert await store.accept([], SLACK, **_message(4)) is not None, "no dedupe key is not a duplicate"


async def test_entries_are_answered_in_arrival_order_per_thread(backend: Backend) -> None:
    store = await backend.open()
    other = ThreadKey("slack", "T1", "C1", "2.0")
    # Fired together (one batch on PostgreSQL, sorted before it runs), dedupe keys in descending order.
    ids = await asyncio.gather(*(_accept(store, f"ev-{9 - n}", SLACK if n % 2 else DISCORD, n) for n in range(10)))
    mine = [i for n, i in enumerate(ids) if n % 2]
    assert mine == sorted(mine), f"one thread's entries out of arrival order: {ids}"
    a1, a2, a3 = [await _accept(store, f"late-{n}", SLACK, n) for n in range(3)]
    assert max(ids) < a1 < a2 < a3, "ids grow in arrival order"
    for entry_id in mine:
        await store.set_inbox_state(entry_id, InboxState.DONE)

    async def next_id(key: ThreadKey) -> int | None:
        entry = await store.next_entry(key)
        assert entry is None or entry.key == key, "another thread's entry"
        return entry.id if entry else None

    discord_first = ids[0]
    assert await next_id(SLACK) == a1 and await next_id(DISCORD) == discord_first
    await store.set_inbox_state(a1, InboxState.RUNNING)
    assert await next_id(SLACK) == a1, "a running entry is still the thread's next (it was interrupted)"
    await store.set_inbox_state(a1, InboxState.DONE)
    assert await next_id(SLACK) == a2
    await store.set_inbox_state(a2, InboxState.FAILED)
    assert await next_id(SLACK) == a3
    assert await next_id(other) is None
    assert await next_id(DISCORD) == discord_first, "another thread's progress moved this one"

    assert await store.last_interrupted(SLACK) is None
    await store.set_inbox_state(a2, InboxState.INTERRUPTED)
    await store.set_inbox_state(a3, InboxState.INTERRUPTED)
    assert await next_id(SLACK) is None, "an interrupted entry waits for retry"
    newest = await store.last_interrupted(SLACK)
    assert newest is not None and newest.id == a3 and newest.state is InboxState.INTERRUPTED
    assert await store.last_interrupted(DISCORD) is None
    await store.set_inbox_state(a3, InboxState.QUEUED)  # retry
    assert await next_id(SLACK) == a3
    last = await store.last_interrupted(SLACK)
    assert last is not None and last.id == a2
    assert await store.inbox_entry(a3 + 1000) is None


async def test_note_posted_round_trips(backend: Backend) -> None:
    store = await backend.open()
    entry_id = await _accept(store, "ev", SLACK)
    await store.set_inbox_state(entry_id, InboxState.RUNNING)
    await store.note_posted(entry_id, "1700000000.000100")
    await store.close()
    reopened = await backend.open()
    entry = await reopened.next_entry(SLACK)
    assert entry is not None and entry.posted == "1700000000.000100" and entry.state is InboxState.RUNNING


async def test_prune_inbox_deletes_only_old_finished_entries(backend: Backend) -> None:
    now = [1000.0]
    store = await backend.open(clock=lambda: now[0])
    states = [InboxState.DONE, InboxState.FAILED, InboxState.QUEUED, InboxState.RUNNING, InboxState.INTERRUPTED]
    old: dict[InboxState, int] = {}
    for n, state in enumerate(states):
        entry_id = await _accept(store, f"old-{n}", SLACK, n)
        await store.set_inbox_state(entry_id, state)
        old[state] = entry_id
    now[0] += 3600
    recent = await _accept(store, "recent", SLACK)
    await store.set_inbox_state(recent, InboxState.DONE)
    now[0] += 60
    assert await store.prune_inbox(retention_secs=1800) == 2
    assert await store.inbox_entry(old[InboxState.DONE]) is None
    assert await store.inbox_entry(old[InboxState.FAILED]) is None
    for state in (InboxState.QUEUED, InboxState.RUNNING, InboxState.INTERRUPTED):
        kept = await store.inbox_entry(old[state])
        assert kept is not None and kept.state is state, f"an old {state} entry was pruned"
    assert await store.inbox_entry(recent) is not None, "a recent done entry was pruned"
    assert await store.prune_inbox(retention_secs=1800) == 0


async def test_leases_are_taken_renewed_and_released(backend: Backend) -> None:
    store = await backend.open()
    assert store.shared is (backend.name == "postgresql")
    third = ThreadKey("slack", "T1", "C1", "3.0")
    assert await store.take_lease(SLACK, "a", 30)
    assert not await store.take_lease(SLACK, "b", 30), "a live lease went to a second owner"
    assert await store.take_lease(SLACK, "a", 30), "the holder takes its own lease again"

    assert await store.take_lease(DISCORD, "a", 0.2)
    await asyncio.sleep(0.5)
    assert await store.take_lease(DISCORD, "b", 30), "a lapsed lease goes to whoever takes it"
    assert await store.take_lease(third, "a", 60)
    assert await store.renew_leases("a", 3600) == [SLACK, third], "a's lapsed, retaken lease was reported held"
    assert await backend.lease_left(third) > 600, "the renewal did not extend the lease"
    assert await backend.lease_left(DISCORD) < 60, "another owner's lease was renewed"
    assert await store.renew_leases("b", 30) == [DISCORD]
    assert await store.renew_leases("nobody", 30) == []

    await store.release_lease(SLACK, "b")  # not b's: nothing happens
    assert not await store.take_lease(SLACK, "b", 30)
    await store.release_lease(SLACK, "a")
    assert await store.take_lease(SLACK, "b", 30), "a released lease is free"

    assert await store.take_lease(DISCORD, "c", 0.2) is False
    await store.clear_leases()
    assert await store.renew_leases("a", 30) == [] and await store.renew_leases("b", 30) == []
    assert await store.take_lease(DISCORD, "c", 30) and await store.take_lease(SLACK, "c", 30)


async def test_a_lapsed_lease_is_not_renewed(backend: Backend) -> None:
    store = await backend.open()
    assert await store.take_lease(SLACK, "a", 0.2)
    await asyncio.sleep(0.5)
    assert await store.renew_leases("a", 30) == [], "a lapsed lease was renewed: its thread may be another's now"
    assert await store.take_lease(SLACK, "b", 30)


async def test_unleased_threads_are_those_with_work_and_no_live_lease(backend: Backend) -> None:
    store = await backend.open()
    keys = [ThreadKey("slack", "T1", "C1", f"{n}.0") for n in range(5)]
    plan = [  # (thread, final state), in arrival order
        (0, InboxState.QUEUED),
        (1, InboxState.DONE),
        (1, InboxState.QUEUED),
        (2, InboxState.RUNNING),
        (0, InboxState.QUEUED),
        (3, InboxState.DONE),
        (4, InboxState.INTERRUPTED),
        (4, InboxState.FAILED),
    ]
    for n, (thread, state) in enumerate(plan):
        await store.set_inbox_state(await _accept(store, f"ev-{n}", keys[thread], n), state)
    assert await store.unleased_threads(10) == keys[:3], "oldest first, each once, only queued or running work"
    assert await store.unleased_threads(2) == keys[:2]

    assert await store.take_lease(keys[0], "a", 30)
    assert await store.take_lease(keys[1], "a", 0.2)
    assert await store.take_lease(keys[3], "a", 0.2)
    await asyncio.sleep(0.5)
    assert await store.unleased_threads(10) == [keys[1], keys[2]], "a live lease hides its thread, a lapsed one not"
    assert await store.unleased_threads(1) == [keys[1]]
    await store.clear_leases()
    assert await store.unleased_threads(10) == keys[:3]


async def test_concurrent_lease_takers_have_one_winner(backend: Backend) -> None:
    store = await backend.open()
    won = await backend.race(10, lambda other, i: other.take_lease(SLACK, f"owner-{i}", 30))
    assert sum(won) == 1, f"{sum(won)} owners hold one thread"
    winner = won.index(True)
    assert await store.renew_leases(f"owner-{winner}", 30) == [SLACK]
    assert not await store.take_lease(SLACK, f"owner-{(winner + 1) % 10}", 30)


async def test_concurrent_accepts_of_one_delivery_make_one_entry(backend: Backend) -> None:
    store = await backend.open()
    ids = await backend.race(
        10, lambda other, i: other.accept(["ev:shared", f"ev:own-{i}"], SLACK, message=f"m{i}", address="{}")
    )
    accepted = [i for i in ids if i is not None]
    assert len(accepted) == 1, f"one delivery was accepted {len(accepted)} times"
    winner = ids.index(accepted[0])
    entry = await store.next_entry(SLACK)
    assert entry is not None and (entry.id, entry.message) == (accepted[0], f"m{winner}")
    await store.set_inbox_state(entry.id, InboxState.DONE)
    assert await store.next_entry(SLACK) is None, "a refused accept wrote an entry"
    for i in range(10):
        assert await store.claim_events([f"ev:own-{i}"]) == (i != winner), "a refused accept recorded a key"


async def test_newer_schema_is_refused(backend: Backend) -> None:
    await (await backend.open()).close()
    await backend.set_schema_version(SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match="newer than this threadline"):
        await backend.open()


async def test_migrates_an_empty_v0_database(backend: Backend) -> None:
    if backend.name == "sqlite":
        sqlite3.connect(backend.target).close()  # an empty file; a fresh PostgreSQL database is empty already
    store = await backend.open()
    assert await store.schema_version() == SCHEMA_VERSION
    assert await store.claim_events(["x"])


async def test_a_previous_release_database_migrates_without_losing_a_row(backend: Backend) -> None:
    await backend.create_v1()
    store = await backend.open()
    assert await store.schema_version() == SCHEMA_VERSION
    record = await store.thread(SLACK)
    assert record is not None and (record.conversation_id, record.model, record.owned) == ("conv_old", "m1", True)
    assert (record.created_at, record.last_used_at) == (1.0, 2.0)
    assert not await store.claim_events(["slack:event:Ev0"]), "an event seen before the upgrade stays seen"
    assert await store.file_id(SLACK, "ab" * 32) == "file-0"
    assert await store.usage_rows() == [UsageRow("slack", "U1", "C1", "1.0", "m1", 10, 20)]
    assert await store.channel_models() == [("slack", "C1", "gpt-old")]
    assert await store.latest_thread_id("slack") == "1.0"
    await store.set_thread_pref(SLACK, "voice", "on")  # v2's tables are there
    assert await store.thread_pref(SLACK, "voice") == "on"


async def test_a_v3_database_migrates_to_v4_keeping_its_rows(backend: Backend) -> None:
    await backend.create_at(3, V1_ROWS + V3_ROWS)
    store = await backend.open()
    assert await store.schema_version() == SCHEMA_VERSION
    record = await store.thread(SLACK)
    assert record is not None and (record.conversation_id, record.owned) == ("conv_old", True)
    assert not await store.claim_events(["slack:event:Ev0"])
    assert await store.file_id(SLACK, "ab" * 32) == "file-0"
    assert await store.usage_rows() == [UsageRow("slack", "U1", "C1", "1.0", "m1", 10, 20)]
    assert await store.channel_models() == [("slack", "C1", "gpt-old")]
    assert await store.thread_pref(SLACK, "voice") == "on"
    assert await store.last_thread_image(SLACK) == StoredImage(b"\x89PNG-old", "image/png", "user", 3.0)
    assert [(f.key, f.turn, f.user, f.value, f.at) for f in await store.recent_feedback(10)] == [
        (str(SLACK), "m1", "U1", "good", 4.0)
    ]
    entry_id = await store.accept(["slack:event:Ev0"], SLACK, message="{}", address="{}")
    assert entry_id is None, "v4's inbox dedupes against events seen before the upgrade"
    await _accept(store, "slack:event:Ev9", SLACK)
    assert await store.take_lease(SLACK, "a", 30)
    assert await store.unleased_threads(10) == []


async def test_a_v4_database_migrates_to_v5_keeping_its_rows(backend: Backend) -> None:
    await backend.create_at(4, V1_ROWS + V3_ROWS + V4_ROWS)
    store = await backend.open()
    assert await store.schema_version() == SCHEMA_VERSION
    entry = await store.next_entry(SLACK)
    assert entry is not None and (entry.state, entry.message, entry.accepted_at) == (
        InboxState.QUEUED,
        '{"text": "old"}',
        5.0,
    )
    assert not await store.claim_events(["slack:event:Ev0"])
    assert await store.usage_rows() == [UsageRow("slack", "U1", "C1", "1.0", "m1", 10, 20)]
    assert await store.thread_pref(SLACK, "voice") == "on"
    assert await store.access_rules("slack") == [], "v5 starts with no rules: the settings decide"
    await store.set_access_rule("slack", "user", "U1", "deny", set_by="slack:UADMIN")
    assert [r.value for r in await store.access_rules("slack")] == ["U1"]
    assert await store.claim_refusal_reply("slack", "U1", 3600)


async def test_open_store_picks_the_backend_from_the_location(backend: Backend) -> None:
    store = await open_store(parse_database(backend.target), pool_size=2)
    try:
        assert isinstance(store, SqliteStore if backend.name == "sqlite" else PostgresStore)
        assert await store.probe() == SCHEMA_VERSION
        assert store.location == parse_database(backend.target).safe
        password = urlsplit(backend.target).password
        assert not password or password not in store.location
    finally:
        await store.close()


async def test_retrieval_scopes_keep_their_own_vector_store_and_documents(backend: Backend) -> None:
    store = await backend.open(clock=lambda: 100.0)
    other_thread = ThreadKey("slack", "T1", "C1", "2.0")
    mine, theirs = thread_scope(SLACK), thread_scope(other_thread)
    kb, other_kb = channel_scope("slack", "T1", "C1"), channel_scope("slack", "T1", "C2")
    assert len({mine, theirs, kb, other_kb, channel_scope("discord", "T1", "C1")}) == 5
    assert await store.vector_store(mine) is None and await store.documents(kb) == []
    await store.save_vector_store(mine, "vs_a")
    await store.save_vector_store(kb, "vs_kb")
    await store.save_vector_store(mine, "vs_a2")  # rebuilt after it expired: the new id replaces the old
    handbook = Document("handbook.pdf", "file-1", "aa" * 32, 10.0)
    await store.save_document(mine, handbook)
    await store.save_document(mine, Document("notes.md", "file-2", "bb" * 32, 11.0))
    await store.save_document(mine, Document("handbook.pdf", "file-1b", "aa" * 32, 12.0))  # same bytes again
    await store.save_document(kb, Document("policy.docx", "file-3", "aa" * 32, 13.0))
    await store.close()

    reopened = await backend.open()
    assert await reopened.vector_store(mine) == "vs_a2" and await reopened.vector_store(kb) == "vs_kb"
    assert await reopened.vector_store(theirs) is None and await reopened.vector_store(other_kb) is None
    assert [(d.name, d.file_id, d.added_at) for d in await reopened.documents(mine)] == [
        ("notes.md", "file-2", 11.0),
        ("handbook.pdf", "file-1b", 12.0),
    ]
    assert await reopened.documents(theirs) == [] and await reopened.documents(other_kb) == []
    assert await reopened.remove_documents(kb, "missing.pdf") == []
    assert await reopened.remove_documents(kb, "policy.docx") == [Document("policy.docx", "file-3", "aa" * 32, 13.0)]
    assert await reopened.documents(kb) == [] and await reopened.vector_store(kb) == "vs_kb"
    await reopened.forget_scope(mine)
    assert await reopened.vector_store(mine) is None and await reopened.documents(mine) == []
    assert await reopened.vector_store(kb) == "vs_kb", "forgetting a thread leaves the channel's store"


async def test_a_v5_database_migrates_to_v6_keeping_its_rows(backend: Backend) -> None:
    await backend.create_at(5, V1_ROWS + V3_ROWS)
    store = await backend.open()
    assert await store.schema_version() == SCHEMA_VERSION
    assert await store.file_id(SLACK, "ab" * 32) == "file-0"
    assert await store.thread_pref(SLACK, "voice") == "on"
    await store.save_vector_store(thread_scope(SLACK), "vs_1")  # v6's tables are there
    assert await store.vector_store(thread_scope(SLACK)) == "vs_1"


async def test_thread_files_containers_and_answers_stay_with_their_thread(backend: Backend) -> None:
    store = await backend.open(clock=lambda: 50.0)
    other = ThreadKey("slack", "T1", "C1", "2.0")
    sales = ThreadFile("aa" * 32, "sales.xlsx", "application/vnd.ms-excel", "interpreter", "file-s", 10.0)
    await store.add_thread_file(SLACK, sales)
    await store.add_thread_file(SLACK, ThreadFile("bb" * 32, "notes.csv", "text/csv", "interpreter", "file-n", 11.0))
    await store.add_thread_file(SLACK, ThreadFile("aa" * 32, "sales.xlsx", sales.mime, "interpreter", "file-s2", 12.0))
    await store.save_thread_container(SLACK, "cntr_old")
    await store.save_thread_container(SLACK, "cntr_new")  # made again after the old one expired
    await store.save_thread_container(other, "cntr_other")
    await store.save_container_file("cntr_new", ContainerFile("cfile_font", "/mnt/data/font.ttc", "ff" * 32))
    await store.save_container_file("cntr_new", ContainerFile("cfile_chart", "/mnt/data/chart.png"))
    await store.save_container_file("cntr_other", ContainerFile("cfile_x", "/mnt/data/x.csv", "cc" * 32))
    await store.save_shared_file("ff" * 32, "file-font")
    for response, ref, code, at in (("resp_1", "C1:1.1", True, 1.0), ("resp_2", "C1:1.2", False, 2.0)):
        await store.save_answer(AnswerRecord(SLACK, response, ref, code, at))
    await store.save_answer(AnswerRecord(SLACK, "resp_3", "C1:1.3", True, 3.0))
    await store.save_answer(AnswerRecord(other, "resp_9", "C1:9.9", True, 4.0))
    await store.save_answer(AnswerRecord(DISCORD, "resp_d", "C1:1.1", True, 5.0))  # same ref text, other platform
    await store.close()

    reopened = await backend.open()
    assert [(f.filename, f.file_id, f.added_at) for f in await reopened.thread_files(SLACK)] == [
        ("notes.csv", "file-n", 11.0),
        ("sales.xlsx", "file-s2", 12.0),
    ]
    assert await reopened.thread_files(other) == [] and await reopened.thread_files(DISCORD) == []
    assert await reopened.thread_container(SLACK) == "cntr_new"
    assert await reopened.thread_container(DISCORD) is None
    assert [f.file_id for f in await reopened.container_files("cntr_new")] == ["cfile_font", "cfile_chart"]
    assert (await reopened.container_files("cntr_new"))[1] == ContainerFile("cfile_chart", "/mnt/data/chart.png", "")
    assert await reopened.shared_file("ff" * 32) == "file-font" and await reopened.shared_file("00" * 32) is None
    assert [a.response_id for a in await reopened.code_answers(SLACK, 5)] == ["resp_3", "resp_1"]
    assert [a.response_id for a in await reopened.code_answers(SLACK, 1)] == ["resp_3"]
    assert await reopened.answers_by_ref("slack", "C1:1.2") == [AnswerRecord(SLACK, "resp_2", "C1:1.2", False, 2.0)]
    assert [a.key for a in await reopened.answers_by_ref("discord", "C1:1.1")] == [DISCORD]
    assert await reopened.answers_by_ref("slack", "C1:0.0") == []

    assert await reopened.forget_thread_files(SLACK) == "cntr_new"
    assert await reopened.thread_container(SLACK) is None and await reopened.thread_files(SLACK) == []
    assert await reopened.container_files("cntr_new") == [] and await reopened.code_answers(SLACK, 5) == []
    assert await reopened.forget_thread_files(SLACK) is None
    assert await reopened.thread_container(other) == "cntr_other", "another thread's container stays"
    assert [a.response_id for a in await reopened.code_answers(other, 5)] == ["resp_9"]
    assert await reopened.shared_file("ff" * 32) == "file-font", "the shared font outlives any thread"


# --- PostgreSQL only: replicas, outages, passwords -------------------------------------------------------------


async def test_replicas_starting_together_migrate_once(pg_database_url: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(parse_database(pg_database_url), pool_size=1) for _ in range(8)))
    try:
        assert [await s.schema_version() for s in stores] == [SCHEMA_VERSION] * 8
    finally:
        for store in stores:
            await store.close()


async def test_a_failing_call_in_a_batch_fails_alone(pg_database_url: str) -> None:
    """Concurrent calls share a batch (one transaction). One call the server rejects (bigint out of range)
    rolls the batch back; the others are run again one by one and take effect exactly once."""
    store = await PostgresStore.open(parse_database(pg_database_url), pool_size=2)
    try:
        calls: list[Any] = [store.record_usage(UsageRow("slack", "U1", "C1", "t", "m", n, 1)) for n in range(30)]
        calls += [store.claim_events([f"ev-{n}"]) for n in range(30)]
        calls.insert(17, store.record_usage(UsageRow("slack", "U1", "C1", "t", "m", 10**20, 1)))
        results = await asyncio.gather(*calls, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1 and isinstance(failed[0], psycopg.errors.NumericValueOutOfRange), failed
        assert results[31:] == [True] * 30, "each claim ran once: a second run would have said duplicate"
        assert await store.usage_since("slack", "U1", 0) == (30, sum(range(30)), 30)
    finally:
        await store.close()


async def test_a_cancelled_call_leaves_the_others_alone(pg_database_url: str) -> None:
    store = await PostgresStore.open(parse_database(pg_database_url), pool_size=2)
    try:
        tasks = [asyncio.create_task(store.claim_events([f"ev-{n}"])) for n in range(40)]
        await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(r is True for r in done[1::2])
        assert sum(await asyncio.gather(*(store.claim_events([f"ev-{n}"]) for n in range(1, 40, 2)))) == 0
    finally:
        await store.close()


def _with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{user}:{password}@{host}:{parts.port}" if parts.port else f"{user}:{password}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _assert_short_and_safe(exc: StoreUnavailable, location: DatabaseLocation, caplog: pytest.LogCaptureFixture) -> None:
    message = str(exc)
    assert location.safe in message, message
    assert PASSWORD not in message and "Traceback" not in message and "\n" not in message, message
    assert len(message) < 200, message
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert PASSWORD not in logged, "a log line carried the password"


async def test_a_server_that_is_down_at_open_is_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    location = parse_database(f"postgresql://threadline:{PASSWORD}@127.0.0.1:{free_port()}/threadline")
    began = time.monotonic()
    with pytest.raises(StoreUnavailable) as raised:
        await PostgresStore.open(location, pool_size=2)
    assert time.monotonic() - began < 6
    _assert_short_and_safe(raised.value, location, caplog)
    assert "postgresql://threadline:***@127.0.0.1:" in str(raised.value)
    assert "refused" in str(raised.value).lower()


async def test_a_refused_login_is_unavailable(postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    location = parse_database(_with_password(postgres_url, "threadline_nobody", PASSWORD))
    with pytest.raises(StoreUnavailable) as raised:
        await PostgresStore.open(location, pool_size=2)
    _assert_short_and_safe(raised.value, location, caplog)
    assert "threadline_nobody" in str(raised.value)


async def _until_it_works(store: Store, seconds: float) -> float:
    """Call the store until a call succeeds; return how long that took."""
    began = time.monotonic()
    while True:
        try:
            await store.claim_events([f"back-{time.monotonic_ns()}"])
            return time.monotonic() - began
        except StoreUnavailable:
            if time.monotonic() - began > seconds:
                raise
            await asyncio.sleep(0.1)


async def test_a_database_that_goes_away_and_comes_back(
    postgres_url: str, pg_database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Connections cut and new ones refused (``ALLOW_CONNECTIONS false``): calls say the database is
    unreachable, quickly and without a password; once it accepts connections again, calls work again."""
    caplog.set_level(logging.DEBUG)
    store = await PostgresStore.open(parse_database(pg_database_url), pool_size=4, acquire_timeout=1.0)
    database = urlsplit(pg_database_url).path.lstrip("/")
    name = sql.Identifier(database)
    try:
        assert await store.claim_events(["before"])
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as admin:
            await admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(name))
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            )
            for call in (store.thread(SLACK), store.claim_events(["during"]), store.record_usage(_usage())):
                with pytest.raises(StoreUnavailable, match="unreachable") as raised:
                    await call
                assert PASSWORD not in str(raised.value)
            await admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(name))
        waited = await _until_it_works(store, RECONNECT_TIMEOUT + 5)
        assert waited < RECONNECT_TIMEOUT + 2
        assert await store.claim_events(["during"]), "the failed call must not have claimed its id"
        assert not await store.claim_events(["before"])
        assert PASSWORD not in "\n".join(r.getMessage() for r in caplog.records)
    finally:
        await store.close()


def _usage() -> UsageRow:
    return UsageRow("slack", "U1", "C1", "1.0", "m", 1, 1)


async def test_a_server_restart_mid_run(caplog: pytest.LogCaptureFixture) -> None:
    """The server itself stops (clients disconnected, port closed) and starts again on the same port: a
    private embedded server, so the shared one is not disturbed (and this runs whatever the URL setting)."""
    caplog.set_level(logging.DEBUG)
    server = EmbeddedPostgres(password=PASSWORD)
    try:
        await asyncio.to_thread(server.start)
        async with fresh_database(server.url) as url:
            store = await PostgresStore.open(parse_database(url), pool_size=4, acquire_timeout=1.0)
            try:
                await store.save_conversation(SLACK, conversation_id="conv_a", model="m")
                await asyncio.to_thread(server.stop)
                with pytest.raises(StoreUnavailable, match="unreachable"):
                    await store.thread(SLACK)
                await asyncio.to_thread(server.start)
                waited = await _until_it_works(store, RECONNECT_TIMEOUT + 5)
                assert waited < RECONNECT_TIMEOUT + 2
                record = await store.thread(SLACK)
                assert record is not None and record.conversation_id == "conv_a"
            finally:
                await store.close()
    finally:
        await asyncio.to_thread(server.cleanup)
    assert PASSWORD not in "\n".join(r.getMessage() for r in caplog.records), "a log line carried the password"


# --- THREADLINE_DATABASE ---------------------------------------------------------------------------------------


def test_parse_database_forms() -> None:
    assert parse_database("data/threadline.db") == DatabaseLocation("sqlite", Path("data/threadline.db"))
    assert parse_database(Path("/var/lib/t.db")).path == Path("/var/lib/t.db")
    assert parse_database("sqlite:///rel/t.db") == DatabaseLocation("sqlite", Path("rel/t.db"))
    assert parse_database("sqlite:////abs/t.db") == DatabaseLocation("sqlite", Path("/abs/t.db"))
    assert parse_database("sqlite://").path == Path(":memory:")
    url = f"postgresql://bot:{PASSWORD}@db.internal:5433/threadline?sslmode=require"
    assert parse_database(url) == DatabaseLocation("postgresql", Path(), url)
    short = parse_database(f"postgres://bot:{PASSWORD}@db.internal/threadline")
    assert short.scheme == "postgresql" and short.url == f"postgresql://bot:{PASSWORD}@db.internal/threadline"
    assert parse_database("POSTGRESQL://bot@h/db").scheme == "postgresql"


def test_parse_database_refuses_unknown_schemes() -> None:
    with pytest.raises(ValueError, match="unknown scheme 'mysql'") as raised:
        parse_database("mysql://bot:pw@h/db")
    for form in ("file path", "sqlite:///PATH", "postgresql://"):
        assert form in str(raised.value)


def test_safe_location_hides_the_password() -> None:
    location = parse_database(f"postgresql://bot:{PASSWORD}@db.internal:5433/threadline?sslmode=require")
    assert location.safe == "postgresql://bot:***@db.internal:5433/threadline?sslmode=require"
    assert parse_database("postgresql://bot@db.internal/threadline").safe == "postgresql://bot@db.internal/threadline"
    assert parse_database("sqlite:///rel/t.db").safe == "rel/t.db"
    assert database_url(location.url, "other").endswith("/other?sslmode=require")


async def test_local_history_is_per_thread_in_order_kept_trimmed_and_forgotten(backend: Backend) -> None:
    store = await backend.open()
    await store.add_history(SLACK, [HistoryEntry('{"role": "user", "content": "hi"}', 3)])
    await store.add_history(
        SLACK,
        [HistoryEntry('{"role": "assistant", "content": "hello"}', 4), HistoryEntry('{"role": "user"}', 2)],
    )
    await store.add_history(DISCORD, [HistoryEntry('{"role": "user", "content": "other"}', 5)])
    await store.add_history(DISCORD, [])
    await store.close()

    reopened = await backend.open()
    kept = await reopened.history(SLACK)
    assert [(e.message, e.tokens) for e in kept] == [
        ('{"role": "user", "content": "hi"}', 3),
        ('{"role": "assistant", "content": "hello"}', 4),
        ('{"role": "user"}', 2),
    ], "a restart keeps each thread's history, in order"
    assert kept[0].seq < kept[1].seq < kept[2].seq and kept[0].at > 0
    assert await reopened.forget_history(SLACK, through=kept[1].seq) == 2
    assert [e.message for e in await reopened.history(SLACK)] == ['{"role": "user"}']
    assert [e.message for e in await reopened.history(DISCORD)] == ['{"role": "user", "content": "other"}']
    assert await reopened.forget_history(SLACK) == 1
    assert await reopened.history(SLACK) == []
    assert len(await reopened.history(DISCORD)) == 1, "forgetting one thread's history leaves the others"


async def test_channel_settings_are_per_channel_kept_replaced_removed_and_cleared(backend: Backend) -> None:
    store = await backend.open(clock=lambda: 70.0)
    await store.set_channel_setting("slack", "C1", "instructions", "Talk like a pirate.", set_by="slack:UADMIN")
    await store.set_channel_setting("slack", "C1", "tools", "-web_search", set_by="slack:UADMIN")
    await store.set_channel_setting("slack", "C1", "tools", "-code_interpreter", set_by="slack:UOTHER")
    await store.set_channel_model("slack", "C1", "gpt-6-luna")  # `model NAME`: the setting "model"
    await store.set_channel_setting("slack", "C2", "voice", "always", set_by="slack:UADMIN")
    await store.set_channel_setting("discord", "C1", "kb", "off", set_by="discord:1")
    await store.close()

    reopened = await backend.open()
    assert await reopened.channel_settings("slack", "C1") == [
        ChannelSetting("instructions", "Talk like a pirate.", "slack:UADMIN"),
        ChannelSetting("model", "gpt-6-luna", ""),
        ChannelSetting("tools", "-code_interpreter", "slack:UOTHER"),
    ], "a restart keeps them; a second set replaces the first"
    assert {s.set_at for s in await reopened.channel_settings("slack", "C1")} == {70.0}
    assert await reopened.channel_model("slack", "C1") == "gpt-6-luna"
    assert await reopened.channel_models() == [("slack", "C1", "gpt-6-luna")]
    await reopened.set_channel_setting("slack", "C1", "tools", None, set_by="slack:UADMIN")
    await reopened.set_channel_setting("slack", "C1", "tools", None, set_by="slack:UADMIN")  # nothing left: no error
    assert [s.name for s in await reopened.channel_settings("slack", "C1")] == ["instructions", "model"]
    assert await reopened.clear_channel_settings("slack", "C1") == ["instructions", "model"]
    assert await reopened.channel_settings("slack", "C1") == []
    assert await reopened.channel_model("slack", "C1") is None
    assert await reopened.clear_channel_settings("slack", "C1") == []
    assert [s.value for s in await reopened.channel_settings("slack", "C2")] == ["always"], "other channels stay"
    assert [s.value for s in await reopened.channel_settings("discord", "C1")] == ["off"], "and other platforms"


async def test_a_v6_database_migrates_to_v7_keeping_its_rows(backend: Backend) -> None:
    document = ("documents", ("scope", "sha256", "name", "file_id", "added_at"), ("kb:x", "cd" * 32, "a.pdf", "f", 6.0))
    await backend.create_at(6, V1_ROWS + V3_ROWS + V4_ROWS + (document,))
    store = await backend.open()
    assert await store.schema_version() == SCHEMA_VERSION
    assert await store.channel_model("slack", "C1") == "gpt-old", "a channel's model becomes its setting 'model'"
    assert await store.channel_settings("slack", "C1") == [ChannelSetting("model", "gpt-old", "")]
    assert await store.channel_models() == [("slack", "C1", "gpt-old")]
    assert await store.thread_pref(SLACK, "voice") == "on"
    assert await store.usage_rows() == [UsageRow("slack", "U1", "C1", "1.0", "m1", 10, 20)]
    assert [d.name for d in await store.documents("kb:x")] == ["a.pdf"]
    entry = await store.next_entry(SLACK)
    assert entry is not None and entry.message == '{"text": "old"}'
    await store.set_channel_setting("slack", "C1", "voice", "never", set_by="slack:UADMIN")  # v7's table is there
    assert [s.name for s in await store.channel_settings("slack", "C1")] == ["model", "voice"]
