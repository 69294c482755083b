"""Function tools, MCP servers and JSON answers, part by part: schemas from type hints, the built-ins (calculator,
clock), loading from dotted paths and entry points, the registry's start-up errors, the fake's new events."""

from __future__ import annotations

import json
import sys
import textwrap
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, get_args
from zoneinfo import ZoneInfo

import aiohttp
import pydantic
import pytest
from openai.types.responses import ResponseStreamEvent

from bot.answer_format import JSON, TEXT, json_text_format, split_answer_format
from bot.errors import StartupError
from bot.logging_setup import secret_values
from bot.settings import McpServer, Settings
from bot.stream_events import Step, ToolCall, decode
from bot.tools.calculator import calculate
from bot.tools.clock import current_time
from bot.tools.functions import ToolError, function_tool, parse_docstring, run_calls
from bot.tools.registry import ENTRY_POINT_GROUP, ToolContext, ToolRegistry
from tests.fakes.openai_server import Reply, numbered, plan_turn, turn_events
from tests.helpers import make_settings

EVENT_MODELS: dict[str, type[pydantic.BaseModel]] = {
    get_args(model.model_fields["type"].annotation)[0]: model for model in get_args(get_args(ResponseStreamEvent)[0])
}


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return make_settings(tmp_path, "http://127.0.0.1:9/v1", **overrides)


@pytest.fixture
async def http() -> Any:
    async with aiohttp.ClientSession() as session:
        yield session


# --- schemas from type hints ------------------------------------------------------------------------------


async def _forecast(city: str, days: int = 1, units: str | None = None) -> str:
    """Forecast for a city.

    A second paragraph the model does not need.

    Args:
        city: The city, e.g. "Paris".
        days (int): How many days,
            at most 7.
        units: "metric" or "imperial".

    Returns:
        The forecast.
    """
    return f"{city} {days} {units}"


def test_a_typed_function_becomes_a_strict_tool() -> None:
    tool = function_tool(_forecast, name="forecast")
    spec = tool.spec()
    assert spec["type"] == "function" and spec["name"] == "forecast" and spec["strict"] is True
    assert spec["description"] == "Forecast for a city."
    params = spec["parameters"]
    assert params["type"] == "object" and params["additionalProperties"] is False
    assert params["required"] == ["city", "days", "units"], "strict: every parameter is required"
    assert params["properties"]["city"] == {"description": 'The city, e.g. "Paris".', "title": "City", "type": "string"}
    assert params["properties"]["days"]["description"] == "How many days, at most 7."
    assert {"type": "null"} in params["properties"]["units"]["anyOf"], "an optional parameter is nullable instead"


async def test_arguments_are_validated_and_extra_keys_refused() -> None:
    tool = function_tool(_forecast, name="forecast")
    assert await tool.call('{"city": "Oslo", "days": 2, "units": null}') == "Oslo 2 None"
    with pytest.raises(pydantic.ValidationError):
        await tool.call('{"city": "Oslo", "days": 2, "units": null, "shell": "rm -rf /"}')
    with pytest.raises(pydantic.ValidationError):
        await tool.call('{"city": "Oslo", "days": "many", "units": null}')


def test_functions_that_cannot_be_tools_are_named() -> None:
    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    def star(*args: int) -> int:
        return 0

    for fn, problem in ((untyped, "no type hint"), (star, "plain named parameter")):
        with pytest.raises(Exception, match=problem):
            function_tool(fn)
    with pytest.raises(Exception, match="not a valid tool name"):
        function_tool(_forecast, name="has spaces")


def test_docstring_sections() -> None:
    summary, described = parse_docstring("Add two numbers.\n:param int a: the first\n:param b: the second")
    assert summary == "Add two numbers."
    assert described == {"a": "the first", "b": "the second"}
    assert parse_docstring("Args:\n    a: only args")[0] == ""


