"""``threadline run | doctor | --version``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from bot import __version__
from bot.doctor import run_doctor, startup_calendar_warnings
from bot.errors import StartupError
from bot.logging_setup import setup_logging
from bot.runtime import Runtime, open_runtime
from bot.settings import Settings
from bot.store import SchemaTooNew, StoreUnavailable, opened_store
from bot.usage_report import print_usage, since_argument

log = logging.getLogger("threadline")

ADAPTERS = ("console", "slack", "discord")


def load_adapter_module(name: str) -> Any:
    """An adapter package: ``load_settings()``, ``build(gateway, settings)``, ``doctor_checks(gateway, settings)``."""
    return importlib.import_module(f"adapters.{name}")


def load_adapter_settings() -> dict[str, Any]:
    """Each adapter's settings section, built once (their packages import no platform library)."""
    return {name: load_adapter_module(name).load_settings() for name in ADAPTERS}


def configured_adapters(sections: Mapping[str, Any]) -> list[str]:
    """Every adapter whose credentials are set; the console when none is."""
    names = [name for name in ("slack", "discord") if getattr(sections.get(name), "configured", False)]
    return names or ["console"]


async def serve(settings: Settings, sections: Mapping[str, Any], names: Sequence[str]) -> int:
    try:
        async with open_runtime(settings) as runtime:
            adapters = [load_adapter_module(name).build(runtime.gateway, sections[name]) for name in names]
            runtime.health.expect(adapter.name for adapter in adapters)
            # THREADLINE_HTTP_PORT: /healthz and /metrics, unless an adapter took them onto its own server.
            async with runtime.health.serving():
                calendar = asyncio.create_task(_log_calendar(runtime), name="model-calendar")
                try:
                    return await _run_adapters(runtime, adapters)
                finally:
                    calendar.cancel()
                    await asyncio.gather(calendar, return_exceptions=True)
    except (StoreUnavailable, SchemaTooNew) as exc:  # from open_runtime; adapters report their own failures
        raise StartupError(str(exc)) from exc


async def _log_calendar(runtime: Runtime) -> None:
    """Once at start-up, alongside the adapters: warn about models in use that shut down soon (or did)."""
    for line in await startup_calendar_warnings(runtime.settings, runtime.openai, runtime.store):
        log.warning("%s (threadline doctor lists every model)", line)


async def _run_adapters(runtime: Runtime, adapters: list[Any]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_interrupt() -> None:
        """Ctrl-C stops the answer in progress where an adapter has one (the console); else it quits."""
        if not any(adapter.interrupt() for adapter in adapters if hasattr(adapter, "interrupt")):
            stop.set()

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGINT, on_interrupt)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(adapter.run(), name=f"adapter:{adapter.name}") for adapter in adapters]
    stopper = asyncio.create_task(stop.wait())
    pending: set[asyncio.Task[Any]] = set(tasks)
    code = 0
    try:
        while pending and not stop.is_set():
            done, _ = await asyncio.wait(pending | {stopper}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stopper}:
                pending.discard(task)
                exc = task.exception()
                if isinstance(exc, StartupError):
                    print(f"threadline: {exc}", file=sys.stderr)
                    code = 1
                    stop.set()
                elif exc is not None:
                    log.error("adapter %s stopped with an error", task.get_name(), exc_info=exc)
                    code = 1
                    stop.set()
    finally:
        for adapter in adapters:
            with contextlib.suppress(Exception):
                await adapter.close()
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        stopper.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.turns.wait_idle(), timeout=10)
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    return code


async def print_feedback(settings: Settings, limit: int) -> int:
    async with opened_store(settings.database_location) as store:
        rows = await store.recent_feedback(limit)
    if not rows:
        print("no feedback yet")
    for row in rows:
        when = datetime.fromtimestamp(row.at, UTC).strftime("%Y-%m-%d %H:%M")
        mark = "👍" if row.value == "good" else "👎"
        print(f"{when}  {mark}  {row.user}  {row.key}  (answer {row.turn})")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="threadline", description=__doc__)
    parser.add_argument("--version", action="version", version=f"threadline {__version__}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="start every configured adapter (the console when none is configured)")
    run.add_argument(
        "--adapter",
        action="append",
        choices=ADAPTERS,
        help="start this adapter (repeatable); default: every adapter whose credentials are set",
    )
    sub.add_parser("doctor", help="check the OpenAI key, models, database and adapters")
    feedback = sub.add_parser("feedback", help="print the latest 👍/👎 feedback on answers, newest first")
    feedback.add_argument("-n", "--limit", type=int, default=20, help="how many (default 20)")
    usage = sub.add_parser("usage", help="tokens and estimated cost from the usage ledger, per user, model and day")
    usage.add_argument(
        "--since", type=since_argument, default="30d", help="7d, 24h or a UTC date such as 2026-11-01 (default 30d)"
    )
    usage.add_argument("--csv", action="store_true", help="one CSV row per day, platform, user, channel and model")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2
    try:
        settings = Settings()
        sections = load_adapter_settings()
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"threadline: invalid settings: {problems}", file=sys.stderr)
        return 2
    setup_logging(settings, *(section for section in sections.values() if section is not None))
    if args.command == "doctor":
        return asyncio.run(run_doctor(settings, sections, load_adapter_module))
    try:
        if args.command == "feedback":
            return asyncio.run(print_feedback(settings, max(1, args.limit)))
        if args.command == "usage":
            return asyncio.run(print_usage(settings, args.since, as_csv=args.csv))
    except (StoreUnavailable, SchemaTooNew) as exc:  # the database of a report
        print(f"threadline: {exc}", file=sys.stderr)
        return 1
    local_default = settings.provider_of(settings.model)[0] is not None  # a provider's model needs no OpenAI key
    if not settings.openai_api_key.get_secret_value() and not settings.openai_base_url and not local_default:
        print(
            "threadline: OPENAI_API_KEY is not set. Export it (or put it in .env), "
            "or set OPENAI_BASE_URL to a local OpenAI-compatible server, or make THREADLINE_MODEL a provider's "
            "model (NAME/model, with a [providers.NAME] table in threadline.toml).",
            file=sys.stderr,
        )
        return 2
    names = args.adapter or configured_adapters(sections)
    try:
        return asyncio.run(serve(settings, sections, names))
    except StartupError as exc:
        print(f"threadline: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
