"""``/healthz`` and ``/metrics`` over HTTP (``THREADLINE_HTTP_PORT``), with any adapter, the console included.

The server is an aiohttp app of its own, unless an adapter already listens on that port (Slack's HTTP mode with
``SLACK_HTTP_PORT`` equal to it): the adapter then takes the routes through ``Gateway.http_routes`` and adds them
to its own app, and no second server is opened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from bot.errors import StartupError
from bot.metrics import Metrics
from bot.settings import Settings
from bot.store import Store

log = logging.getLogger("threadline.health")

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
# The database probe is one cheap read; a database that cannot answer it this fast counts as down (a load
# balancer's health check must not hang on a dead pool).
DB_PROBE_TIMEOUT_SECS = 2.0


class Health:
    """What ``/healthz`` reports, and the HTTP routes (or server) that serve it and ``/metrics``.

    The process is **ready** (200) when both hold:

    - **the database** answered a read of its schema version within ``DB_PROBE_TIMEOUT_SECS``;
    - **every adapter is connected**: each adapter this process runs (the CLI announces them with ``expect``
      before they start; an adapter started another way counts from its first report) has reported itself
      connected through ``Gateway.connected`` and has not reported a disconnection since. With no adapter at
      all the process is not ready: there is nothing to serve.

    Otherwise it is not ready (503); the body says which part failed. The time since OpenAI last answered a
    request without an error is reported but does not decide readiness: a quiet bot makes no request, and an
    OpenAI outage is told to users turn by turn, which a restart would not cure.
    """

    def __init__(self, *, settings: Settings, store: Store, metrics: Metrics) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._mounted = False  # an adapter serves the routes on its own server

    def expect(self, platforms: Iterable[str]) -> None:
        """Adapters about to start: each counts as not connected until it reports otherwise."""
        for platform in platforms:
            self._metrics.adapter(platform, connected=False)

    async def report(self) -> tuple[bool, dict[str, Any]]:
        """(ready, the JSON body of ``/healthz``)."""
        database = await self._probe_database()
        adapters = dict(sorted(self._metrics.adapters.items()))
        since = self._metrics.since_openai_success()
        ready = bool(database["ok"]) and bool(adapters) and all(adapters.values())
        body = {
            "ready": ready,
            "adapters": adapters,
            "database": database,
            "openai": {"last_success_secs_ago": None if since is None else round(since, 3)},
        }
        return ready, body

    async def _probe_database(self) -> dict[str, Any]:
        try:
            async with asyncio.timeout(DB_PROBE_TIMEOUT_SECS):
                await self._store.schema_version()
        except TimeoutError:
            return {"ok": False, "error": f"no answer within {DB_PROBE_TIMEOUT_SECS:g} s"}
        except Exception as exc:  # StoreUnavailable, or whatever else a dead connection raises
            return {"ok": False, "error": type(exc).__name__}
        return {"ok": True}

    async def _healthz(self, request: web.Request) -> web.Response:
        ready, body = await self.report()
        return web.json_response(body, status=200 if ready else 503)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(HEALTH_PATH, self._healthz),
            web.get(METRICS_PATH, make_aiohttp_handler(self._metrics.registry)),
        ]

    def claim(self, port: int | None) -> list[web.RouteDef]:
        """The routes, for an adapter whose own HTTP server listens on ``port``, when that is
        ``THREADLINE_HTTP_PORT``: then ``serving`` opens no server. Empty otherwise."""
        if port is None or self._settings.http_port is None or port != self._settings.http_port:
            return []
        self._mounted = True
        log.info("health and metrics share the adapter's HTTP server on port %s", port)
        return self.routes()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[int | None]:
        """Serve the routes on ``THREADLINE_HTTP_HOST:THREADLINE_HTTP_PORT`` for the block; yields the port bound
        (None when no port is set, or an adapter serves them). A port in use is a ``StartupError``."""
        port, host = self._settings.http_port, self._settings.http_host
        if port is None or self._mounted:
            yield None
            return
        app = web.Application()
        app.add_routes(self.routes())
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            try:
                await site.start()
            except OSError as exc:
                raise StartupError(f"cannot listen on {host}:{port} for health and metrics ({exc.strerror}).") from exc
            bound = int(runner.addresses[0][1])
            log.info("health and metrics on http://%s:%s%s and %s", host, bound, HEALTH_PATH, METRICS_PATH)
            yield bound
        finally:
            await runner.cleanup()
