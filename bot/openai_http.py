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
    """The SDK's aiohttp transport, except that a refused or dropped connection is a connection error, and that it
    never closes a session it was given.

    Its exception map turns every non-timeout ``aiohttp.ClientConnectionError`` into ``httpx2.ConnectTimeout``,
    so an unreachable server would read "took too long" instead of "couldn't reach OpenAI".
    """

    def __init__(self, *, limits: httpx2.Limits, client: aiohttp.ClientSession | None) -> None:
        super().__init__(limits=limits, client=client)
        self._shared_session = client is not None

    async def aclose(self) -> None:
        if not self._shared_session:  # a shared session belongs to the runtime, which closes it
            await super().aclose()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            return await super().handle_async_request(request)
        except httpx2.ConnectTimeout as exc:
            cause = exc.__cause__
            if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(cause, aiohttp.ServerTimeoutError):
                raise httpx2.ConnectError(str(exc), request=request) from cause
            raise


def openai_http_client(settings: Settings, session: aiohttp.ClientSession | None = None) -> httpx2.AsyncClient:
    """The SDK's HTTP client; with ``session``, its aiohttp transport runs on that (the process's one) session."""
    # A turn holds at most one connection, so the pool is as large as the turn cap (the SDK default: 1,000).
    limits = httpx2.Limits(max_connections=max(settings.max_concurrent_turns, 100), max_keepalive_connections=100)
    if settings.openai_http_client == "httpx":
        return DefaultAsyncHttpxClient(timeout=settings.openai_timeout_secs, limits=limits)
    transport = _Transport(limits=limits, client=session)
    return DefaultAioHttpClient(timeout=settings.openai_timeout_secs, limits=limits, transport=transport)
