"""A fake Open-Meteo (geocoding + forecast APIs) on 127.0.0.1, for the built-in ``get_weather`` tool.

It knows a few places; every request is recorded. ``hang`` makes the forecast API never answer (a tool timeout);
``gather=N`` holds each forecast until N are in flight at once, which only calls made in parallel can reach.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PLACES: dict[str, dict[str, Any]] = {
    "paris": {
        "id": 2988507,
        "name": "Paris",
        "latitude": 48.85341,
        "longitude": 2.3488,
        "country": "France",
        "country_code": "FR",
        "admin1": "Île-de-France",
        "timezone": "Europe/Paris",
    },
    "tokyo": {
        "id": 1850147,
        "name": "Tokyo",
        "latitude": 35.6895,
        "longitude": 139.69171,
        "country": "Japan",
        "country_code": "JP",
        "admin1": "Tokyo",
        "timezone": "Asia/Tokyo",
    },
}
# latitude → (temperature, weather code): distinct per place, so answers show which call got which city
WEATHER = {48.85341: (11.4, 3), 35.6895: (18.2, 0)}


@dataclass
class FakeOpenMeteo:
    host: str = "127.0.0.1"
    hang: bool = False
    gather: int = 1
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    base_url: str = ""
    _arrived: int = 0
    _all_here: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> FakeOpenMeteo:
        app = web.Application()
        app.router.add_get("/v1/search", self._search)
        app.router.add_get("/v1/forecast", self._forecast)
        self._runner = web.AppRunner(app, shutdown_timeout=0.25, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self

    @property
    def forecasts(self) -> int:
        return sum(1 for path, _ in self.requests if path == "/v1/forecast")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _search(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query)))
        place = PLACES.get(request.query.get("name", "").strip().lower())
        body: dict[str, Any] = {"generationtime_ms": 0.5}
        if place is not None:
            body["results"] = [place]
        return web.json_response(body)

    async def _forecast(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.query)))
        self._arrived += 1
        if self._arrived >= self.gather:
            self._all_here.set()
        if self.hang:
            await asyncio.Event().wait()
        await self._all_here.wait()
        latitude = float(request.query["latitude"])
        temperature, code = WEATHER.get(latitude, (0.0, 45))
        body = {
            "latitude": latitude,
            "longitude": float(request.query["longitude"]),
            "timezone": "GMT",
            "current": {
                "time": "2026-12-01T12:00",
                "interval": 900,
                "temperature_2m": temperature,
                "apparent_temperature": temperature - 1,
                "relative_humidity_2m": 70,
                "precipitation": 0.0,
                "weather_code": code,
                "wind_speed_10m": 9.5,
            },
            "daily": {
                "time": ["2026-12-01"],
                "weather_code": [code],
                "temperature_2m_max": [temperature + 3],
                "temperature_2m_min": [temperature - 4],
                "precipitation_sum": [0.0],
            },
        }
        return web.json_response(body)
