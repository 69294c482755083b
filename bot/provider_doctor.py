"""``threadline doctor`` for the configured providers: each reachable, each model in use listed by its server
(GET /v1/models), and whether it takes function tools (one small request with a tool, per provider)."""

from __future__ import annotations

from typing import Any, Literal

from bot.providers import Provider, ProviderError, Providers
from bot.settings import Settings

Result = tuple[Literal["ok", "warn", "fail"], str]
PROBE_TOOL = {
    "name": "threadline_probe",
    "description": "Answer the probe.",
    "parameters": {"type": "object", "properties": {}, "required": [], "additionalProperties": False},
}


def provider_models(settings: Settings, channel_models: list[tuple[str, str, str]]) -> dict[str, dict[str, str]]:
    """Provider name → {model id on its server: the setting (or channel) that names it}."""
    found: dict[str, dict[str, str]] = {}
    named = [("THREADLINE_MODEL", settings.model)]
    named += [(f"the model of {platform} channel {channel}", model) for platform, channel, model in channel_models]
    for where, model in named:
        name, model_id = settings.provider_of(model)
        if name is not None:
            found.setdefault(name, {}).setdefault(model_id, where)
    return found


async def check_providers(
    settings: Settings, providers: Providers, channel_models: list[tuple[str, str, str]]
) -> list[Result]:
    results: list[Result] = []
    in_use = provider_models(settings, channel_models)
    for name, provider in providers.by_name.items():
        try:
            listed = {str(entry.get("id")) for entry in await providers.models(provider)}
        except ProviderError as exc:
            results.append(("fail", f"provider {name}: {exc}"))
            continue
        results.append(("ok", f"provider {name} at {provider.base_url} ({provider.config.api}): {len(listed)} models"))
        wanted = in_use.get(name, {})
        for model_id, where in wanted.items():
            if model_id in listed:
                results.append(("ok", f"{name}/{model_id} ({where}) is listed by {name}"))
            else:
                results.append(("fail", f"{name}/{model_id} ({where}) is not listed by {name}"))
        if wanted and provider.config.tools and provider.config.api != "openai":
            results.append(await probe_tools(providers, provider, next(iter(wanted))))
    return results


async def probe_tools(providers: Providers, provider: Provider, model_id: str) -> Result:
    """One request offering a tool: a server (or model) that refuses tools should have ``tools = false``."""
    body: dict[str, Any]
    if provider.config.api == "responses":
        tool = {"type": "function", **PROBE_TOOL}
        body = {"model": model_id, "input": "Call threadline_probe.", "tools": [tool], "store": False}
        path = "/responses"
    else:
        messages = [{"role": "user", "content": "Call threadline_probe."}]
        body = {"model": model_id, "messages": messages, "tools": [{"type": "function", "function": PROBE_TOOL}]}
        path = "/chat/completions"
    try:
        await providers.request(provider, "POST", path, body)
    except ProviderError as exc:
        return ("warn", f"provider {provider.name}: a request with tools failed ({exc}); set tools = false for it")
    return ("ok", f"provider {provider.name} accepts function tools ({model_id})")
