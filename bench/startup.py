"""Start-up: from ``python -m bot run --adapter X`` being spawned to ready, with the import time broken out.

Ready means: console — the first command answered (``/help`` is waiting on stdin); Slack Socket Mode — the fake
sent ``hello`` on the websocket; Slack HTTP — the events port accepts connections; Discord — the fake gateway
sent READY and the guild (discord.py then waits DISCORD_GUILD_READY_TIMEOUT_SECS more before ``on_ready``).
The fakes run in this process; the bot is a real child process. One unmeasured start per adapter warms the OS
file cache and the bytecode cache first. Judged on p50.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from pathlib import Path

from bench.model_server import ROOT
from bench.platforms import Process, adapter_of, base_env, spawn_bot, stop_bot, world
from bench.report import Row, percentile

TARGET_S = 1.5


async def _console_answered(proc: Process) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"/help\n")
    await proc.stdin.drain()
    if not await proc.stdout.read(1):
        raise RuntimeError("the console exited without answering /help")


async def time_start(kind: str, folder: Path, openai_base_url: str) -> float:
    """Seconds from spawning ``python -m bot run --adapter X`` to ready (a fresh fake platform each time)."""
    env = base_env(folder, openai_base_url)
    if kind == "console":
        began = time.monotonic()
        proc = await spawn_bot("console", env)
        try:
            await asyncio.wait_for(_console_answered(proc), timeout=30)
            return time.monotonic() - began
        finally:
            await stop_bot(proc)
    async with world(kind) as where:
        began = time.monotonic()
        proc = await spawn_bot(adapter_of(kind), env | where.env())
        try:
            await asyncio.wait_for(where.ready(proc), timeout=30)
            return time.monotonic() - began
        finally:
            await stop_bot(proc)


async def _python(code: str, *flags: str) -> tuple[str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *flags, "-c", code, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT
    )
    out, err = await proc.communicate()
    return out.decode(), err.decode()


async def import_seconds(adapter: str) -> float:
    code = f"import time; t = time.perf_counter(); import bot.cli, adapters.{adapter}; print(time.perf_counter() - t)"
    out, _ = await _python(code)
    return float(out.strip())


async def heaviest_imports(adapter: str, count: int = 4) -> list[tuple[str, float]]:
    """Packages by their own import time (``python -X importtime`` self times, summed per top-level package)."""
    _, err = await _python(f"import bot.cli, adapters.{adapter}", "-X", "importtime")
    totals: dict[str, float] = {}
    for line in err.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            name = match.group(2).split(".")[0].lstrip("_")
            totals[name] = totals.get(name, 0.0) + int(match.group(1)) / 1e6
    return sorted(totals.items(), key=lambda item: -item[1])[:count]


async def interpreter_seconds() -> float:
    began = time.monotonic()
    await _python("pass")
    return time.monotonic() - began


async def measure_one(kind: str, folder: Path, openai_base_url: str, runs: int) -> Row:
    adapter = adapter_of(kind) if kind != "console" else "console"
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    samples = [await time_start(kind, folder, openai_base_url) for _ in range(runs + 1)][1:]  # the first warms up
    imports = [await import_seconds(adapter) for _ in range(3)]
    heavy = await heaviest_imports(adapter)
    p50, p99 = percentile(samples, 50), percentile(samples, 99)
    imported = percentile(imports, 50)
    listed = ", ".join(f"{name} {seconds * 1000:.0f}" for name, seconds in heavy)
    return Row(
        measure="start-up to ready",
        adapter=kind,
        unit="s",
        p50=p50,
        p99=p99,
        ratio=p50 / TARGET_S,
        target=f"≤ {TARGET_S:g} s",
        passed=p50 <= TARGET_S,  # judged on the typical start; p99 (of a few starts) shows the jitter
        note=f"{runs} starts; imports take {imported * 1000:.0f} ms of it (own import time, ms: {listed})",
        extra={"samples_s": samples, "import_s": imported, "heaviest_imports_s": dict(heavy)},
    )


async def measure(folder: Path, openai_base_url: str, kinds: list[str], runs: int = 5) -> list[Row]:
    rows = [await measure_one(kind, folder / kind, openai_base_url, runs) for kind in kinds]
    interpreter = await interpreter_seconds()
    return [
        Row(
            measure="start-up: bare interpreter",
            adapter="python -c pass",
            unit="s",
            p50=interpreter,
            note="the floor every start pays before threadline's first import",
        ),
        *rows,
    ]
