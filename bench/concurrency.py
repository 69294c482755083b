"""Concurrency: many threads at once through the real TurnHandler + ConversationsEngine + openai SDK + fake, in
three configurations: one bot process on SQLite, one on PostgreSQL, and two on one PostgreSQL database.

Every thread gets ``messages`` messages; the fake answers each after ``latency`` seconds (time to first token) and
quotes both the message and the one before it, so each reply proves it answered the right message with the right
history. The bot runs in child processes of its own (``bench.replicas``), so a peak RSS is one bot's alone; the
fake OpenAI runs in another (bench.model_server).

The parent submits in rounds, as a chat platform delivers: round n is every thread's message n, spread over the
children the way Slack spreads envelopes over connections (message n of thread t goes to child (t + n) % children),
and round n + 1 is sent once every child has accepted round n. With two processes a thread's messages reach both;
the one holding the thread's lease runs them all, rebuilding the other's through the bench ``Resumer``. Each child
reports the turns it ran (wall-clock stamps), and the parent merges them.

Wall time: the last answer's end minus the first submit, against ``messages × latency``. Order violations: a reply
that does not quote its own message and its predecessor, that started before the previous reply of its thread
ended, or a message answered twice. Failed: a turn that failed or that no process answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import TimedReply
from bench.model_server import ROOT, model_server
from bench.report import Row, percentile
from tests.pg_server import fresh_database, running_postgres

RATIO_TARGET = 1.3
RSS_TARGET_MB = 300.0
LINE_LIMIT = 64 * 1024 * 1024  # a child's last line carries every reply it ran


@dataclass(frozen=True, slots=True)
class Config:
    label: str
    processes: int
    postgres: bool
    target: bool  # the 1.3× target is for two processes; the others are for comparison
    # A round's messages submitted each in a task of its own, as adapters run event handlers. SQLite keeps the
    # earlier method (one after another), so its row compares with earlier results; on PostgreSQL one after
    # another would time a commit round trip per message instead.
    together: bool


CONFIGS = (
    Config("1 process, SQLite", 1, postgres=False, target=False, together=False),
    Config("1 process, PostgreSQL", 1, postgres=True, target=False, together=True),
    Config("2 processes, PostgreSQL", 2, postgres=True, target=True, together=True),
)


def _in_order(replies: list[TimedReply], thread: int) -> list[bool]:
    verdicts = []
    for n, reply in enumerate(replies):
        ok = f"You said: «thread {thread} message {n}»." in reply.text
        if n > 0:
            previous = replies[n - 1]
            ok = ok and f"Before that you said: «thread {thread} message {n - 1}»." in reply.text
            ok = ok and None not in (reply.started, previous.ended) and reply.started >= previous.ended  # type: ignore[operator]
        verdicts.append(ok)
    return verdicts


class Child:
    """One bot process (``python -m bench.replicas``), driven by JSON lines on its stdin and stdout."""

    def __init__(self, index: int, proc: asyncio.subprocess.Process) -> None:
        self.index = index
        self.proc = proc

    @classmethod
    async def spawn(cls, index: int, base_url: str, database: str, profile: Path | None) -> Child:
        args = ["--base-url", base_url, "--index", str(index)]
        args += ["--database", database] if database else []
        args += ["--profile", str(profile)] if profile else []
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.replicas",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
            limit=LINE_LIMIT,
        )
        return cls(index, proc)

    async def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command).encode() + b"\n")
        await self.proc.stdin.drain()

    async def expect(self, field: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            await self.proc.wait()
            raise RuntimeError(f"concurrency child {self.index} exited {self.proc.returncode} before {field!r}")
        answer: dict[str, Any] = json.loads(line)
        if field not in answer:
            raise RuntimeError(f"concurrency child {self.index} said {line[:200]!r}, not {field!r}")
        return answer

    async def settle(self) -> None:
        """No more rounds: wait until every message this child accepted has been answered."""
        await self.send({"settle": True})
        await self.expect("settled")

    async def finish(self) -> dict[str, Any]:
        """Every child has settled: stop, and report."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        result = await self.expect("result")
        if await self.proc.wait() != 0:
            raise RuntimeError(f"concurrency child {self.index} exited {self.proc.returncode}")
        return result

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


