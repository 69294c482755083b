"""``threadline doctor``: is the OpenAI key good, do the models exist, is the database writable, which
adapters are configured and do their credentials work. Exits non-zero on any failure."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import openai

from bot.openai_errors import api_error_message
from bot.runtime import open_runtime
from bot.settings import Settings
from bot.store import SchemaTooNew, StoreUnavailable, open_store


def _models_in_use(settings: Settings) -> dict[str, str]:
    models = {
        "THREADLINE_MODEL": settings.model,
        "THREADLINE_TRANSCRIPTION_MODEL": settings.transcription_model,
    }
    if settings.voice_replies != "never":
        models["THREADLINE_TTS_MODEL"] = settings.tts_model
    if "image_generation" in settings.tools:
        models["THREADLINE_IMAGE_MODEL"] = settings.image_model
    return models


async def check_openai(settings: Settings, client: openai.AsyncOpenAI) -> list[tuple[bool, str]]:
    where = settings.openai_base_url or "https://api.openai.com/v1"
    if not settings.openai_api_key.get_secret_value():
        return [(False, "OPENAI_API_KEY is not set")]
    try:
        available = {model.id async for model in client.models.list()}
    except openai.OpenAIError as exc:
        return [(False, f"OpenAI at {where}: {api_error_message(exc, model=settings.model)}")]
    results = [(True, f"OpenAI at {where}: key accepted, {len(available)} models listed")]
    for setting, model in _models_in_use(settings).items():
        ok = model in available
        results.append((ok, f"model {model} ({setting}) {'exists' if ok else 'is NOT in the models list'}"))
    return results


async def check_database(settings: Settings) -> list[tuple[bool, str]]:
    """Reachable, schema version, writable: on either backend, named without its password."""
    location = settings.database_location
    try:
        store = await open_store(location, pool_size=1)
        try:
            version = await store.probe()
        finally:
            await store.close()
    except (StoreUnavailable, SchemaTooNew) as exc:  # their messages name the database, without a password
        return [(False, str(exc))]
    except Exception as exc:  # e.g. an unwritable SQLite file: name the problem, never a traceback
        return [(False, f"database {location.safe} is not writable: {exc}")]
    return [(True, f"database {location.safe} ({location.scheme}) is reachable and writable (schema v{version})")]


async def run_doctor(settings: Settings, sections: Mapping[str, Any], load_adapter: Callable[[str], Any]) -> int:
    results = await check_database(settings)
    if not results[0][0]:
        _print(results)
        return 1
    async with open_runtime(settings) as runtime:
        results += await check_openai(settings, runtime.openai)
        configured = [n for n in ("slack", "discord") if getattr(sections.get(n), "configured", False)]
        results.append((True, f"adapters configured: {', '.join(configured) or 'none (console only)'}"))
        for name in configured:
            try:
                results += await load_adapter(name).doctor_checks(runtime.gateway, sections[name])
            except Exception as exc:
                results.append((False, f"{name}: check failed: {type(exc).__name__}"))
    _print(results)
    failed = sum(1 for ok, _ in results if not ok)
    print(f"{'OK' if not failed else f'{failed} problem(s) found'}", file=sys.stdout)
    return 1 if failed else 0


def _print(results: list[tuple[bool, str]]) -> None:
    for ok, line in results:
        print(f"{'✓' if ok else '✗'} {line}")
