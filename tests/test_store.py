"""The store keeps everything across a restart, migrates forward, dedupes atomically, and says so when the
database is gone. Every contract test runs on both backends: SQLite (a file) and PostgreSQL (a real server:
``THREADLINE_TEST_DATABASE_URL``, else the embedded one from tests/pg_server.py; a fresh database per test)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import sqlite_utils
from psycopg import sql

from bot.store import (
    SCHEMA_VERSION,
    Store,
    StoredImage,
    StoreUnavailable,
    UsageRow,
    open_store,
    parse_database,
)
from bot.store.location import DatabaseLocation
from bot.store.postgres import MIGRATIONS as PG_MIGRATIONS
from bot.store.postgres import RECONNECT_TIMEOUT, PostgresStore
from bot.store.sqlite import SqliteStore, _v1
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
        if self.name == "sqlite":
            db = sqlite_utils.Database(self.target)
            _v1(db)
            db.execute("PRAGMA user_version = 1")
            db.close()
        else:
            async with await psycopg.AsyncConnection.connect(self.target, autocommit=True) as pg:
                for statement in PG_MIGRATIONS[0]:
                    await pg.execute(statement)
                await pg.execute("CREATE TABLE schema_version (one boolean PRIMARY KEY, version integer NOT NULL)")
                await pg.execute("INSERT INTO schema_version VALUES (true, 1)")
        for table, columns, values in V1_ROWS:
            if self.name == "postgresql":
                values = tuple(bool(v) if c == "owned" else v for c, v in zip(columns, values, strict=True))
            names = ", ".join(f'"{c}"' for c in columns)
            await self.execute(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})", values)

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
    if backend.name == "sqlite":
        barrier = threading.Barrier(len(keys), timeout=30)
        results = [False] * len(keys)

        def deliver(index: int) -> None:
            store = SqliteStore(backend.target)
            try:
                barrier.wait()
                results[index] = asyncio.run(store.claim_events(keys[index]))
            finally:
                asyncio.run(store.close())

        def race() -> None:
            threads = [threading.Thread(target=deliver, args=(i,)) for i in range(len(keys))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        await asyncio.to_thread(race)
    else:
        replicas = [await backend.open(pool_size=10) for _ in range(5)]
        results = await asyncio.gather(*(replicas[i % 5].claim_events(claim) for i, claim in enumerate(keys)))
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