# --- the built-ins ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [("2 * (3 + 4) ** 2", "98"), ("2^10", "1024"), ("sqrt(16) + abs(-2)", "6"), ("round(pi, 3)", "3.142")],
)
def test_calculator_does_arithmetic(expression: str, value: str) -> None:
    assert calculate(expression) == value


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("__import__('os').system('id')", "only these functions can be called"),
        ("open('/etc/passwd')", "only these functions can be called"),
        ("x + 1", "unknown name 'x'"),
        ("(1).__class__", "attribute access is not allowed"),
        ("math.pi", "attribute access is not allowed"),
        ("9 ** 9 ** 9", "too large"),
        ("2 ** 100000", "too large"),
        ("(10 ** 3000) * (10 ** 3000)", "too many digits"),
        ("10.0 ** 400", "too large"),
        ("1 / 0", "division by zero"),
        ("'a' * 3", "not allowed"),
        ("[1, 2]", "not allowed"),
        ("lambda: 1", "not allowed"),
        ("1 +", "cannot read"),
        ("1" * 400, "longer than"),
    ],
)
def test_calculator_refuses_anything_but_bounded_arithmetic(expression: str, problem: str) -> None:
    with pytest.raises(ToolError, match=problem):
        calculate(expression)


def test_current_time_in_a_timezone() -> None:
    before = datetime.now(ZoneInfo("Asia/Tokyo"))
    tokyo = current_time("Asia/Tokyo")
    after = datetime.now(ZoneInfo("Asia/Tokyo"))
    assert tokyo["timezone"] == "Asia/Tokyo" and tokyo["utc_offset"] == "+09:00" and tokyo["abbreviation"] == "JST"
    assert tokyo["date"] in {before.date().isoformat(), after.date().isoformat()}
    assert tokyo["weekday"] in {before.strftime("%A"), after.strftime("%A")}
    assert current_time("europe/paris")["timezone"] == "Europe/Paris", "case is forgiven"
    for bad in ("Mars/Olympus", "../../etc/passwd", "Europe", ""):
        with pytest.raises(ToolError, match="unknown time zone"):
            current_time(bad)


async def test_errors_and_timeouts_come_back_as_text() -> None:
    async def slow(seconds: float) -> str:
        """Sleeps."""
        import asyncio

        await asyncio.sleep(seconds)
        return "woke"

    def boom(reason: str) -> str:
        """Raises."""
        raise RuntimeError(reason)

    tools = {t.name: t for t in (function_tool(slow), function_tool(boom), function_tool(current_time))}
    calls = [
        ToolCall("c1", "slow", '{"seconds": 30}'),
        ToolCall("c2", "boom", '{"reason": "the disk is on fire"}'),
        ToolCall("c3", "current_time", '{"timezone": "Mars/Olympus"}'),
        ToolCall("c4", "nope", "{}"),
        ToolCall("c5", "slow", '{"seconds": "soon"}'),
        ToolCall("c6", "slow", "{not json"),
    ]
    outputs = await run_calls(tools, calls, limit_secs=0.2)
    assert outputs[0] == "Error: slow did not answer within 0.2 seconds."
    assert outputs[1] == "Error: boom failed: RuntimeError: the disk is on fire"
    assert outputs[2].startswith("Error: unknown time zone 'Mars/Olympus'")
    assert outputs[3] == "Error: there is no tool named 'nope' here."
    assert outputs[4].startswith("Error: bad arguments for slow: seconds:")
    assert outputs[5].startswith("Error: bad arguments for slow:")


# --- loading: settings, dotted paths, entry points ------------------------------------------------------------


def _write_module(root: Path, name: str, body: str) -> None:
    (root / f"{name}.py").write_text(textwrap.dedent(body), encoding="utf-8")


