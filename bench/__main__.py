"""``python -m bench``: every measure, one table, ``bench/results.json``. See the README's Performance section."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory

from bench import burst, cadence, concurrency, cost, local, overhead, startup, store
from bench.model_server import model_server
from bench.report import RESULTS_PATH, Row, machine, table, write_results

MEASURES = ("store", "cost", "overhead", "concurrency", "cadence", "startup", "burst", "local")
ADAPTERS = ("console", "slack-socket", "slack-http", "discord")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default=",".join(MEASURES), help=f"comma list of: {', '.join(MEASURES)}")
    parser.add_argument("--adapters", default=",".join(ADAPTERS), help="adapters for overhead, cadence, start-up")
    parser.add_argument("--turns", type=int, default=200, help="timed turns per overhead row (default 200)")
    parser.add_argument("--ttft", type=float, default=0.02, help="the fake model's time to first token, overhead")
    parser.add_argument(
        "--conversation-latency", type=float, default=0.15, help="conversation create/update, new-thread overhead"
    )
    parser.add_argument("--threads", type=int, default=1000, help="concurrent threads (default 1000)")
    parser.add_argument("--messages", type=int, default=2, help="messages per concurrent thread (default 2)")
    parser.add_argument("--latency", type=float, default=2.0, help="model latency for concurrency (default 2 s)")
    parser.add_argument("--cost-turns", type=int, default=50, help="turns of the growing thread (default 50)")
    parser.add_argument("--cadence-seconds", type=float, default=12.0, help="length of the streamed answer")
    parser.add_argument("--startup-runs", type=int, default=5, help="timed starts per adapter (default 5)")
    parser.add_argument("--burst-mentions", type=int, default=1000, help="Discord mentions at once (default 1000)")
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="where to write the JSON results")
    return parser


def _failed(name: str, exc: BaseException) -> Row:
    return Row(measure=name, adapter="(error)", passed=False, note=f"{type(exc).__name__}: {exc}")


async def _run(args: argparse.Namespace) -> list[Row]:
    only = [m for m in args.only.split(",") if m]
    adapters = [a for a in args.adapters.split(",") if a]
    unknown = set(only) - set(MEASURES) | set(adapters) - set(ADAPTERS)
    if unknown:
        raise SystemExit(f"unknown measure or adapter: {', '.join(sorted(unknown))}")
    plan = overhead.Plan(turns=args.turns, ttft=args.ttft)
    rows: list[Row] = []
    with TemporaryDirectory(prefix="threadline-bench-") as tmp:
        folder = Path(tmp)

        async def overhead_rows() -> list[Row]:
            async with model_server(ttft=plan.ttft, chunk=1000) as url:
                rows = await overhead.measure(url, plan, folder / "overhead", ["floor", "core", *adapters])
            latency = args.conversation_latency
            async with model_server(ttft=plan.ttft, chunk=1000, conversation_latency=latency) as url:
                return rows + await overhead.new_thread_rows(url, plan, folder / "overhead-new", latency)

        async def startup_rows() -> list[Row]:
            async with model_server(ttft=0.0) as url:
                return await startup.measure(folder / "startup", url, adapters, runs=args.startup_runs)

        platforms = [name for name, spec in cadence.KINDS.items() if spec[0] in adapters]

        async def none() -> list[Row]:
            return []

        jobs: dict[str, Callable[[], Awaitable[list[Row]]]] = {
            "store": lambda: store.measure(folder / "store"),
            "cost": lambda: cost.measure(folder / "cost", turns=args.cost_turns),
            "local": lambda: local.measure(folder / "local", turns=args.cost_turns),
            "overhead": overhead_rows,
            "concurrency": lambda: concurrency.measure(args.threads, args.messages, args.latency),
            "cadence": lambda: cadence.measure(folder / "cadence", args.cadence_seconds, platforms),
            "startup": startup_rows,
            "burst": lambda: burst.measure(folder / "burst", args.burst_mentions) if "discord" in adapters else none(),
        }
        for name in MEASURES:
            if name not in only:
                continue
            began = time.monotonic()
            print(f"… {name}", file=sys.stderr, flush=True)
            try:
                rows += await jobs[name]()
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                rows.append(_failed(name, exc))
            print(f"  {name}: {time.monotonic() - began:.0f} s", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    began = time.monotonic()
    rows = asyncio.run(_run(args))
    seconds = time.monotonic() - began
    info = machine()
    print(table(rows))
    print(f"\n{info['cores']} cores, Python {info['python']}, {info['date']}; {seconds:.0f} s in all")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_results(rows, settings=settings, seconds=seconds, path=args.output)
    return 0 if all(r.passed is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
