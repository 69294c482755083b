"""Local and OpenAI-compatible models end to end: the runtime (router, local engine, store history) against the fake
OpenAI's ``/v1/chat/completions`` acting as a "local" provider, with no OpenAI key."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.runtime import Runtime, open_runtime
from bot.types import AttachmentKind, IncomingMessage, ThreadKey, TurnKind
from tests.fakes import media
from tests.fakes.chat_completions import ChatReply
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import make_settings, spawn_threadline, user_env
from tests.test_engine_e2e import bytes_attachment, turn

RuntimeFactory = Callable[..., Any]


def local(base_url: str, **extra: Any) -> dict[str, Any]:
    return {"local": {"base_url": base_url, "api_key": "local-key", "api": "chat", **extra}}


@pytest.fixture
async def runtime_for(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[RuntimeFactory]:
    opened: list[Any] = []

    async def build(provider: dict[str, Any] | None = None, **overrides: Any) -> Runtime:
        values: dict[str, Any] = {
            "openai_api_key": "",
            "openai_base_url": None,
            "model": "local/llama3",
            "providers": local(fake_openai.base_url, **(provider or {})),
            "function_tools": [],
        }
        values.update(overrides)
        cm = open_runtime(make_settings(tmp_path, **values))
        opened.append(cm)
        return await cm.__aenter__()

    yield build
    while opened:
        await opened.pop().__aexit__(None, None, None)


def msg(text: str, thread: str = "t1", channel: str = "C1", **kw: Any) -> IncomingMessage:
    return IncomingMessage(key=ThreadKey("test", "W1", channel, thread), user_id="U1", text=text, **kw)


def chat_bodies(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r.json for r in fake.requests if r.path == "/v1/chat/completions" and isinstance(r.json, dict)]


async def test_history_is_sent_kept_across_a_restart_and_usage_recorded(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_for()
    first = await turn(rt, msg("hi"))
    assert first.failed is None and first.finished and "You said: «hi»" in first.text
    await rt.router.close()
    rt = await runtime_for()  # a second runtime on the same database: a restart
    second = await turn(rt, msg("what did I say?"))
    assert "Before that you said: «hi»" in second.text, "the history came from the store after the restart"
    body = chat_bodies(fake_openai)[-1]
    assert body["model"] == "llama3" and body["stream"] is True
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][2]["content"] == first.text
    assert not any(r.path.startswith("/v1/conversations") or r.path == "/v1/responses" for r in fake_openai.requests)
    rows = await rt.store.usage_rows()
    assert [row.model for row in rows] == ["local/llama3", "local/llama3"] and rows[0].input_tokens > 0
    assert fake_openai.violations == []


async def test_history_is_trimmed_to_the_budget_and_the_user_told_once(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    fake_openai.models.append("llama3")
    fake_openai.context_lengths["llama3"] = 600  # the server's /v1/models gives the budget
    rt = await runtime_for()
    long = "word " * 150  # ~190 tokens a turn with its answer
    replies = [await turn(rt, msg(f"{n}: {long}")) for n in range(4)]
    assert all(r.failed is None for r in replies)
    notes = [r for r in replies if "no longer fits" in r.text]
    assert len(notes) == 1, "told once when earlier context was dropped"
    last = chat_bodies(fake_openai)[-1]["messages"]
    sent = sum(len(json.dumps(m)) for m in last) // 4
    assert sent < 600 and last[-1]["content"].startswith("3:")
    assert not any(str(m.get("content", "")).startswith("0:") for m in last), "the oldest turn was dropped"
    kept = await rt.store.history(ThreadKey("test", "W1", "C1", "t1"))
    assert not any(e.message.startswith('{"role": "user", "content": "0:') for e in kept)


async def test_dropped_turns_are_summarised_once_when_asked(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_for({"context_tokens": 600}, local_summarize=True)
    long = "word " * 150
    for n in range(2):
        fake_openai.chat.script(ChatReply(text=f"answer {n}"))
    for n in range(2):
        await turn(rt, msg(f"{n}: {long}"))
    fake_openai.chat.script(ChatReply(text="They counted words."), ChatReply(text="answer 2"))
    third = await turn(rt, msg(f"2: {long}"))
    assert "summarised its oldest messages" in third.text
    summary_body, answer_body = chat_bodies(fake_openai)[-2:]
    assert summary_body.get("stream") is not True and "0:" in summary_body["messages"][1]["content"]
    assert "Earlier in this conversation: They counted words." in answer_body["messages"][0]["content"]


async def test_tools_round_trip_in_parallel(runtime_for: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await runtime_for(function_tools=["calculate", "current_time"])
    fake_openai.chat.script(ChatReply(tool_calls=(("calculate", {"expression": "6*7"}), ("current_time", {}))))
    reply = await turn(rt, msg("what is 6*7 and the time?"))
    assert reply.failed is None and "Tool results: 42" in reply.text
    first, second = chat_bodies(fake_openai)
    assert {t["function"]["name"] for t in first["tools"]} == {"calculate", "current_time"}
    assistant, *tools = second["messages"][-3:]
    assert [c["function"]["name"] for c in assistant["tool_calls"]] == ["calculate", "current_time"]
    assert [t["role"] for t in tools] == ["tool", "tool"] and tools[0]["content"] == "42"
    assert [s.done for s in reply.steps] == [False, False, True, True]
    follow = await turn(rt, msg("and again?"))
    roles = [m["role"] for m in chat_bodies(fake_openai)[-1]["messages"]]
    assert follow.failed is None and roles == ["system", "user", "assistant", "tool", "tool", "assistant", "user"]


async def test_a_vision_less_provider_refuses_an_image_and_one_with_vision_gets_a_data_url(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    image = bytes_attachment(AttachmentKind.IMAGE, "image/png", "cat.png", media.png())
    rt = await runtime_for()
    refused = await turn(rt, msg("what is this?", attachments=(image,)))
    assert refused.failed is not None and "can't see images" in refused.failed and "local" in refused.failed
    assert chat_bodies(fake_openai) == []
    await rt.router.close()
    rt = await runtime_for({"vision": True}, database=tmp_path / "vision.db")
    seen = await turn(rt, msg("what is this?", attachments=(image,)))
    assert seen.failed is None and "You attached 1 file" in seen.text
    part = chat_bodies(fake_openai)[-1]["messages"][-1]["content"][1]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,")


async def test_openai_only_features_are_refused_naming_the_provider(runtime_for: RuntimeFactory) -> None:
    rt = await runtime_for()
    voice = bytes_attachment(AttachmentKind.VOICE, "audio/ogg", "note.ogg", b"OggS" + b"\0" * 100)
    refused = await turn(rt, msg("", attachments=(voice,)))
    assert refused.failed is not None and "needs OpenAI" in refused.failed and "local" in refused.failed
    drawn = await turn(rt, msg("a red bicycle", kind=TurnKind.IMAGINE))
    assert drawn.failed is not None and "Drawing images needs OpenAI" in drawn.failed


async def test_a_provider_that_is_down_gives_a_short_error_naming_it(runtime_for: RuntimeFactory) -> None:
    rt = await runtime_for(providers=local("http://127.0.0.1:9/v1"))
    reply = await turn(rt, msg("hi"))
    assert reply.failed is not None and "couldn't reach the model server local" in reply.failed
    assert len(reply.failed) < 200 and await rt.store.history(ThreadKey("test", "W1", "C1", "t1")) == []


async def test_a_server_error_is_named_and_the_history_untouched(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_for()
    fake_openai.chat.script(ChatReply(status=500, error_message="model crashed"))
    reply = await turn(rt, msg("hi"))
    assert reply.failed is not None and "local" in reply.failed and "model crashed" in reply.failed


async def test_model_switches_one_channel_only_and_reset_forgets_the_history(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_for(openai_api_key="sk-test", openai_base_url=fake_openai.base_url, model="gpt-6.2-sol")
    key = ThreadKey("test", "W1", "C1", "t1")
    answer = await rt.commands.run("model local/llama3", key=key, user_id="U1")
    assert "local/llama3" in answer
    assert "`local/llama3` (on local" in await rt.commands.run("model", key=key, user_id="U1")
    await turn(rt, msg("hi", channel="C1"))
    await turn(rt, msg("hi", channel="C2"))
    assert len(chat_bodies(fake_openai)) == 1, "only C1 went to the local provider"
    assert len([r for r in fake_openai.requests if r.path == "/v1/responses"]) == 1, "C2 stayed on OpenAI"
    assert len(await rt.store.history(key)) == 2
    await rt.commands.run("reset", key=key, user_id="U1")
    assert await rt.store.history(key) == []


async def test_seed_and_temperature_of_a_channel_are_sent_and_stated(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    from bot.channel_settings import KEYS, Choices

    rt = await runtime_for()
    choices = Choices(rt.settings)
    assert KEYS["seed"].parse("42", choices) == "42" and KEYS["temperature"].parse("0.20", choices) == "0.2"
    for name, bad in (("seed", "x"), ("temperature", "3")):
        with pytest.raises(ValueError):
            KEYS[name].parse(bad, choices)
    await rt.store.set_channel_setting("test", "C1", "seed", "42", set_by="test:admin")
    await rt.store.set_channel_setting("test", "C1", "temperature", "0.2", set_by="test:admin")
    await rt.store.set_channel_setting("test", "C1", "instructions", "Talk like a pirate.", set_by="test:admin")
    await turn(rt, msg("hi"))
    await turn(rt, msg("hi", channel="C2"))
    c1, c2 = chat_bodies(fake_openai)
    assert (c1["seed"], c1["temperature"]) == (42, 0.2) and "seed" not in c2 and "temperature" not in c2
    assert c1["messages"][0]["content"].endswith("Talk like a pirate."), "the channel's persona reaches local turns"
    assert "pirate" not in c2["messages"][0]["content"]
    shown = await rt.commands.run("model", key=ThreadKey("test", "W1", "C1", "t1"), user_id="U1")
    assert shown == "This channel uses `local/llama3` (on local; seed 42, temperature 0.2)."


async def _threadline(tmp_path: Path, env: dict[str, str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    proc = await spawn_threadline(tmp_path, env, *args)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _local_env(tmp_path: Path, base_url: str) -> dict[str, str]:
    """A `threadline` process with no OpenAI key: threadline.toml names the fake as the "local" provider."""
    config = tmp_path / "threadline.toml"
    config.write_text(
        f'model = "local/llama3"\n\n[providers.local]\nbase_url = "{base_url}"\napi_key_env = "LOCAL_KEY"\n'
        'api = "chat"\nvision = false\ntools = true\n',
        encoding="utf-8",
    )
    env = user_env(tmp_path, base_url, THREADLINE_DATABASE=str(tmp_path / "db" / "threadline.db"))
    del env["OPENAI_API_KEY"], env["OPENAI_BASE_URL"]
    env.update({"THREADLINE_CONFIG": str(config), "LOCAL_KEY": "local-key"})
    return env


async def test_console_with_no_openai_key_answers_from_history_across_a_restart(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    env = _local_env(tmp_path, fake_openai.base_url)
    code, out, err = await _threadline(tmp_path, env, "run", stdin="hi\nwhat did I say?\n")
    assert code == 0, err
    answers = [line for line in out.splitlines() if line.startswith("threadline> ")]
    assert len(answers) == 2 and "Before that you said: «hi»" in answers[1], out
    code, out, err = await _threadline(tmp_path, env, "run", stdin="and now?\n")
    assert code == 0, err
    assert "Before that you said: «what did I say?»" in out, "the history is still there after a restart"
    assert [b["model"] for b in chat_bodies(fake_openai)] == ["llama3"] * 3
    assert len(chat_bodies(fake_openai)[-1]["messages"]) == 6, "system, two earlier turns, the new message"
    assert not any(r.path in {"/v1/responses", "/v1/conversations"} for r in fake_openai.requests)


async def test_doctor_checks_each_provider_its_models_and_tools(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    env = _local_env(tmp_path, fake_openai.base_url)
    code, out, err = await _threadline(tmp_path, env, "doctor")
    assert code == 1 and "local/llama3 (THREADLINE_MODEL) is not listed by local" in out, out + err
    fake_openai.models.append("llama3")
    code, out, err = await _threadline(tmp_path, env, "doctor")
    assert code == 0, out + err
    assert f"provider local at {fake_openai.base_url} (chat)" in out and "OPENAI_API_KEY is not set" in out
    assert "local/llama3 (THREADLINE_MODEL) is listed by local" in out
    assert "provider local accepts function tools" in out
    probe = chat_bodies(fake_openai)[-1]
    assert probe["tools"][0]["function"]["name"] == "threadline_probe"


async def test_a_stateless_responses_provider_gets_the_history_as_input(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_for({"api": "responses"}, function_tools=["calculate"])
    await turn(rt, msg("hi"))
    second = await turn(rt, msg("what did I say?"))
    assert second.failed is None and "Before that you said: «hi»" in second.text
    bodies = [r.json for r in fake_openai.requests if r.path == "/v1/responses" and isinstance(r.json, dict)]
    body = bodies[-1]
    assert body["store"] is False and "conversation" not in body and body["model"] == "llama3"
    assert [item["role"] for item in body["input"]] == ["user", "assistant", "user"]
    assert body["tools"][0]["name"] == "calculate" and fake_openai.conversations == {}


async def test_an_openai_style_provider_runs_conversations_without_its_prefix(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    other = {"other": {"base_url": fake_openai.base_url, "api_key": "other-key", "api": "openai"}}
    rt = await runtime_for(providers=other, model="other/gpt-6.2-sol")
    await turn(rt, msg("hi"))
    reply = await turn(rt, msg("what did I say?"))
    assert reply.failed is None and "Before that you said: «hi»" in reply.text
    bodies = [r for r in fake_openai.requests if r.path == "/v1/responses"]
    assert [r.json["model"] for r in bodies if isinstance(r.json, dict)] == ["gpt-6.2-sol"] * 2
    assert all(r.headers.get("Authorization") == "Bearer other-key" for r in bodies)
    assert chat_bodies(fake_openai) == [] and len(fake_openai.conversations) == 1


async def test_a_voice_note_is_transcribed_by_openai_and_answered_locally_when_allowed(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_for(
        openai_api_key="sk-test", openai_base_url=fake_openai.base_url, local_openai_transcription=True
    )
    voice = bytes_attachment(AttachmentKind.VOICE, "audio/ogg", "note.ogg", media.ogg_opus_voice(1.0))
    reply = await turn(rt, msg("", attachments=(voice,)))
    assert reply.failed is None and reply.finished
    assert [r.path for r in fake_openai.requests if r.path.startswith("/v1/audio/")] == ["/v1/audio/transcriptions"]
    (body,) = chat_bodies(fake_openai)
    assert fake_openai.transcript in str(body["messages"][-1]["content"]), "the local model gets the transcript"
    assert not [r for r in fake_openai.requests if r.path in {"/v1/responses", "/v1/conversations"}]
