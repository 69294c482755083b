"""One bot process of the concurrency measure (``bench.concurrency`` runs one or two), driven by JSON lines.

stdin: ``{"round": n, "threads": [...]}`` submits message n of each of those threads; ``{"settle": true}``: no more
rounds; end of input: every process has settled, stop.
stdout: ``{"ready": …}`` after the warm-up, ``{"accepted": n}`` once round n is in the durable inbox,
``{"settled": …}`` once every message this process accepted has been answered (here or by another process), and
``{"result": …}`` when it stops.

The bench platform's ``Resumer`` answers the messages another process accepted (this process held the thread's
lease) with a ``TimedReply`` keyed by the message's ``reply_address``, so every turn is timed where it ran. Stamps
are ``time.time()``: the parent compares them across processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import json
import resource
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from bench.common import TimedReply, bench_settings, message, warm_up
from bot.logging_setup import setup_logging
from bot.runtime import open_runtime
from bot.types import Fetch, IncomingMessage, ThreadKey

PLATFORM = "conc"
Slot = tuple[int, int]  # (thread, message)


def peak_rss_mb() -> float:
    """This process's own peak RSS. Not ``ru_maxrss``: Linux carries it over ``fork`` + ``exec``, so a child's
    reads at least its parent's RSS at the fork (the bench parent's ~100 MB)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_message(thread: int, n: int) -> IncomingMessage:
    incoming = message(PLATFORM, f"t{thread}", f"thread {thread} message {n}", f"c{thread}-{n}")
    return dataclasses.replace(incoming, reply_address={"thread": str(thread), "message": str(n)})


class BenchResumer:
    """Replies to messages another process accepted: timed like this process's own."""

    def __init__(self) -> None:
        self.replies: list[tuple[Slot, TimedReply]] = []

    def reply_for(self, key: ThreadKey, address: Mapping[str, str], *, posted: str | None) -> TimedReply:
        reply = TimedReply(time.time)
        self.replies.append(((int(address["thread"]), int(address["message"])), reply))
        return reply

    def fetch_for(self, key: ThreadKey, source: str) -> Fetch:
        async def fetch() -> bytes:
            raise RuntimeError("the concurrency bench sends no attachments")

        return fetch


def _say(field: str, value: Any) -> None:
    sys.stdout.write(json.dumps({field: value}) + "\n")
    sys.stdout.flush()


async def _stdin() -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def run(base_url: str, database: str, index: int, profile: Path | None) -> dict[str, Any]:
    overrides = {"database": database} if database else {}
    with TemporaryDirectory() as folder:
        settings = bench_settings(Path(folder), base_url, **overrides)
        setup_logging(settings)  # warnings (a lost lease, an interrupted turn) to stderr, the password redacted
        async with open_runtime(settings) as runtime:
            resumer = BenchResumer()
            runtime.gateway.register(PLATFORM, resumer)
            await warm_up(runtime, platform=f"warm{index}")  # a thread of its own: no other process answers it
            _say("ready", {"rss_idle_mb": peak_rss_mb()})
            stdin = await _stdin()
            own: list[tuple[Slot, TimedReply]] = []
            futures: list[asyncio.Future[None]] = []
            profiler = cProfile.Profile(time.process_time) if profile else None  # CPU time: the machine is shared
            first_submit: float | None = None

            async def submit(thread: int, n: int) -> asyncio.Future[None]:
                reply = TimedReply(time.time)
                own.append(((thread, n), reply))
                submission = await runtime.gateway.submit(bench_message(thread, n), reply)
                if submission.done is None:
                    raise RuntimeError(f"a benchmark message was not taken on ({submission.outcome})")
                return submission.done

            submit_s = 0.0
            cpu_before = cpu_seconds()
            while (command := json.loads(await stdin.readline() or "{}")).get("round") is not None:
                n = int(command["round"])
                if profiler is not None and first_submit is None:
                    profiler.enable()
                began = time.time()
                first_submit = first_submit or began
                submits = [submit(thread, n) for thread in command["threads"]]
                if command.get("together"):  # one task per message, as adapters run event handlers
                    futures += await asyncio.gather(*submits)
                else:
                    futures += [await s for s in submits]
                submit_s += time.time() - began
                _say("accepted", n)
            await asyncio.gather(*futures)
            # This process may still be answering another's messages (it holds their threads): it stays up, and
            # keeps counting, until every process has settled; then the parent closes stdin.
            _say("settled", len(futures))
            await stdin.read()
            cpu = cpu_seconds() - cpu_before
            if profiler is not None and profile is not None:
                profiler.disable()
                profiler.dump_stats(profile)
    ran = [
        [t, n, r.started, r.first_text, r.ended, r.text, r.failed]
        for (t, n), r in own + resumer.replies
        if r.started is not None or r.failed is not None
    ]
    return {
        "first_submit": first_submit,
        "submit_s": submit_s,
        "cpu_s": cpu,
        "rss_peak_mb": peak_rss_mb(),
        "replies": ran,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="One bot process of the concurrency measure (run by bench).")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--database", default="", help="a PostgreSQL URL (default: SQLite in a temporary folder)")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile of the timed part here")
    args = parser.parse_args(argv)
    _say("result", asyncio.run(run(args.base_url, args.database, args.index, args.profile)))


if __name__ == "__main__":
    main()
