"""Concurrency: many threads at once through the real TurnHandler + ConversationsEngine + openai SDK + fake.

Every thread gets ``messages`` messages, all submitted at once; the fake answers each after ``latency`` seconds
(time to first token) and quotes both the message and the one before it, so each reply proves it answered the
right message with the right history. The bot side runs in a child process of its own, so its peak RSS is the
bot's alone; the fake OpenAI runs in another (bench.model_server).

Order violations: a reply that does not quote its own message and its predecessor, or that started before the
previous reply of its thread ended. Failed turns are counted apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from bench.common import TimedReply, bench_settings, message, warm_up
from bench.model_server import ROOT, model_server
from bench.report import Row, percentile
from bot.runtime import open_runtime

RATIO_TARGET = 1.3
RSS_TARGET_MB = 300.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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


async def run_child(base_url: str, threads: int, messages: int, latency: float) -> dict[str, Any]:
    with TemporaryDirectory() as folder:
        async with open_runtime(bench_settings(Path(folder), base_url)) as runtime:
            await warm_up(runtime)
            rss_idle = peak_rss_mb()
            replies = [[TimedReply() for _ in range(messages)] for _ in range(threads)]
            cpu_before = cpu_seconds()
            started = time.monotonic()
            futures = []
            for n in range(messages):
                for t in range(threads):
                    incoming = message("conc", f"t{t}", f"thread {t} message {n}", f"c{t}-{n}")
                    futures.append((await runtime.gateway.submit(incoming, replies[t][n])).done)
            submitted = time.monotonic() - started
            await asyncio.gather(*(f for f in futures if f is not None))
            wall = time.monotonic() - started
            cpu = cpu_seconds() - cpu_before
    failed = sum(1 for thread in replies for r in thread if r.failed)
    violations = sum(1 for t, thread in enumerate(replies) for ok in _in_order(thread, t) if not ok)
    done_at = [max(r.ended or wall for r in thread) - started for thread in replies]
    first_text = [(r[0].first_text - started - latency) * 1000 for r in replies if r[0].first_text is not None]
    return {
        "threads": threads,
        "messages": messages,
        "latency_s": latency,
        "wall_s": wall,
        "submit_s": submitted,
        "thread_done_p50_s": percentile(done_at, 50),
        "thread_done_p99_s": percentile(done_at, 99),
        "first_text_overhead_p50_ms": percentile(first_text, 50),
        "first_text_overhead_p99_ms": percentile(first_text, 99),
        "cpu_s": cpu,
        "cpu_ms_per_turn": cpu / (threads * messages) * 1000,
        "rss_idle_mb": rss_idle,
        "rss_peak_mb": peak_rss_mb(),
        "failed": failed,
        "order_violations": violations,
    }


async def measure(threads: int = 1000, messages: int = 2, latency: float = 2.0) -> list[Row]:
    async with model_server(ttft=latency) as base_url:
        args = ["--base-url", base_url, "--threads", str(threads), "--messages", str(messages)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.concurrency",
            *args,
            "--latency",
            str(latency),
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the concurrency child exited {proc.returncode}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    ideal = messages * latency
    ratio = result["wall_s"] / ideal
    label = f"{threads} threads × {messages} msgs"
    return [
        Row(
            measure="concurrency wall time",
            adapter="core",
            unit="s",
            p50=result["thread_done_p50_s"],
            p99=result["thread_done_p99_s"],
            ratio=ratio,
            target=f"≤ {RATIO_TARGET}× ({messages} × {latency:g} s)",
            passed=ratio <= RATIO_TARGET and result["failed"] == 0,
            note=f"{label}, model latency {latency:g} s; p50/p99: a thread's last answer done; "
            f"{result['failed']} failed; bot CPU {result['cpu_ms_per_turn']:.1f} ms per turn on one event loop",
            extra=result,
        ),
        Row(
            measure="concurrency peak RSS",
            adapter="core",
            unit="MB",
            p50=result["rss_peak_mb"],
            target=f"≤ {RSS_TARGET_MB:g} MB",
            passed=result["rss_peak_mb"] <= RSS_TARGET_MB,
            note=f"{label}; bot process only (idle after warm-up: {result['rss_idle_mb']:.0f} MB)",
        ),
        Row(
            measure="concurrency order violations",
            adapter="core",
            p50=float(result["order_violations"]),
            target="0",
            passed=result["order_violations"] == 0,
            note=f"{label}: reply quotes its message and the one before; starts after the previous ended",
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The bot side of the concurrency measure (run by bench).")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--threads", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2)
    parser.add_argument("--latency", type=float, default=2.0)
    args = parser.parse_args(argv)
    result = asyncio.run(run_child(args.base_url, args.threads, args.messages, args.latency))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
