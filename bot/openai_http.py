"""The openai SDK's HTTP client. By default it runs on aiohttp (the SDK's ``DefaultAioHttpClient``): httpx2's
connection pool does work proportional to the open connections on every request, which made 1,000 concurrent
turns CPU-bound (``python -m bench``); aiohttp's pool stays flat.
"""

from __future__ import annotations

import aiohttp
import httpx2
from openai import DefaultAioHttpClient, DefaultAsyncHttpxClient
from openai._vendor.httpx_aiohttp import AiohttpTransport

from bot.settings import Settings


class _Transport(AiohttpTransport):
    """The SDK's aiohttp transport, except that a refused or dropped connection is a connection error.

    Its exception map turns every non-timeout ``aiohttp.ClientConnectionError`` into ``httpx2.ConnectTimeout``,
    so an unreachable server would read "took too long" instead of "couldn't reach OpenAI".
    """

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return await super().handle_async_request(request)
        except httpx2.ConnectTimeout as exc:
            cause = exc.__cause__
            if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(cause, aiohttp.ServerTimeoutError):
                raise httpx2.ConnectError(str(exc), request=request) from cause
            raise


def openai_http_client(settings: Settings) -> httpx2.AsyncClient:
    # A turn holds at most one connection, so the pool is as large as the turn cap (the SDK default: 1,000).
    limits = httpx2.Limits(max_connections=max(settings.max_concurrent_turns, 100), max_keepalive_connections=100)
    if settings.openai_http_client == "httpx":
        return DefaultAsyncHttpxClient(timeout=settings.openai_timeout_secs, limits=limits)
    transport = _Transport(limits=limits)
    return DefaultAioHttpClient(timeout=settings.openai_timeout_secs, limits=limits, transport=transport)
