"""``threadline doctor``: is the OpenAI key good, do the models exist and are they not shutting down, is the
database reachable and writable, which adapters are configured and do their credentials work. Exits non-zero on
any failure; a shutdown date within the warning window is a warning (``!``), not a failure."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path
from typing import Any, Literal

import openai

from bot.errors import StartupError
from bot.fonts import font_path
from bot.model_calendar import Finding, calendar_findings, model_calendar
from bot.openai_errors import api_error_message
from bot.provider_doctor import check_providers
from bot.runtime import open_runtime
from bot.settings import Settings
from bot.store import SchemaTooNew, Store, StoreUnavailable, open_store

log = logging.getLogger("threadline.doctor")

Level = Literal["ok", "warn", "fail"]
Result = tuple[Level, str]
MARKS: dict[Level, str] = {"ok": "✓", "warn": "!", "fail": "✗"}


def models_in_use(settings: Settings, channel_models: list[tuple[str, str, str]]) -> dict[str, str]:
    """Every model id the configuration can call, by the setting (or channel override) that names it."""
    models = {
        "THREADLINE_MODEL": settings.model,
        "THREADLINE_TRANSCRIPTION_MODEL": settings.transcription_model,
        "THREADLINE_IMAGE_MODEL": settings.image_model,
    }
    if settings.voice_replies != "never":
        models["THREADLINE_TTS_MODEL"] = settings.tts_model
    for platform, channel, model in channel_models:
        models[f"the model of {platform} channel {channel}"] = model
    return models


async def _findings(settings: Settings, client: openai.AsyncOpenAI, store: Store) -> tuple[int, list[Finding]]:
    """How many models the key can list, and a finding per model in use (raises the SDK's error)."""
    calendar = await model_calendar(client)
    in_use = {  # a provider's models are its doctor's (bot/provider_doctor.py)
        where: model
        for where, model in models_in_use(settings, await store.channel_models()).items()
        if settings.provider_of(model)[0] is None
    }
    today = date.today()
    return len(calendar), calendar_findings(in_use, calendar, today=today, warn_days=settings.model_shutdown_warn_days)


async def check_openai(settings: Settings, client: openai.AsyncOpenAI, store: Store) -> list[Result]:
    """The key, and every model in use against ``GET /v1/models``: missing or shut down fails, a shutdown
    within ``THREADLINE_MODEL_SHUTDOWN_WARN_DAYS`` warns."""
    where = settings.openai_base_url or "https://api.openai.com/v1"
    if not settings.openai_api_key.get_secret_value():
        if settings.provider_of(settings.model)[0] is not None:
            return [("ok", "OPENAI_API_KEY is not set: only providers' models answer (no OpenAI-only features)")]
        return [("fail", "OPENAI_API_KEY is not set")]
    try:
        listed, findings = await _findings(settings, client, store)
    except openai.OpenAIError as exc:
        return [("fail", f"OpenAI at {where}: {api_error_message(exc, model=settings.model)}")]
    results: list[Result] = [("ok", f"OpenAI at {where}: key accepted, {listed} models listed")]
    return results + [(finding.level, finding.line[2:]) for finding in findings]


async def startup_calendar_warnings(settings: Settings, client: openai.AsyncOpenAI, store: Store) -> list[str]:
    """What ``run`` logs once at start-up: the doctor's shutdown warnings and failures (never fatal)."""
    try:
        _, findings = await _findings(settings, client, store)
    except openai.OpenAIError as exc:
        log.info("could not read the models list for shutdown dates: %s", type(exc).__name__)
        return []
    return [finding.line[2:] for finding in findings if finding.level != "ok"]


async def check_database(settings: Settings) -> list[Result]:
    """Reachable, schema version, writable: on either backend, named without its password."""
    location = settings.database_location
    try:
        store = await open_store(location, pool_size=1)
        try:
            version = await store.probe()
        finally:
            await store.close()
    except (StoreUnavailable, SchemaTooNew) as exc:  # their messages name the database, without a password
        return [("fail", str(exc))]
    except Exception as exc:  # e.g. an unwritable SQLite file: name the problem, never a traceback
        return [("fail", f"database {location.safe} is not writable: {exc}")]
    return [("ok", f"database {location.safe} ({location.scheme}) is reachable and writable (schema v{version})")]


def check_cjk_font(settings: Settings, path: Path | Literal["find"] | None = "find") -> Result:
    """The CJK font uploaded into code-interpreter containers: a warning when it is missing (charts then draw
    Chinese, Japanese and Korean labels as boxes)."""
    found = font_path() if path == "find" else path
    if found is not None:
        return ("ok", f"CJK chart font: {found.name} ({found.stat().st_size / 1048576:.0f} MB)")
    if "code_interpreter" not in settings.tools:
        return ("ok", "CJK chart font: not needed (the code interpreter is off)")
    return (
        "warn",
        "no CJK chart font found (install the noto-cjk-sans-otc package): "
        "charts with Chinese, Japanese or Korean labels will show boxes",
    )


async def run_doctor(settings: Settings, sections: Mapping[str, Any], load_adapter: Callable[[str], Any]) -> int:
    results = await check_database(settings)
    if results[0][0] == "fail":
        _print(results)
        return 1
    try:
        async with open_runtime(settings) as runtime:
            results += await check_openai(settings, runtime.openai, runtime.store)
            results.append(("ok", runtime.engine.tools.describe()))
            channel_models = await runtime.store.channel_models()
            results += await check_providers(settings, runtime.router.local.providers, channel_models)
            results.append(check_cjk_font(settings))
            configured = [n for n in ("slack", "discord") if getattr(sections.get(n), "configured", False)]
            results.append(("ok", f"adapters configured: {', '.join(configured) or 'none (console only)'}"))
            for name in configured:
                try:
                    checks = await load_adapter(name).doctor_checks(runtime.gateway, sections[name])
                    results += [("ok" if ok else "fail", line) for ok, line in checks]
                except Exception as exc:
                    results.append(("fail", f"{name}: check failed: {type(exc).__name__}"))
    except StartupError as exc:  # a function tool that won't load, an MCP server without its secret…
        results.append(("fail", str(exc)))
    _print(results)
    failed = sum(1 for level, _ in results if level == "fail")
    print(f"{'OK' if not failed else f'{failed} problem(s) found'}", file=sys.stdout)
    return 1 if failed else 0


def _print(results: list[Result]) -> None:
    for level, line in results:
        print(f"{MARKS[level]} {line}")
