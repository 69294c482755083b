"""Per-channel settings end to end: an admin's ``channel set`` changes the next turn's request in that channel only
(instructions, tools, MCP servers, model, knowledge base) and its spoken replies; ``channel show`` and ``channel
reset``; bad input gets a line saying what is accepted; non-admins change nothing; a restart keeps everything. Slack
through the fake Slack, the console through a real ``threadline run``, the core through its gateway."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.channel_settings import BAD_MODEL, CHANNEL_INSTRUCTIONS, KEYS, MAX_INSTRUCTIONS_CHARS
from bot.replies import TextReply
from bot.runtime import Runtime, open_runtime
from bot.settings import McpServer
from bot.types import IncomingMessage, PartKind, ThreadKey
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.slack_server import FakeSlack
from tests.helpers import AuditLines, RecordingReply, make_settings, spawn_threadline, user_env
from tests.test_access_admin_e2e import slash
from tests.test_retrieval_e2e import POLICY, attachment, pdf_bytes, searched
from tests.test_slack_e2e import CHANNEL, SlackBot, SlackHarness, responses

ADMIN, BOB = "U0ADMIN", "U0BOB"
OTHER = "C0RANDOM"
PIRATE = "Talk like a pirate: every answer starts with Arr!"
DEFAULT_INSTRUCTIONS = make_settings(Path("."), "http://127.0.0.1:9/v1").instructions
WITH_PIRATE = f"{DEFAULT_INSTRUCTIONS}\n\n{CHANNEL_INSTRUCTIONS}\n{PIRATE}"
KEY_LIST = f"Keys: {', '.join(KEYS)}."  # other keys join the table (bot/channel_settings.py)


def tool_names(body: dict[str, Any]) -> list[str]:
    """The tools a request offers, by name (hosted tools by type, functions by name, MCP servers by label)."""
    return [str(t.get("name") or t.get("server_label") or t["type"]) for t in body.get("tools") or []]


# --- Slack --------------------------------------------------------------------------------------------------------


@pytest.fixture
async def slack(tmp_path: Path, fake_slack: FakeSlack, fake_openai: FakeOpenAI) -> AsyncIterator[SlackHarness]:
    harness = SlackHarness(tmp_path, fake_slack, fake_openai)
    yield harness
    await harness.close()


async def mention(bot: SlackBot, fake: FakeOpenAI, text: str, *, channel: str = CHANNEL) -> dict[str, Any]:
    """A mention in ``channel``, answered; returns the request it made."""
    before = len(responses(fake))
    event = bot.fake.user_event(f"<@{bot.fake.bot_user_id}> {text}", kind="app_mention", channel=channel)
    await bot.send(event)
    await bot.answered(channel, event["ts"])
    bodies = responses(fake)
    assert len(bodies) == before + 1
    return bodies[-1]


async def test_an_admins_pirate_persona_is_in_the_next_request_of_its_channel_only_and_survives_a_restart(
    slack: SlackHarness, fake_openai: FakeOpenAI, audit: AuditLines, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    options = {"admins": [f"slack:{ADMIN}"]}
    bot = await slack.start(**options)
    assert (await mention(bot, fake_openai, "hello"))["instructions"] == DEFAULT_INSTRUCTIONS

    said = await slash(bot, f"channel set instructions {PIRATE}", user=ADMIN)
    assert said == (
        f"This channel's instructions are set ({len(PIRATE)} characters): every new turn here gets them after the "
        "default instructions."
    )
    assert (await mention(bot, fake_openai, "hello again"))["instructions"] == WITH_PIRATE, "the next turn has it"
    elsewhere = await mention(bot, fake_openai, "hello", channel=OTHER)
    assert elsewhere["instructions"] == DEFAULT_INSTRUCTIONS, "another channel's request does not"
    await bot.stop()

    bot = await slack.start(**options)
    after = await mention(bot, fake_openai, "after the restart")
    assert after["instructions"] == WITH_PIRATE, "stored: it survives a restart"
    shown = await slash(bot, "channel show", user=ADMIN)
    assert f"• instructions: “{PIRATE}” (this channel, set by slack:{ADMIN})" in shown

    (command, show) = audit.of("admin_command")
    assert (command.actor, command.command, command.arguments) == (f"slack:{ADMIN}", "channel", ["set", "instructions"])
    assert show.arguments == ["show"]
    logged = [
        r.getMessage() + str(getattr(r, "arguments", "")) for r in caplog.records if r.name.startswith("threadline")
    ]
    assert logged and not [line for line in logged if "pirate" in line.lower()], "the persona is never logged"


async def test_a_non_admins_channel_commands_are_refused_and_change_nothing(
    slack: SlackHarness, fake_openai: FakeOpenAI, audit: AuditLines
) -> None:
    bot = await slack.start(admins=[f"slack:{ADMIN}"])
    for line in (f"channel set instructions {PIRATE}", "channel set tools none", "channel reset", "channel show"):
        assert await slash(bot, line, user=BOB) == "Sorry, `channel` is for admins only."
    assert await bot.runtime.store.channel_settings("slack", CHANNEL) == []
    assert (await mention(bot, fake_openai, "hello"))["instructions"] == DEFAULT_INSTRUCTIONS
    refused = audit.of("admin_refused")
    assert [(r.actor, r.command) for r in refused] == [(f"slack:{BOB}", "channel")] * 4
    assert all(not hasattr(r, "arguments") for r in refused), "a non-admin's arguments are not logged"


# --- the core, through its gateway --------------------------------------------------------------------------------

HERE = ThreadKey("slack", "T1", "C1", "1.0")
CHANNEL_LEVEL = ThreadKey("slack", "T1", "C1", "")  # where a Slack slash command lands
ELSEWHERE = ThreadKey("slack", "T1", "C2", "2.0")
WIKI = McpServer(label="wiki", url="https://mcp.example/wiki")


@pytest.fixture
async def rt(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[Runtime]:
    settings = make_settings(
        tmp_path,
        fake_openai.base_url,
        admins=["slack:U0ADMIN"],
        tools=["code_interpreter", "web_search"],
        mcp_servers=[WIKI],
    )
    async with open_runtime(settings) as runtime:
        yield runtime


async def admin(rt: Runtime, line: str, where: ThreadKey = CHANNEL_LEVEL, *, user: str = ADMIN) -> str:
    reply = TextReply()
    await rt.gateway.command(line, key=where, user=user, reply=reply)
    return reply.text


async def ask(rt: Runtime, fake: FakeOpenAI, where: ThreadKey, text: str = "hi") -> tuple[dict[str, Any], bool]:
    """One turn; the request it made and whether the answer was spoken."""
    before = len(responses(fake))
    fake.script(Reply(text="An answer."))
    reply = RecordingReply()
    submission = await rt.gateway.submit(IncomingMessage(key=where, user_id="U1", text=text), reply)
    assert submission.done is not None
    await submission.done
    assert reply.text.startswith("An answer."), reply.text
    bodies = responses(fake)
    assert len(bodies) == before + 1
    return bodies[-1], any(getattr(f, "kind", None) is PartKind.AUDIO for f in reply.files)


ALL_TOOLS = ["code_interpreter", "web_search", "current_time", "calculate", "get_weather", "wiki"]


async def test_tools_and_mcp_servers_switched_off_in_a_channel_leave_its_next_requests(
    rt: Runtime, fake_openai: FakeOpenAI
) -> None:
    assert tool_names((await ask(rt, fake_openai, HERE))[0]) == ALL_TOOLS
    assert await admin(rt, "channel set tools -code_interpreter") == (
        "This channel's `tools` is now `-code_interpreter`: on: web_search, file_search, current_time, calculate, "
        "get_weather, from the next turn on."
    )
    assert tool_names((await ask(rt, fake_openai, HERE))[0]) == [t for t in ALL_TOOLS if t != "code_interpreter"]
    assert tool_names((await ask(rt, fake_openai, ELSEWHERE))[0]) == ALL_TOOLS, "other channels keep every tool"

    await admin(rt, "channel set tools web_search, Calculate")  # only these (a name in another case is found)
    await admin(rt, "channel set mcp -wiki")
    assert tool_names((await ask(rt, fake_openai, HERE))[0]) == ["web_search", "calculate"]
    await admin(rt, "channel set tools none")
    assert "tools" not in (await ask(rt, fake_openai, HERE))[0], "no tools at all"
    assert "• mcp: `-wiki`: on: none (this channel, set by slack:U0ADMIN)" in await admin(rt, "channel show")

    assert await admin(rt, "channel reset tools") == (
        "This channel's `tools` is back to the default: all: code_interpreter, web_search, file_search, current_time, "
        "calculate, get_weather."
    )
    await admin(rt, "channel reset mcp")
    assert tool_names((await ask(rt, fake_openai, HERE))[0]) == ALL_TOOLS


async def test_model_set_by_channel_set_or_by_model_is_one_setting(rt: Runtime, fake_openai: FakeOpenAI) -> None:
    assert await admin(rt, "channel set model gpt-6-luna") == (
        "This channel's `model` is now `gpt-6-luna`, from the next turn on."
    )
    assert (await ask(rt, fake_openai, HERE))[0]["model"] == "gpt-6-luna"
    assert await admin(rt, "model gpt-6-terra", user="U1") == "This channel now uses `gpt-6-terra` for new turns."
    assert "• model: `gpt-6-terra` (this channel)" in await admin(rt, "channel show"), "`model NAME` sets the same"
    assert (await ask(rt, fake_openai, HERE))[0]["model"] == "gpt-6-terra"
    assert await admin(rt, "channel reset model") == "This channel's `model` is back to the default: `gpt-6.2-sol`."
    assert (await ask(rt, fake_openai, HERE))[0]["model"] == "gpt-6.2-sol"


async def test_voice_always_in_a_channel_makes_its_next_answers_spoken(rt: Runtime, fake_openai: FakeOpenAI) -> None:
    assert not (await ask(rt, fake_openai, HERE))[1], "the default (auto): text only for a typed message"
    assert await admin(rt, "voice off") == "Spoken replies are off in this channel (threads without their own setting)."
    said = await admin(rt, "channel set voice always")
    assert said == "This channel's `voice` is now `always`, from the next turn on."
    assert (await ask(rt, fake_openai, HERE))[1], "spoken: the latest channel-wide choice wins over `voice off`"
    assert not (await ask(rt, fake_openai, ELSEWHERE))[1], "other channels unaffected"
    assert await admin(rt, "voice off", HERE) == "Spoken replies are off in this thread."
    assert not (await ask(rt, fake_openai, HERE))[1], "the thread's own voice off wins"
    assert (await ask(rt, fake_openai, ThreadKey("slack", "T1", "C1", "3.0")))[1]
    assert await admin(rt, "channel set voice never") == "This channel's `voice` is now `never`, from the next turn on."
    assert not (await ask(rt, fake_openai, ThreadKey("slack", "T1", "C1", "4.0")))[1]
    await admin(rt, "voice on")  # anyone's channel-wide `voice on` after it wins in turn
    assert (await ask(rt, fake_openai, ThreadKey("slack", "T1", "C1", "5.0")))[1]
    assert "`voice on` was sent for the whole channel" in await admin(rt, "channel show")
    await admin(rt, "channel reset voice")
    assert not (await ask(rt, fake_openai, ThreadKey("slack", "T1", "C1", "6.0")))[1], "reset: the default (auto)"


async def test_kb_off_leaves_the_channels_knowledge_base_out_and_show_lists_it(
    rt: Runtime, fake_openai: FakeOpenAI
) -> None:
    reply = RecordingReply()
    message = IncomingMessage(
        key=HERE, user_id="U1", text="kb add", attachments=(attachment("policy.pdf", pdf_bytes(POLICY)),)
    )
    submission = await rt.gateway.submit(message, reply)
    assert submission.done is not None
    await submission.done
    assert reply.text.startswith("Added policy.pdf"), reply.text
    (kb,) = (s.id for s in fake_openai.vector_stores.stores.values())
    assert searched((await ask(rt, fake_openai, HERE, "who approves expenses?"))[0]) == [kb]

    assert await admin(rt, "channel set kb off") == "This channel's `kb` is now `off`, from the next turn on."
    assert searched((await ask(rt, fake_openai, HERE, "who approves expenses?"))[0]) == []
    shown = await admin(rt, "channel show")
    assert "• kb: `off` (this channel, set by slack:U0ADMIN)" in shown
    assert "  knowledge base: 1 document: policy.pdf" in shown
    await admin(rt, "channel set kb on")
    assert searched((await ask(rt, fake_openai, HERE, "who approves expenses?"))[0]) == [kb]


async def test_channel_show_and_reset(rt: Runtime, fake_openai: FakeOpenAI) -> None:
    shown = (await admin(rt, "channel show")).splitlines()
    assert shown[0] == "This channel's settings (`channel set KEY VALUE` changes one, `channel reset [KEY]` undoes):"
    assert shown[1:7] == [
        "• model: `gpt-6.2-sol` (default)",
        "• instructions: none (only `THREADLINE_INSTRUCTIONS`) (default)",
        "• tools: all: code_interpreter, web_search, file_search, current_time, calculate, get_weather (default)",
        "• voice: `auto` (`THREADLINE_VOICE_REPLIES`) (default)",
        "• mcp: all: wiki (default)",
        "• kb: `on` (default)",
    ]
    assert [line.split(":")[0] for line in shown[1:-1]] == [f"• {name}" for name in KEYS], "every key, in order"
    assert shown[-1] == "  knowledge base: empty (`kb add` with files attached adds documents)"
    assert await admin(rt, "channel") == await admin(rt, "channel show"), "a bare `channel` shows"
    await admin(rt, f"channel set instructions {PIRATE}")
    await admin(rt, "channel set voice on")
    await admin(rt, "channel set tools -web_search")
    shown = (await admin(rt, "channel show")).splitlines()
    assert shown[2] == f"• instructions: “{PIRATE}” (this channel, set by slack:U0ADMIN)"
    assert shown[3] == (
        "• tools: `-web_search`: on: code_interpreter, file_search, current_time, calculate, get_weather "
        "(this channel, set by slack:U0ADMIN)"
    )
    assert shown[4] == "• voice: `always` (this channel, set by slack:U0ADMIN)", "`on` is stored as `always`"
    long = "Be brief. " * 60
    await admin(rt, f"channel set instructions {long}")
    assert f"“{long[:500]}…” ({len(long.strip())} characters)" in await admin(rt, "channel show")

    assert await admin(rt, "channel reset voice") == (
        "This channel's `voice` is back to the default: `auto` (`THREADLINE_VOICE_REPLIES`)."
    )
    assert await admin(rt, "channel reset") == (
        "Removed this channel's `instructions`, `tools`: the defaults apply from the next turn on."
    )
    assert await admin(rt, "channel reset") == "This channel has no settings of its own: the defaults apply."
    body, _ = await ask(rt, fake_openai, HERE)
    assert body["instructions"] == DEFAULT_INSTRUCTIONS and tool_names(body) == ALL_TOOLS


async def test_bad_channel_input_gets_one_line_saying_what_is_accepted(rt: Runtime) -> None:
    usage = "Use `channel show`, `channel set KEY VALUE` or `channel reset [KEY]`."
    keys = KEY_LIST
    tools = "code_interpreter, web_search, file_search, current_time, calculate, get_weather"
    forms = "`NAME,NAME` (only these on), `-NAME,-NAME` (all but these), `all` or `none`"
    too_long = "x" * (MAX_INSTRUCTIONS_CHARS + 1)
    expected = {
        "channel frobnicate": f"Unknown `channel` sub-command `frobnicate`. {usage} {keys}",
        "channel show everything": f"{usage} {keys}",
        "channel set": f"Say which key: `channel set KEY VALUE`. {keys}",
        "channel set colour blue": f"Unknown key `colour`. {keys} {usage}",
        "channel reset colour": f"Unknown key `colour`. {keys} {usage}",
        "channel set instructions": (
            "Say the value: `channel set instructions VALUE`, with text every turn here gets after the default "
            f"instructions (at most {MAX_INSTRUCTIONS_CHARS:,} characters)."
        ),
        "channel set instructions    ": (
            "Say the value: `channel set instructions VALUE`, with text every turn here gets after the default "
            f"instructions (at most {MAX_INSTRUCTIONS_CHARS:,} characters)."
        ),
        f"channel set instructions {too_long}": (
            f"Channel instructions are at most {MAX_INSTRUCTIONS_CHARS:,} characters; these are "
            f"{MAX_INSTRUCTIONS_CHARS + 1:,}."
        ),
        "channel set model gpt 6": BAD_MODEL,
        "channel set tools -frobnicate": f"Unknown tool `frobnicate`. Tools here: {tools}.",
        "channel set tools web_search,-code_interpreter": (
            "Give either tool names (only those on) or -names (all but those), not both."
        ),
        "channel set tools ,": f"Use {forms}.",
        "channel set mcp github": "Unknown MCP server `github`. MCP servers here: wiki.",
        "channel set voice loud": (
            "Use `channel set voice auto|always|never`: `auto` (spoken replies to voice notes), `always` or `never`; "
            "a thread's own `voice on|off` wins."
        ),
        "channel set kb maybe": (
            "Use `channel set kb on|off`: `on` or `off`: whether threads here search this channel's knowledge base "
            "(`kb add`)."
        ),
    }
    for line, answer in expected.items():
        assert await admin(rt, line) == answer, line
    assert await rt.store.channel_settings("slack", "C1") == [], "nothing was stored"


# --- the console --------------------------------------------------------------------------------------------------


async def console(tmp_path: Path, fake_openai: FakeOpenAI, stdin: str, **env: str) -> str:
    values = {"THREADLINE_DATABASE": str(tmp_path / "db" / "threadline.db"), "LOGNAME": "tester", "USER": "tester"}
    proc = await spawn_threadline(tmp_path, user_env(tmp_path, fake_openai.base_url, **values, **env), "run")
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_the_console_user_is_an_admin_when_listed_by_login_name(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    admin_env = {"THREADLINE_ADMINS": "console:tester"}
    out = await console(tmp_path, fake_openai, f"/channel set instructions {PIRATE}\nhello\n", **admin_env)
    assert "This channel's instructions are set" in out
    assert responses(fake_openai)[-1]["instructions"] == WITH_PIRATE

    out = await console(tmp_path, fake_openai, "/channel reset\nhello again\n")  # a restart, not an admin now
    assert "Sorry, `channel` is for admins only." in out
    assert responses(fake_openai)[-1]["instructions"] == WITH_PIRATE, "nothing changed; the persona held"

    out = await console(tmp_path, fake_openai, "/channel reset\nhello\n", **admin_env)
    assert "Removed this channel's `instructions`" in out
    assert responses(fake_openai)[-1]["instructions"] == DEFAULT_INSTRUCTIONS
