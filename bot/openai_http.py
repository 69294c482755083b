"""The openai SDK's HTTP client. By default it runs on aiohttp (the SDK's ``DefaultAioHttpClient``): httpx2's
connection pool does work proportional to the open connections on every request, which made 1,000 concurrent
turns CPU-bound (``python -m bench``); aiohttp's pool stays flat.

Either transport is wrapped in ``_Observed``, which tells ``Metrics`` how each request attempt ended: that is where
``threadline_openai_errors_total`` and ``/healthz``'s last OpenAI success come from, with no hook in the engine.
"""

from __future__ import annotations

import json
import re

import aiohttp
import httpx2
from openai import DefaultAioHttpClient, DefaultAsyncHttpxClient
from openai._vendor.httpx_aiohttp import AiohttpTransport

from bot.metrics import Metrics
from bot.settings import Settings

# An error code worth a label value: OpenAI's are short snake_case words; anything else (another server's free
# text) would grow the label set without bound.
_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


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


class _Observed(httpx2.AsyncBaseTransport):
    """A transport that reports every attempt to ``Metrics``: a response under 400 is a success; an error status
    is counted with OpenAI's error code (its small body is read here, and the SDK reads the same bytes after); a
    timeout or a failed connection is counted by kind."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await self._inner.handle_async_request(request)
        except httpx2.TimeoutException:
            self._metrics.openai_error(code="timeout", status=None)
            raise
        except httpx2.TransportError:
            self._metrics.openai_error(code="connection_error", status=None)
            raise
        if response.status_code < 400:
            self._metrics.openai_success()
            return response
        try:
            body = await response.aread()
        except httpx2.TransportError:
            body = b""
        self._metrics.openai_error(code=error_code(body), status=response.status_code)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def error_code(body: bytes) -> str:
    """OpenAI's error ``code`` (else its ``type``) from an error body; ``unknown`` when it has neither."""
    try:
        error = json.loads(body).get("error") or {}
    except (ValueError, AttributeError):
        return "unknown"
    for field in ("code", "type"):
        value = error.get(field) if isinstance(error, dict) else None
        if isinstance(value, str) and _CODE.fullmatch(value):
            return value
    return "unknown"


def openai_http_client(
    settings: Settings, session: aiohttp.ClientSession | None = None, *, metrics: Metrics | None = None
) -> httpx2.AsyncClient:
    """The SDK's HTTP client; with ``session``, its aiohttp transport runs on that (the process's one) session;
    with ``metrics``, every request attempt is reported there."""
    # A turn holds at most one connection, so the pool is as large as the turn cap (the SDK default: 1,000).
    limits = httpx2.Limits(max_connections=max(settings.max_concurrent_turns, 100), max_keepalive_connections=100)
    transport: httpx2.AsyncBaseTransport
    if settings.openai_http_client == "httpx":
        if metrics is None:
            return DefaultAsyncHttpxClient(timeout=settings.openai_timeout_secs, limits=limits)
        transport = _Observed(httpx2.AsyncHTTPTransport(limits=limits), metrics)
        return DefaultAsyncHttpxClient(timeout=settings.openai_timeout_secs, limits=limits, transport=transport)
    transport = _Transport(limits=limits, client=session)
    if metrics is not None:
        transport = _Observed(transport, metrics)
    return DefaultAioHttpClient(timeout=settings.openai_timeout_secs, limits=limits, transport=transport)
