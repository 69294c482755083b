"""Store: turns per second the SQLite store sustains, doing per turn what a turn does to it.

One turn = ``claim_events`` (dedupe, a write transaction), the channel's model and the thread's conversation
(reads), ``save_conversation`` for a new thread (one turn in ten), ``touch`` and ``record_usage`` (writes).

"Concurrent" two ways, because the bot holds one connection on its event loop:
- tasks: N asyncio tasks share the bot's single connection. Store calls are synchronous, so this is
  interleaving, not parallelism; it is the bot's real configuration.
- threads: N OS threads, each with its own connection to the same WAL file: real lock contention (SQLite allows
  one writer at a time; the others wait in busy_timeout).
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from bench.report import Row
from bot.store import Store, UsageRow

WRITERS = (1, 10, 100)
TARGET_TPS = 500.0  # 1,000 concurrent threads at 2 s per turn
NEW_THREAD_EVERY = 10


def one_turn(store: Store, writer: int, n: int) -> None:
    thread = f"w{writer}-t{n // NEW_THREAD_EVERY}"
    key = f"slack:T1:C{writer}:{thread}"
    if not store.claim_events((f"slack:ev:{writer}:{n}", f"slack:C{writer}:{n}")):
        raise RuntimeError("a fresh event id was taken for a duplicate")
    store.channel_model("slack", f"C{writer}")
    record = store.thread(key)
    if record is None:
        channel = f"C{writer}"
        store.save_conversation(key, platform="slack", channel=channel, conversation_id=f"conv_{thread}", model="m")
    store.touch(key)
    store.record_usage(UsageRow("slack", f"U{writer}", f"C{writer}", thread, "m", 120, 240))


async def _tasks(path: Path, writers: int, seconds: float) -> int:
    store = Store(path)
    deadline = time.monotonic() + seconds
    counts = [0] * writers

    async def writer(index: int) -> None:
        while time.monotonic() < deadline:
            one_turn(store, index, counts[index])
            counts[index] += 1
            await asyncio.sleep(0)  # a real turn awaits the network between its store calls

    try:
        await asyncio.gather(*(writer(i) for i in range(writers)))
    finally:
        store.close()
    return sum(counts)


def _threads(path: Path, writers: int, seconds: float) -> tuple[int, int]:
    Store(path).close()  # create the schema once, before the race
    deadline = time.monotonic() + seconds
    counts = [0] * writers
    errors = [0] * writers

    def writer(index: int) -> None:
        store = Store(path)
        try:
            while time.monotonic() < deadline:
                try:
                    one_turn(store, index, counts[index])
                except Exception:
                    errors[index] += 1
                counts[index] += 1
        finally:
            store.close()

    workers = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) - sum(errors), sum(errors)


def _row(mode: str, writers: int, tps: float, base: float, errors: int = 0) -> Row:
    return Row(
        measure=f"store turns/s ({mode})",
        adapter=f"{writers} writer{'s' if writers > 1 else ''}",
        unit="/s",
        figure=f"{tps:,.0f} turns/s",
        ratio=tps / base,
        target=f"≥ {TARGET_TPS:g}/s",
        passed=tps >= TARGET_TPS and errors == 0,
        note=f"ratio: vs 1 writer; {errors} failed turns" if errors else "ratio: vs 1 writer",
        extra={"turns_per_s": tps, "errors": errors},
    )


async def measure(folder: Path, seconds: float = 1.5) -> list[Row]:
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    rows: list[Row] = []
    base = 0.0
    for writers in WRITERS:
        done = await _tasks(folder / f"tasks-{writers}.db", writers, seconds)
        base = base or done / seconds
        rows.append(_row("tasks, 1 connection", writers, done / seconds, base))
    base = 0.0
    for writers in WRITERS:
        done, errors = await asyncio.to_thread(_threads, folder / f"threads-{writers}.db", writers, seconds)
        base = base or done / seconds
        rows.append(_row("threads, 1 connection each", writers, done / seconds, base, errors))
    return rows