async def test_dotted_paths_and_entry_points_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http: aiohttp.ClientSession
) -> None:
    _write_module(
        tmp_path,
        "tl_team_tools",
        '''
        def shout(text: str) -> str:
            """Upper-case a text.

            Args:
                text: What to shout.
            """
            return text.upper()

        async def roll(sides: int) -> int:
            """Roll a die."""
            return sides
        ''',
    )
    dist = tmp_path / "tl_team_tools-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tl-team-tools\nVersion: 1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ndice = tl_team_tools:roll\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tl_team_tools", raising=False)

    assert [ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)] == ["dice"]
    registry = ToolRegistry.from_settings(
        settings(tmp_path, function_tools=["calculate", "tl_team_tools:shout", "dice"]), http
    )
    assert list(registry.functions) == ["dice", "calculate", "shout"]
    specs = {t["name"]: t for t in registry.tools_for(ToolContext())}
    assert specs["shout"]["parameters"]["properties"]["text"]["description"] == "What to shout."
    assert specs["dice"]["description"] == "Roll a die."
    calls = [ToolCall("a", "shout", '{"text": "hi"}'), ToolCall("b", "dice", '{"sides": 6}')]
    assert await registry.run(calls, ToolContext()) == ["HI", "6"]
    assert await registry.run(calls, ToolContext(disabled=frozenset({"dice"}))) == [
        "HI",
        "Error: there is no tool named 'dice' here.",
    ]


@pytest.mark.parametrize(
    ("names", "problem"),
    [
        (["get_wether"], "unknown tool 'get_wether'"),
        (["tl_nowhere_module:fn"], "cannot load the tool tl_nowhere_module:fn"),
        (["json:nope"], "cannot load the tool json:nope"),
        (["calculate", "bot.tools.calculator:calculate"], "two function tools are named 'calculate'"),
    ],
)
async def test_bad_function_tools_stop_the_start(
    tmp_path: Path, http: aiohttp.ClientSession, names: list[str], problem: str
) -> None:
    with pytest.raises(StartupError, match=problem):
        ToolRegistry.from_settings(settings(tmp_path, function_tools=names), http)


async def test_unknown_hosted_tools_are_warned_about(
    tmp_path: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    registry = ToolRegistry.from_settings(
        settings(tmp_path, tools=["web_search", "retrieval"], function_tools=[]), http
    )
    assert registry.tools_for(ToolContext()) == [{"type": "web_search"}]
    assert "unknown tool 'retrieval' in THREADLINE_TOOLS ignored" in caplog.text


# --- MCP servers ----------------------------------------------------------------------------------------------


async def test_mcp_servers_become_mcp_tools_with_their_secret_from_the_environment(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "THREADLINE_MCP_SERVERS",
        json.dumps(
            [
                {
                    "label": "wiki",
                    "url": "https://mcp.example/wiki",
                    "allowed_tools": ["ask"],
                    "authorization_env": "W",
                },
                {"label": "docs", "url": "https://mcp.example/docs", "header": "X-Key", "authorization_env": "D"},
            ]
        ),
    )
    with pytest.raises(StartupError, match=r"from \$W, which is not set"):
        ToolRegistry.from_settings(Settings(_env_file=None, function_tools=[], tools=[]), http)  # type: ignore[call-arg]
    monkeypatch.setenv("W", "Bearer wiki-secret")
    monkeypatch.setenv("D", "docs-secret")
    registry = ToolRegistry.from_settings(Settings(_env_file=None, function_tools=[], tools=[]), http)  # type: ignore[call-arg]
    assert registry.tools_for(ToolContext()) == [
        {
            "type": "mcp",
            "server_label": "wiki",
            "server_url": "https://mcp.example/wiki",
            "require_approval": "never",
            "allowed_tools": ["ask"],
            "headers": {"Authorization": "Bearer wiki-secret"},
        },
        {
            "type": "mcp",
            "server_label": "docs",
            "server_url": "https://mcp.example/docs",
            "require_approval": "never",
            "headers": {"X-Key": "docs-secret"},
        },
    ]
    assert [t["server_label"] for t in registry.tools_for(ToolContext(disabled=frozenset({"wiki"})))] == ["docs"]
    redacted = secret_values(Settings(_env_file=None))  # type: ignore[call-arg]
    assert "Bearer wiki-secret" in redacted and "docs-secret" in redacted, "the headers are kept out of the logs"


def test_mcp_server_entries_are_checked() -> None:
    for bad in ({"label": "has space", "url": "https://x"}, {"label": "ok", "url": "ftp://x"}, {"label": "ok"}):
        with pytest.raises(pydantic.ValidationError):
            McpServer.model_validate(bad)
    with pytest.raises(pydantic.ValidationError):
        Settings(_env_file=None, mcp_servers="[not json")  # type: ignore[call-arg]
    assert Settings(_env_file=None, mcp_servers="").mcp_servers == []  # type: ignore[call-arg]


# --- JSON answers -------------------------------------------------------------------------------------------


def test_json_prefix_and_formats(tmp_path: Path) -> None:
    assert split_answer_format("json: list three colours") == (JSON, "list three colours")
    assert split_answer_format("  JSON:give me data") == (JSON, "give me data")
    assert split_answer_format("what is json: a format?") == (TEXT, "what is json: a format?")
    assert json_text_format(None) == {"type": "json_object"}
    schema = tmp_path / "colour list.json"
    schema.write_text(json.dumps({"type": "object", "properties": {}, "additionalProperties": False}))
    assert json_text_format(schema) == {
        "type": "json_schema",
        "name": "colour_list",
        "schema": {"type": "object", "properties": {}, "additionalProperties": False},
        "strict": True,
    }
    (tmp_path / "bad.json").write_text("[1, 2")
    for bad in (tmp_path / "bad.json", tmp_path / "missing.json"):
        with pytest.raises(StartupError, match="THREADLINE_JSON_SCHEMA_FILE"):
            json_text_format(bad)


# --- the fake model's new items, checked against the SDK's event types ---------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    "strict": True,
}


