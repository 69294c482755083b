"""The configured model servers (``[providers.NAME]``): their keys, and plain HTTP to them on the process's aiohttp
session (no client of their own: one HTTP session per process). ``api = "openai"`` providers get an ``AsyncOpenAI``
on that same session instead (``bot.engines``).

Errors come out as ``UserFacingError``s that name the provider, so a down server is one short line in the thread.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from bot.errors import StartupError, UserFacingError
from bot.provider_config import ProviderConfig
from bot.settings import Settings
from bot.sse import sse_events

log = logging.getLogger("threadline.providers")

# Fields of a GET /v1/models entry that give the model's context length, by server: vLLM, LM Studio/OpenRouter,
# others; llama.cpp puts it under "meta".
CONTEXT_FIELDS = ("max_model_len", "context_length", "context_window", "max_context_length")


class ProviderError(UserFacingError):
    """The provider is down or refused a request; the message names it."""


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    config: ProviderConfig
    key: str

    @property
    def base_url(self) -> str:
        return self.config.base_url.rstrip("/")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}


def provider_key(name: str, config: ProviderConfig, environ: Mapping[str, str]) -> str:
    if config.api_key is not None:
        return config.api_key.get_secret_value()
    if config.api_key_env is not None:
        if not environ.get(config.api_key_env):
            raise StartupError(f"provider {name}: the variable {config.api_key_env} (its api_key_env) is not set")
        return environ[config.api_key_env]
    return ""


def context_of(entry: Mapping[str, Any]) -> int | None:
    """The context length a models-list entry states, if any."""
    for name in CONTEXT_FIELDS:
        if isinstance(value := entry.get(name), int) and value > 0:
            return value
    meta = entry.get("meta")
    if isinstance(meta, Mapping) and isinstance(value := meta.get("n_ctx_train"), int) and value > 0:
        return value
    return None


class Providers:
    """Every configured provider, and the context budgets learnt from their model lists (read once each)."""

    def __init__(
        self, settings: Settings, http: aiohttp.ClientSession, environ: Mapping[str, str] | None = None
    ) -> None:
        env = os.environ if environ is None else environ
        self.settings = settings
        self.http = http
        self.by_name = {
            name: Provider(name, config, provider_key(name, config, env)) for name, config in settings.providers.items()
        }
        self._contexts: dict[str, dict[str, int | None]] = {}

    def get(self, name: str) -> Provider:
        return self.by_name[name]

    async def context_tokens(self, provider: Provider, model: str) -> int:
        """The model's context budget: the provider's ``context_tokens``, else what its models list says, else
        ``THREADLINE_LOCAL_CONTEXT_TOKENS``."""
        if provider.config.context_tokens is not None:
            return provider.config.context_tokens
        if provider.name not in self._contexts:
            try:
                models = await self.models(provider)
            except ProviderError as exc:
                log.info("no context length from %s: %s", provider.name, exc)
                return self.settings.local_context_tokens  # asked again next turn
            self._contexts[provider.name] = {str(m.get("id")): context_of(m) for m in models}
        return self._contexts[provider.name].get(model) or self.settings.local_context_tokens

    async def models(self, provider: Provider) -> list[dict[str, Any]]:
        """GET /v1/models: the entries the server lists."""
        body = await self.request(provider, "GET", "/models")
        data = body.get("data") if isinstance(body, dict) else None
        return [entry for entry in data or [] if isinstance(entry, dict)]

    async def request(self, provider: Provider, method: str, path: str, body: Any = None) -> Any:
        """One JSON request; its JSON answer."""
        try:
            async with self.http.request(
                method, provider.base_url + path, json=body, headers=provider.headers
            ) as response:
                if response.status >= 400:
                    raise self.refused(provider, response.status, await response.text())
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            raise self.unreachable(provider, exc) from exc

    async def stream(self, provider: Provider, path: str, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST with ``stream: true``: the server-sent events' JSON, as they come."""
        started = False
        try:
            async with self.http.post(provider.base_url + path, json=body, headers=provider.headers) as response:
                if response.status >= 400:
                    raise self.refused(provider, response.status, await response.text())
                started = True

                async def lines() -> AsyncIterator[str]:
                    async for raw in response.content:
                        yield raw.decode("utf-8", errors="replace").rstrip("\r\n")

                async for event in sse_events(lines()):
                    if isinstance(event.get("error"), dict):
                        message = event["error"].get("message") or "error"
                        raise ProviderError(f"The model server {provider.name} reported an error: {message}")
                    yield event
        except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
            if started:
                raise ProviderError(
                    f"The connection to the model server {provider.name} dropped mid-answer. Please ask again."
                ) from exc
            raise self.unreachable(provider, exc) from exc

    @staticmethod
    def unreachable(provider: Provider, exc: BaseException) -> ProviderError:
        log.warning("provider %s at %s unreachable: %s", provider.name, provider.base_url, type(exc).__name__)
        return ProviderError(
            f"I couldn't reach the model server {provider.name} ({provider.base_url}). Please try again shortly."
        )

    @staticmethod
    def refused(provider: Provider, status: int, text: str) -> ProviderError:
        try:
            message = str(json.loads(text)["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = text.strip()[:200] or f"HTTP {status}"
        return ProviderError(f"The model server {provider.name} refused the request ({status}): {message[:300]}")