@contextlib.asynccontextmanager
async def _children(count: int, base_url: str, database: str, profile: Path | None) -> AsyncIterator[list[Child]]:
    children = list(
        await asyncio.gather(*(Child.spawn(i, base_url, database, profile if i == 0 else None) for i in range(count)))
    )
    try:
        yield children
    finally:
        for child in children:
            child.kill()
            await child.proc.wait()


async def drive(
    config: Config,
    base_url: str,
    database: str,
    threads: int,
    messages: int,
    latency: float,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Run one configuration: ``database`` empty for SQLite (a file in the child's folder), else a PostgreSQL URL
    shared by every child. ``profile``: child 0 writes a cProfile of its timed part there."""
    processes = config.processes
    async with _children(processes, base_url, database, profile) as children:
        ready = await asyncio.gather(*(c.expect("ready") for c in children))
        for n in range(messages):
            await asyncio.gather(
                *(
                    c.send({"round": n, "threads": _share(threads, n, processes, c.index), "together": config.together})
                    for c in children
                )
            )
            await asyncio.gather(*(c.expect("accepted") for c in children))
        # A child may still run another's messages when its own are done: none stops before all have settled.
        await asyncio.gather(*(c.settle() for c in children))
        results = await asyncio.gather(*(c.finish() for c in children))
    return _merge([r["result"] for r in results], [r["ready"] for r in ready], threads, messages, latency)


def _share(threads: int, n: int, processes: int, index: int) -> list[int]:
    """The threads whose message n goes to child ``index``: spread like Slack's envelopes over connections."""
    return [t for t in range(threads) if (t + n) % processes == index]


def _merge(
    results: list[dict[str, Any]], ready: list[dict[str, Any]], threads: int, messages: int, latency: float
) -> dict[str, Any]:
    replies = [[TimedReply() for _ in range(messages)] for _ in range(threads)]
    ran = [[0] * messages for _ in range(threads)]
    for result in results:
        for t, n, started, first_text, ended, text, failed in result["replies"]:
            reply = replies[t][n]
            reply.started, reply.first_text, reply.ended = started, first_text, ended
            reply.text, reply.failed = text, failed
            ran[t][n] += 1
    started_at = min(r["first_submit"] for r in results)
    ends = [r.ended for thread in replies for r in thread if r.ended is not None]
    wall = max(ends) - started_at if ends else float("nan")
    twice = sum(1 for thread in ran for count in thread if count > 1)
    unanswered = sum(1 for thread in ran for count in thread if count == 0)
    failed = sum(1 for thread in replies for r in thread if r.failed) + unanswered
    violations = sum(1 for t, thread in enumerate(replies) for ok in _in_order(thread, t) if not ok) + twice
    done_at = [max(r.ended or started_at + wall for r in thread) - started_at for thread in replies]
    first_text = [(r[0].first_text - started_at - latency) * 1000 for r in replies if r[0].first_text is not None]
    cpu = sum(r["cpu_s"] for r in results)
    reasons = Counter(r.failed for thread in replies for r in thread if r.failed)
    return {
        "threads": threads,
        "messages": messages,
        "latency_s": latency,
        "processes": len(results),
        "wall_s": wall,
        "submit_s": max(r["submit_s"] for r in results),
        "thread_done_p50_s": percentile(done_at, 50),
        "thread_done_p99_s": percentile(done_at, 99),
        "first_text_overhead_p50_ms": percentile(first_text, 50),
        "first_text_overhead_p99_ms": percentile(first_text, 99),
        "cpu_s": cpu,
        "cpu_ms_per_turn": cpu / (threads * messages) * 1000,
        "turns_run": [len(r["replies"]) for r in results],
        "cpu_s_each": [r["cpu_s"] for r in results],
        "rss_idle_mb": max(r["rss_idle_mb"] for r in ready),
        "rss_peak_mb": max(r["rss_peak_mb"] for r in results),
        "rss_peak_mb_each": [r["rss_peak_mb"] for r in results],
        "failed": failed,
        "unanswered": unanswered,
        "answered_twice": twice,
        "order_violations": violations,
        "failures": dict(reasons.most_common(5)),
    }


def rows(config: Config, result: dict[str, Any]) -> list[Row]:
    threads, messages, latency = result["threads"], result["messages"], result["latency_s"]
    ratio = result["wall_s"] / (messages * latency)
    label = f"{threads} threads × {messages} msgs"
    each = ", ".join(f"{mb:.0f}" for mb in result["rss_peak_mb_each"])
    turns = " + ".join(str(n) for n in result["turns_run"])
    return [
        Row(
            measure="concurrency wall time",
            adapter=config.label,
            unit="s",
            p50=result["thread_done_p50_s"],
            p99=result["thread_done_p99_s"],
            ratio=ratio,
            target=f"≤ {RATIO_TARGET}× ({messages} × {latency:g} s)" if config.target else "",
            passed=ratio <= RATIO_TARGET and result["failed"] == 0 if config.target else None,
            note=f"{label}, model latency {latency:g} s; p50/p99: a thread's last answer done; a round's messages "
            f"submitted {'together' if config.together else 'one after another'}; turns run per process: {turns}; "
            f"bot CPU {result['cpu_ms_per_turn']:.1f} ms per turn",
            extra=result,
        ),
        Row(
            measure="concurrency peak RSS",
            adapter=config.label,
            unit="MB",
            p50=result["rss_peak_mb"],
            target=f"≤ {RSS_TARGET_MB:g} MB",
            passed=result["rss_peak_mb"] <= RSS_TARGET_MB,
            note=f"{label}; the largest bot process (each: {each} MB; idle after warm-up: "
            f"{result['rss_idle_mb']:.0f} MB)",
        ),
        Row(
            measure="concurrency order violations",
            adapter=config.label,
            p50=float(result["order_violations"]),
            target="0",
            passed=result["order_violations"] == 0,
            note=f"{label}: reply quotes its message and the one before; starts after the previous ended; "
            f"answered once ({result['answered_twice']} twice)",
        ),
        Row(
            measure="concurrency failed turns",
            adapter=config.label,
            p50=float(result["failed"]),
            target="0",
            passed=result["failed"] == 0,
            note=f"{label}: failed replies, plus messages no process answered ({result['unanswered']})",
        ),
    ]


async def measure(
    threads: int = 1000,
    messages: int = 2,
    latency: float = 2.0,
    configs: tuple[Config, ...] = CONFIGS,
    profile: Path | None = None,
) -> list[Row]:
    """Every configuration's rows. PostgreSQL: ``THREADLINE_TEST_DATABASE_URL`` (a superuser's) or an embedded
    server, a fresh database per configuration. ``profile``: see ``drive`` (two-process configurations only)."""
    out: list[Row] = []
    with contextlib.ExitStack() as server:  # the embedded server, if one is started: stopped in a worker thread
        admin_url = ""
        async with model_server(ttft=latency) as base_url:
            for config in configs:
                async with contextlib.AsyncExitStack() as stack:
                    database = ""
                    if config.postgres:
                        if not admin_url:
                            admin_url = await asyncio.to_thread(server.enter_context, running_postgres())
                        database = await stack.enter_async_context(fresh_database(admin_url, "threadline_bench"))
                    where = profile if config.processes > 1 else None
                    result = await drive(config, base_url, database, threads, messages, latency, where)
                out += rows(config, result)
        await asyncio.to_thread(server.close)
    return out
