"""The built-in ``get_weather`` tool, on Open-Meteo (no key): its geocoding API finds the place, its forecast API
gives the current weather and today's forecast. Both base URLs are settings, so tests use a fake."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from bot.tools.functions import ToolError

# WMO weather interpretation codes, as Open-Meteo documents them.
WMO_CODES = {
    0: "clear sky",
    1: "mainly clear",
    2: "partly cloudy",
    3: "overcast",
    45: "fog",
    48: "depositing rime fog",
    51: "light drizzle",
    53: "moderate drizzle",
    55: "dense drizzle",
    56: "light freezing drizzle",
    57: "dense freezing drizzle",
    61: "slight rain",
    63: "moderate rain",
    65: "heavy rain",
    66: "light freezing rain",
    67: "heavy freezing rain",
    71: "slight snow fall",
    73: "moderate snow fall",
    75: "heavy snow fall",
    77: "snow grains",
    80: "slight rain showers",
    81: "moderate rain showers",
    82: "violent rain showers",
    85: "slight snow showers",
    86: "heavy snow showers",
    95: "thunderstorm",
    96: "thunderstorm with slight hail",
    99: "thunderstorm with heavy hail",
}
CURRENT = "temperature_2m,apparent_temperature,relative_humidity_2m,precipitation,weather_code,wind_speed_10m"
DAILY = "weather_code,temperature_2m_max,temperature_2m_min,precipitation_sum"


def weather_tool(http: aiohttp.ClientSession, *, forecast_url: str, geocoding_url: str) -> Callable[..., Any]:
    """The ``get_weather`` function, bound to the process's HTTP session and the two base URLs."""
    forecast = forecast_url.rstrip("/") + "/v1/forecast"
    search = geocoding_url.rstrip("/") + "/v1/search"

    async def get_json(url: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            async with http.get(url, params=params) as response:
                if response.status != 200:
                    raise ToolError(f"the weather service answered HTTP {response.status}")
                body = await response.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise ToolError(f"the weather service could not be reached ({type(exc).__name__})") from exc
        if not isinstance(body, dict):
            raise ToolError("the weather service sent something that is not JSON")
        return body

    async def get_weather(location: str) -> dict[str, Any]:
        """The current weather and today's forecast for a place, in metric units.

        Args:
            location: A city or place name, optionally with its country: "Paris", "Tokyo, Japan".
        """
        name, _, region = (part.strip() for part in location.partition(","))
        if not name:
            raise ToolError("say which place: the location is empty")
        found = await get_json(search, {"name": name, "count": "10", "language": "en", "format": "json"})
        place = _pick(found.get("results") or [], region)
        if place is None:
            return {"location": location, "error": f"no place called {location!r} was found"}
        params = {
            "latitude": str(place["latitude"]),
            "longitude": str(place["longitude"]),
            "current": CURRENT,
            "daily": DAILY,
            "timezone": "auto",
            "forecast_days": "1",
        }
        data = await get_json(forecast, params)
        return _summary(place, data)

    return get_weather


def _pick(results: list[Any], region: str) -> dict[str, Any] | None:
    """The first result, or the first in the named country or region."""
    places = [r for r in results if isinstance(r, dict) and "latitude" in r and "longitude" in r]
    if region:
        wanted = region.lower()
        for place in places:
            names = {str(place.get(k) or "").lower() for k in ("country", "country_code", "admin1")}
            if wanted in names:
                return place
    return places[0] if places else None


def _summary(place: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    current = data.get("current") or {}
    daily = data.get("daily") or {}

    def conditions(code: Any) -> str:
        return WMO_CODES.get(code, "unknown") if isinstance(code, int) else "unknown"

    def today(key: str) -> Any:
        values = daily.get(key)
        return values[0] if isinstance(values, list) and values else None

    return {
        "place": ", ".join(str(place[k]) for k in ("name", "admin1", "country") if place.get(k)),
        "latitude": place["latitude"],
        "longitude": place["longitude"],
        "timezone": data.get("timezone") or place.get("timezone"),
        "time": current.get("time"),
        "conditions": conditions(current.get("weather_code")),
        "temperature_c": current.get("temperature_2m"),
        "feels_like_c": current.get("apparent_temperature"),
        "humidity_percent": current.get("relative_humidity_2m"),
        "precipitation_mm": current.get("precipitation"),
        "wind_kmh": current.get("wind_speed_10m"),
        "today": {
            "conditions": conditions(today("weather_code")),
            "max_c": today("temperature_2m_max"),
            "min_c": today("temperature_2m_min"),
            "precipitation_mm": today("precipitation_sum"),
        },
    }
