"""The two OpenAI calls of every turn, a streamed ``POST /responses`` and ``POST /conversations`` for a new thread,
made straight on the process's aiohttp session.

Through the SDK each request costs ~2 ms of CPU (an httpx2 request with its headers, URL merging, auth and
redirect layers, then the aiohttp transport under it); directly it costs a fraction (README, Performance). The
behaviour stays the SDK's: its client supplies the base URL, headers (key, organization, project), timeout and
``max_retries``; its own ``_should_retry``, ``_calculate_retry_timeout`` and ``_make_status_error_from_response``
decide retries (408/409/429/5xx, ``x-should-retry``, ``retry-after(-ms)``, backoff with jitter; timeouts and
connection errors too) and build the same ``openai.APIStatusError`` subclasses, so ``api_error_message`` reads
the same. A stream is never retried once its response has begun. Every attempt is reported to ``Metrics`` as
``bot.openai_http._Observed`` reports the SDK's. Everything else (files, containers, retrieve…) stays on the SDK;
with ``THREADLINE_OPENAI_HTTP_CLIENT=httpx`` these two calls do too (``SdkCalls``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp
import httpx2
import openai
from openai import AsyncOpenAI
from openai._models import FinalRequestOptions

from bot.metrics import Metrics
from bot.openai_http import error_code
from bot.settings import Settings


class LineStream(Protocol):
    """A streamed response read as text lines (what ``httpx2.Response`` offers, and ``DirectStream``)."""

    def aiter_lines(self) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


class TurnCalls(Protocol):
    async def stream(self, path: str, body: dict[str, Any]) -> LineStream: ...

    async def create_conversation(self, metadata: dict[str, str]) -> str: ...


class SdkCalls:
    """The same calls through the SDK (its generic ``post``: no per-event models)."""

    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client

    async def stream(self, path: str, body: dict[str, Any]) -> LineStream:
        return await self._client.post(path, cast_to=httpx2.Response, body=body, stream=True)

    async def create_conversation(self, metadata: dict[str, str]) -> str:
        return (await self._client.conversations.create(metadata=metadata)).id


class DirectStream:
    """An aiohttp response read as lines (``\\n``, ``\\r\\n`` or ``\\r``); aiohttp failures while reading become
    the httpx2 errors the SDK's aiohttp transport raises, so the engine tells a dropped stream the same way."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def aiter_lines(self) -> AsyncIterator[str]:
        pending = b""
        try:
            async for chunk in self._response.content.iter_any():
                data = pending + chunk if pending else chunk
                held = b""
                if b"\r" in data:
                    if data.endswith(b"\r"):  # maybe the first half of "\r\n": decide with the next chunk
                        data, held = data[:-1], b"\r"
                    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
                lines = data.split(b"\n")
                pending = lines.pop() + held
                for line in lines:
                    yield line.decode(errors="replace")
        except TimeoutError as exc:
            raise httpx2.ReadTimeout(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise httpx2.ReadError(str(exc)) from exc
        if pending := pending.rstrip(b"\r"):
            yield pending.decode(errors="replace")

    async def aclose(self) -> None:
        self._response.release()  # an unfinished body closes the connection (the server sees the reader go)


class DirectCalls:
    """``TurnCalls`` on the aiohttp session, with the SDK client's settings, retry policy and errors."""

    def __init__(self, client: AsyncOpenAI, http: aiohttp.ClientSession, metrics: Metrics) -> None:
        self._client = client
        self._http = http
        self._metrics = metrics
        self._base = str(client.base_url).rstrip("/")
        self._max_retries = client.max_retries
        self._options = FinalRequestOptions.construct(method="post", url="/responses")
        timeout = client.timeout
        if isinstance(timeout, httpx2.Timeout):
            connect, read, pool = timeout.connect, timeout.read, timeout.pool
        else:
            connect = read = pool = timeout
        # As the SDK's aiohttp transport maps an httpx2 timeout (and no total: a stream may run long).
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read, connect=pool)
        self._read_timeout = "" if read is None else str(read)
        self._headers: dict[str, str] | None = None

    def _headers_for(self, retries_taken: int) -> dict[str, str]:
        if self._headers is None:  # first use, inside the loop: the SDK's X-Stainless-Async names it
            fixed = {key: value for key, value in self._client.default_headers.items() if isinstance(value, str)}
            self._headers = {**self._client.auth_headers, **fixed}
            if self._read_timeout:
                self._headers["X-Stainless-Read-Timeout"] = self._read_timeout
        return {**self._headers, "X-Stainless-Retry-Count": str(retries_taken)}

    async def stream(self, path: str, body: dict[str, Any]) -> LineStream:
        return DirectStream(await self._post(path, body))

    async def create_conversation(self, metadata: dict[str, str]) -> str:
        response = await self._post("/conversations", {"metadata": metadata})
        try:
            data = await response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _failure(exc, self._base + "/conversations") from exc
        finally:
            response.release()
        return str(json.loads(data)["id"])

    async def _post(self, path: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        """The response (status under 400, body unread) after the SDK's retries; else the SDK's exception."""
        url = self._base + path
        payload = json.dumps(body, separators=(",", ":")).encode()
        for retries_taken in range(self._max_retries + 1):
            remaining = self._max_retries - retries_taken
            try:
                response = await self._http.post(
                    url, data=payload, headers=self._headers_for(retries_taken), timeout=self._timeout
                )
            except (TimeoutError, aiohttp.ClientError) as exc:
                timed_out = isinstance(exc, TimeoutError)
                self._metrics.openai_error(code="timeout" if timed_out else "connection_error", status=None)
                if remaining > 0:
                    await asyncio.sleep(self._client._calculate_retry_timeout(remaining, self._options, None))
                    continue
                raise _failure(exc, url) from exc
            if response.status < 400:
                self._metrics.openai_success()
                return response
            try:
                content = await response.read()
            except (TimeoutError, aiohttp.ClientError):
                content = b""
            finally:
                response.release()
            self._metrics.openai_error(code=error_code(content), status=response.status)
            failed = httpx2.Response(
                response.status,
                headers=list(response.raw_headers),
                content=content,
                request=httpx2.Request("POST", url),
            )
            if remaining > 0 and self._client._should_retry(failed):
                wait = self._client._calculate_retry_timeout(remaining, self._options, failed.headers)
                await asyncio.sleep(wait)
                continue
            raise self._client._make_status_error_from_response(failed)
        raise AssertionError("unreachable: the last attempt returns or raises")


def _failure(exc: BaseException, url: str) -> openai.APIConnectionError:
    request = httpx2.Request("POST", url)
    if isinstance(exc, TimeoutError):
        return openai.APITimeoutError(request=request)
    return openai.APIConnectionError(request=request)


def turn_calls(settings: Settings, client: AsyncOpenAI, http: aiohttp.ClientSession, metrics: Metrics) -> TurnCalls:
    """Direct calls on the aiohttp session, unless the SDK is told to use httpx (then the SDK makes them)."""
    if settings.openai_http_client == "httpx":
        return SdkCalls(client)
    return DirectCalls(client, http, metrics)
