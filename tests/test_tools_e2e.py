"""Function tools, MCP servers and JSON answers end to end: the console (a real `threadline` process) and the core
against the fake OpenAI, and the built-in weather tool against a fake Open-Meteo, all on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from bot.runtime import Runtime, open_runtime
from bot.settings import McpServer
from bot.types import IncomingMessage, ThreadKey
from tests.fakes.open_meteo import FakeOpenMeteo
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.helpers import RecordingReply, make_settings, spawn_threadline, user_env

KEY = ThreadKey("test", "W1", "C1", "t1")
WEATHER_QUESTION = "what's the weather in Paris and Tokyo?"
WEATHER_PARAMS = {
    "type": "object",
    "properties": {"location": {"type": "string"}},
    "required": ["location"],
    "additionalProperties": False,
}


@pytest.fixture
async def meteo() -> AsyncIterator[FakeOpenMeteo]:
    fake = await FakeOpenMeteo(gather=2).start()
    yield fake
    await fake.close()


@pytest.fixture
async def runtime_for(
    tmp_path: Path, fake_openai: FakeOpenAI, meteo: FakeOpenMeteo
) -> AsyncIterator[Callable[..., Any]]:
    opened: list[Any] = []

    async def build(**overrides: Any) -> Runtime:
        values = {"open_meteo_url": meteo.base_url, "open_meteo_geocoding_url": meteo.base_url, **overrides}
        cm = open_runtime(make_settings(tmp_path, fake_openai.base_url, **values))
        opened.append(cm)
        return await cm.__aenter__()

    yield build
    for cm in reversed(opened):
        await cm.__aexit__(None, None, None)


async def ask(rt: Runtime, text: str, reply: RecordingReply | None = None, **kw: Any) -> RecordingReply:
    reply = reply or RecordingReply()
    submission = await rt.gateway.submit(IncomingMessage(key=KEY, user_id="U1", text=text, **kw), reply)
    assert submission.done is not None
    await submission.done
    return reply


def bodies(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r.json for r in fake.requests if r.path == "/v1/responses"]


def calls_made(fake: FakeOpenAI) -> list[list[dict[str, Any]]]:
    """The function_call items of each response, in order."""
    return [[i for i in t.output if i["type"] == "function_call"] for t in fake.responses_by_id.values()]


def outputs_sent(body: dict[str, Any]) -> dict[str, str]:
    return {i["call_id"]: i["output"] for i in body["input"] if i.get("type") == "function_call_output"}


async def threadline(tmp_path: Path, env: dict[str, str], stdin: str, *args: str) -> tuple[int, str, str]:
    proc = await spawn_threadline(tmp_path, env, *(args or ("run",)))
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def console_env(tmp_path: Path, fake: FakeOpenAI, meteo: FakeOpenMeteo, **extra: str) -> dict[str, str]:
    return user_env(
        tmp_path,
        fake.base_url,
        THREADLINE_DATABASE=str(tmp_path / "db" / "threadline.db"),
        THREADLINE_OPEN_METEO_URL=meteo.base_url,
        THREADLINE_OPEN_METEO_GEOCODING_URL=meteo.base_url,
        **extra,
    )


# --- the console, as a new user tries it --------------------------------------------------------------------


async def test_console_weather_in_paris_and_tokyo_is_two_parallel_calls_answered_by_call_id(
    tmp_path: Path, fake_openai: FakeOpenAI, meteo: FakeOpenMeteo
) -> None:
    code, out, err = await threadline(tmp_path, console_env(tmp_path, fake_openai, meteo), f"{WEATHER_QUESTION}\n")
    assert code == 0, err

    first, second = bodies(fake_openai)
    offered = {t["name"]: t for t in first["tools"] if t["type"] == "function"}
    assert set(offered) == {"current_time", "calculate", "get_weather"}, "the built-ins are on by default"
    weather = offered["get_weather"]
    assert weather["strict"] is True and weather["parameters"]["additionalProperties"] is False
    assert weather["parameters"]["required"] == ["location"]

    (calls, _answer) = calls_made(fake_openai)
    assert [json.loads(c["arguments"]) for c in calls] == [{"location": "Paris"}, {"location": "Tokyo"}], (
        "both calls come in one response"
    )
    assert second["conversation"] == first["conversation"], "the outputs go back on the same conversation"
    sent = outputs_sent(second)
    assert list(sent) == [c["call_id"] for c in calls], "every call answered, by its own call id"
    paris, tokyo = (json.loads(sent[c["call_id"]]) for c in calls)
    assert paris["place"].startswith("Paris") and paris["temperature_c"] == 11.4 and paris["conditions"] == "overcast"
    assert tokyo["place"].startswith("Tokyo") and tokyo["temperature_c"] == 18.2 and tokyo["conditions"] == "clear sky"
    assert meteo.forecasts == 2, "each forecast waited for the other: the calls ran at the same time"

    (answer,) = [line for line in out.splitlines() if line.startswith("threadline> ")]
    assert all(c["call_id"] in answer for c in calls) and '"temperature_c": 18.2' in answer


async def test_console_json_answers_are_json_code_blocks(
    tmp_path: Path, fake_openai: FakeOpenAI, meteo: FakeOpenMeteo
) -> None:
    env = console_env(tmp_path, fake_openai, meteo)
    code, out, err = await threadline(tmp_path, env, "json: list three colours\nand in words?\n")
    assert code == 0, err
    as_json, as_text = bodies(fake_openai)
    assert as_json["text"] == {"format": {"type": "json_object"}} and "JSON" in as_json["instructions"]
    assert as_json["input"][0]["content"][0]["text"] == "list three colours", "the prefix is not sent"
    assert "text" not in as_text, "the next message is plain text again"
    block = out.split("threadline> ", 2)[1]
    assert block.startswith("```json\n") and block.rstrip().endswith("```")
    assert json.loads(block.strip().removeprefix("```json").removesuffix("```")) == {
        "answer": "You said: «list three colours»."
    }

    schema = {
        "type": "object",
        "properties": {"colours": {"type": "array", "items": {"type": "string"}}, "count": {"type": "integer"}},
        "required": ["colours", "count"],
        "additionalProperties": False,
    }
    (tmp_path / "colours.json").write_text(json.dumps(schema))
    env["THREADLINE_JSON_SCHEMA_FILE"] = str(tmp_path / "colours.json")
    code, out, err = await threadline(tmp_path, env, "/new\njson: list three colours\n")
    assert code == 0, err
    body = bodies(fake_openai)[-1]
    assert body["text"] == {"format": {"type": "json_schema", "name": "colours", "schema": schema, "strict": True}}
    block = out.split("threadline> ", 1)[1].strip()
    assert json.loads(block.removeprefix("```json").removesuffix("```")) == {
        "colours": ["You said: «list three colours»."],
        "count": 1,
    }


async def test_a_function_tool_that_cannot_load_stops_the_start_with_its_name(
    tmp_path: Path, fake_openai: FakeOpenAI, meteo: FakeOpenMeteo
) -> None:
    env = console_env(tmp_path, fake_openai, meteo, THREADLINE_FUNCTION_TOOLS="calculate,get_wether")
    code, out, err = await threadline(tmp_path, env, "hello\n")
    assert code == 1 and "unknown tool 'get_wether'" in err and "Traceback" not in err
    assert not bodies(fake_openai)
    code, out, _ = await threadline(tmp_path, env, "", "doctor")
    assert code == 1 and "✗ THREADLINE_FUNCTION_TOOLS: unknown tool 'get_wether'" in out


# --- the turn loop ------------------------------------------------------------------------------------------


async def test_tool_calls_show_as_steps_and_every_round_records_usage(
    runtime_for: Callable[..., Any], fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_for()
    reply = await ask(rt, WEATHER_QUESTION)
    assert reply.failed is None and reply.finished and reply.text.startswith("Tool results: [call_")
    steps = [(s.title, s.done) for s in reply.steps]
    assert steps == [("Calling get_weather", False)] * 2 + [("Calling get_weather", True)] * 2
    assert reply.steps[0].id != reply.steps[1].id and {s.id for s in reply.steps[2:]} == {s.id for s in reply.steps[:2]}
    assert "calling get_weather…" in reply.statuses
    rows = await rt.store.usage_rows()
    assert len(rows) == 2, "one usage row per response of the turn"
    first, second = (t.usage for t in fake_openai.responses_by_id.values())
    assert sorted(r.output_tokens for r in rows) == sorted([first["output_tokens"], second["output_tokens"]])


async def test_tool_errors_go_back_to_the_model_as_text(
    runtime_for: Callable[..., Any], fake_openai: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "tl_failing_tools.py").write_text(
        textwrap.dedent(
            '''
            def explode(reason: str) -> str:
                """Always fails."""
                raise ValueError(reason)
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rt = await runtime_for(function_tools=["current_time", "calculate", "tl_failing_tools:explode"])
    scripted = (
        ("explode", {"reason": "no fuel"}),
        ("current_time", {"timezone": "Mars/Olympus"}),
        ("calculate", {"expression": "9 ** 9 ** 9"}),
        ("calculate", {"expression": "__import__('os').getcwd()"}),
        ("current_time", {"timezone": "Asia/Tokyo"}),
    )
    fake_openai.script(Reply(function_calls=scripted))
    reply = await ask(rt, "try your tools")
    assert reply.failed is None and reply.finished
    (calls, _) = calls_made(fake_openai)
    sent = list(outputs_sent(bodies(fake_openai)[1]).values())
    assert sent[0] == "Error: explode failed: ValueError: no fuel"
    assert sent[1].startswith("Error: unknown time zone 'Mars/Olympus'")
    assert sent[2].startswith("Error: the exponent") and "too large" in sent[2]
    assert sent[3].startswith("Error: only these functions can be called")
    assert json.loads(sent[4])["timezone"] == "Asia/Tokyo"
    assert all(c["call_id"] in reply.text for c in calls)


async def test_a_hanging_tool_is_cut_at_its_timeout(
    runtime_for: Callable[..., Any], fake_openai: FakeOpenAI, meteo: FakeOpenMeteo
) -> None:
    meteo.hang = True
    rt = await runtime_for(tool_timeout_secs=0.3)
    reply = await ask(rt, WEATHER_QUESTION)
    assert reply.failed is None and reply.finished
    sent = outputs_sent(bodies(fake_openai)[1])
    assert list(sent.values()) == ["Error: get_weather did not answer within 0.3 seconds."] * 2
    assert "did not answer within 0.3 seconds" in reply.text


async def test_the_round_cap_ends_the_turn_with_a_clear_line_and_the_thread_goes_on(
    runtime_for: Callable[..., Any], fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_for(tool_rounds=2)
    again = Reply(function_calls=(("calculate", {"expression": "1 + 1"}),))
    fake_openai.script(again, again, again, Reply(text="Fine, here is the answer."))
    reply = await ask(rt, "keep calculating")
    assert reply.failed is None
    assert reply.text.endswith("_(I stopped after 2 rounds of tool calls without a final answer. Ask again to go on.)_")
    assert len(bodies(fake_openai)) == 3, "the first response and two rounds of outputs"
    (stored,) = [r.json for r in fake_openai.requests if r.path.endswith("/items") and r.method == "POST"]
    (last_call,) = calls_made(fake_openai)[-1]
    assert stored["items"] == [
        {
            "type": "function_call_output",
            "call_id": last_call["call_id"],
            "output": "Not run: this answer reached its limit of 2 rounds of tool calls.",
        }
    ], "the unanswered call gets an output, so the conversation takes the next message"
    assert reply.steps[-1].done

    after = await ask(rt, "and now?")
    assert after.failed is None and after.text == "Fine, here is the answer."


async def test_a_stop_while_tools_run_settles_their_calls(
    runtime_for: Callable[..., Any], fake_openai: FakeOpenAI, meteo: FakeOpenMeteo
) -> None:
    meteo.hang = True
    rt = await runtime_for(tool_timeout_secs=60)
    reply = RecordingReply()
    submission = await rt.gateway.submit(IncomingMessage(key=KEY, user_id="U1", text=WEATHER_QUESTION), reply)
    async with asyncio.timeout(10):
        while meteo.forecasts < 2:  # noqa: ASYNC110  # both calls are running
            await asyncio.sleep(0.01)
    assert await rt.gateway.stop(KEY)
    assert submission.done is not None
    await asyncio.wait_for(submission.done, 5)
    assert reply.finished and reply.failed is None and reply.text == "_(stopped)_"
    (stored,) = [r.json for r in fake_openai.requests if r.path.endswith("/items") and r.method == "POST"]
    assert [i["output"] for i in stored["items"]] == ["Not run: the user stopped the answer."] * 2
    assert len(await rt.store.usage_rows()) == 1, "the finished response's usage, once"

    fake_openai.script(Reply(text="Still here."))
    after = await ask(rt, "hello?")
    assert after.failed is None and after.text == "Still here."


async def test_with_no_tools_configured_the_request_offers_none(
    runtime_for: Callable[..., Any], fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_for(function_tools=[])
    reply = await ask(rt, WEATHER_QUESTION)
    assert reply.failed is None and reply.text.startswith("You said:"), "no tools: the model answers in words"
    assert "tools" not in bodies(fake_openai)[0]


# --- MCP servers ----------------------------------------------------------------------------------------------


async def test_mcp_servers_are_sent_as_mcp_tools_and_their_calls_show_as_steps(
    runtime_for: Callable[..., Any], fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TL_WIKI_TOKEN", "Bearer wiki-s3cret")
    server = McpServer(
        label="wiki", url="https://mcp.example/wiki", allowed_tools=["ask_question"], authorization_env="TL_WIKI_TOKEN"
    )
    rt = await runtime_for(mcp_servers=[server], function_tools=[])
    reply = await ask(rt, "ask wiki how threads work")
    (body,) = bodies(fake_openai)
    assert body["tools"] == [
        {
            "type": "mcp",
            "server_label": "wiki",
            "server_url": "https://mcp.example/wiki",
            "require_approval": "never",
            "allowed_tools": ["ask_question"],
            "headers": {"Authorization": "Bearer wiki-s3cret"},
        }
    ]
    assert [(s.title, s.done) for s in reply.steps] == [
        ("Listing the tools of wiki", False),
        ("Listing the tools of wiki", True),
        ("Calling ask_question on wiki", False),
        ("Calling ask_question on wiki", True),
    ]
    assert "The wiki tool ask_question answered: «wiki found 3 results" in reply.text

    await ask(rt, "ask wiki again")
    second = list(fake_openai.responses_by_id.values())[1]
    assert [i["type"] for i in second.output] == ["mcp_call", "message"], "the tools are listed once per conversation"


# --- the fake holds the client to the function-call protocol ------------------------------------------------


async def test_the_fake_refuses_outputs_for_calls_it_never_made_and_messages_past_unanswered_calls() -> None:
    fake = FakeOpenAI()
    client = openai.AsyncOpenAI(base_url=await fake.start(), api_key="test", max_retries=0)
    try:
        conv = await client.conversations.create()
        tool = {"type": "function", "name": "get_weather", "parameters": WEATHER_PARAMS, "strict": True}
        made_up = {"type": "function_call_output", "call_id": "call_made_up", "output": "sunny"}
        with pytest.raises(openai.BadRequestError, match="No tool call found for function call output"):
            await client.responses.create(model="gpt-6.2-sol", conversation=conv.id, input=[made_up])  # type: ignore[list-item]

        asked = await client.responses.create(
            model="gpt-6.2-sol",
            conversation=conv.id,
            input=WEATHER_QUESTION,
            tools=[tool],  # type: ignore[list-item]
        )
        call_ids = [item.call_id for item in asked.output if item.type == "function_call"]
        assert len(call_ids) == 2
        with pytest.raises(openai.BadRequestError, match=f"No tool output found for function call {call_ids[0]}"):
            await client.responses.create(model="gpt-6.2-sol", conversation=conv.id, input="never mind")
        outputs = [
            {"type": "function_call_output", "call_id": c, "output": f"weather {n}"} for n, c in enumerate(call_ids)
        ]
        answered = await client.responses.create(model="gpt-6.2-sol", conversation=conv.id, input=outputs)  # type: ignore[arg-type]
        assert (
            answered.output_text
            == f"Tool results: [{call_ids[0]}] get_weather → weather 0 | [{call_ids[1]}] get_weather → weather 1"
        )
        with pytest.raises(openai.BadRequestError, match="No tool call found"):
            await client.conversations.items.create(conv.id, items=outputs[:1])  # type: ignore[list-item]
        assert len(fake.violations) == 3
    finally:
        await client.close()
        await fake.close()