def strict_events(reply: Reply, body: dict[str, Any]) -> list[dict[str, Any]]:
    events = [step for step in numbered(turn_events(plan_turn(body, reply, None))) if isinstance(step, dict)]
    for event in events:
        EVENT_MODELS[event["type"]].model_validate(json.loads(json.dumps(event)))
    return events


def _body(said: str, *tools: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-6.2-sol", "input": said, "tools": list(tools), **extra}


def test_fake_function_calls_mcp_calls_and_json_parse_as_the_sdk_types() -> None:
    events = strict_events(Reply(), _body("what's the weather in Paris and Tokyo?", WEATHER_TOOL))
    calls = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [(c["type"], json.loads(c["arguments"])) for c in calls] == [
        ("function_call", {"location": "Paris"}),
        ("function_call", {"location": "Tokyo"}),
    ]
    assert len({c["call_id"] for c in calls}) == 2
    assert not [e for e in events if e["type"].startswith("response.output_text")], "no text with the calls"
    neutral = [n for e in events for n in decode(e)]
    assert [n.name for n in neutral if isinstance(n, ToolCall)] == ["get_weather", "get_weather"]
    assert [n.title for n in neutral if isinstance(n, Step)] == ["Calling get_weather"] * 2, "started, not done"

    assert not [e for e in strict_events(Reply(), _body("what's the weather in Paris?")) if "function" in e["type"]], (
        "no call to a tool the request does not offer"
    )

    mcp = {"type": "mcp", "server_label": "wiki", "server_url": "https://mcp.example", "require_approval": "never"}
    events = strict_events(Reply(), _body("ask wiki about threads", mcp))
    items = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [i["type"] for i in items] == ["mcp_list_tools", "mcp_call", "message"]
    neutral = [n for e in events for n in decode(e)]
    assert [(n.title, n.done) for n in neutral if isinstance(n, Step)] == [
        ("Listing the tools of wiki", False),
        ("Listing the tools of wiki", True),
        ("Calling search on wiki", False),
        ("Calling search on wiki", True),
    ]

    events = strict_events(Reply(), _body("json please", text={"format": {"type": "json_object"}}))
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert json.loads(text) == {"answer": "You said: «json please»."}
