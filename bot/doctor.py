"""``threadline doctor``: is the OpenAI key good, do the models exist, is the database writable, which
adapters are configured and do their credentials work. Exits non-zero on any failure."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from typing import Any

import openai

from bot.openai_errors import api_error_message
from bot.runtime import open_runtime
from bot.settings import Settings
from bot.store import Store


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


def check_database(settings: Settings) -> list[tuple[bool, str]]:
    try:
        store = Store(settings.database)
        try:
            with store.conn:
                store.conn.execute("BEGIN IMMEDIATE")
                store.conn.execute("CREATE TEMP TABLE IF NOT EXISTS doctor_probe (x)")
                store.conn.execute("INSERT INTO doctor_probe VALUES (1)")
            version = store.schema_version()
        finally:
            store.close()
    except (sqlite3.Error, OSError, RuntimeError) as exc:
        return [(False, f"database {settings.database} is not writable: {exc}")]
    return [(True, f"database {settings.database} is writable (schema v{version})")]


async def run_doctor(settings: Settings, load_adapter: Callable[[str], Any]) -> int:
    results = check_database(settings)
    if not results[0][0]:
        _print(results)
        return 1
    async with open_runtime(settings) as runtime:
        results += await check_openai(settings, runtime.openai)
        configured = [
            n for n, ok in (("slack", settings.slack_configured), ("discord", settings.discord_configured)) if ok
        ]
        results.append((True, f"adapters configured: {', '.join(configured) or 'none (console only)'}"))
        for name in configured:
            try:
                results += await load_adapter(name).doctor_checks(runtime)
            except Exception as exc:
                results.append((False, f"{name}: check failed: {type(exc).__name__}"))
    _print(results)
    failed = sum(1 for ok, _ in results if not ok)
    print(f"{'OK' if not failed else f'{failed} problem(s) found'}", file=sys.stdout)
    return 1 if failed else 0


def _print(results: list[tuple[bool, str]]) -> None:
    for ok, line in results:
        print(f"{'✓' if ok else '✗'} {line}")
