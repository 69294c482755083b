"""Admins, access rules at run time, refusal replies and audit lines, end to end: Slack through the fake Slack,
Discord through the fake Discord, the console through a real ``threadline run``; the core through its gateway."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bot.access import DENIED, NO_DMS, NOT_IN_CHANNEL, NOT_IN_SERVER, NOT_LISTED, refusal_for
from bot.access_rules import AccessRules, combine, describe
from bot.logging_setup import JsonFormatter, RedactSecrets
from bot.runtime import Runtime, open_runtime
from bot.store import AccessRule
from bot.store.sqlite import SqliteStore
from bot.types import IncomingMessage, ThreadKey
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.slack_server import FakeSlack
from tests.helpers import AUDIT, AuditLines, RecordingReply, make_settings, spawn_threadline, user_env
from tests.test_discord_e2e import Harness, answered
from tests.test_slack_e2e import CHANNEL, DM, SlackBot, SlackHarness

ADMIN, BOB, MALLORY = "U0ADMIN", "U0BOB", "U0MALLORY"
MANAGE_GUILD, ADMINISTRATOR = 0x20, 0x8


def model_calls(fake_openai: FakeOpenAI) -> list[str]:
    return [r.path for r in fake_openai.requests if r.path.startswith(("/v1/responses", "/v1/conversations"))]


# --- Slack ------------------------------------------------------------------------------------------------------


@pytest.fixture
async def slack(tmp_path: Path, fake_slack: FakeSlack, fake_openai: FakeOpenAI) -> AsyncIterator[SlackHarness]:
    harness = SlackHarness(tmp_path, fake_slack, fake_openai)
    yield harness
    await harness.close()


async def slash(bot: SlackBot, text: str, *, user: str, channel: str = CHANNEL) -> str:
    """``/threadline TEXT`` from ``user``; returns the ephemeral answer."""
    ack = await bot.fake.send_envelope(bot.fake.slash_command(text, channel=channel, user=user), kind="slash_commands")
    return str(ack.get("text", ""))


async def test_a_denied_slack_user_is_told_once_an_hour_and_nothing_is_downloaded_or_asked(
    slack: SlackHarness,
    fake_openai: FakeOpenAI,
    tmp_path: Path,
    audit: AuditLines,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    fake = slack.fake
    bot = await slack.start(denied_users=[MALLORY])
    url = fake.host_file("plans.pdf", b"%PDF-1.4 the merger plans", "application/pdf")

    async def dm() -> dict[str, Any]:
        pdf = fake.file_object("plans.pdf", "application/pdf", url, 25)
        event = fake.user_event("read my merger plans", channel=DM, user=MALLORY, files=[pdf])
        await bot.send(event)
        return event

    first = await dm()
    (told,) = await bot.answered(DM, first["ts"])
    assert DENIED in told.text
    second = await dm()
    await audit.wait("access_refused", 2)
    await bot.runtime.gateway.wait_idle()
    assert fake.thread(DM, second["ts"]) == [], "within the hour a refused user hears nothing"

    with sqlite3.connect(tmp_path / "threadline.db") as db:  # an hour passes
        db.execute("UPDATE refusals SET replied_at = replied_at - 3601")
    third = await dm()
    (again,) = await bot.answered(DM, third["ts"])
    assert DENIED in again.text, "an hour after the last reply, told again"

    assert fake.file_requests == [], "a refused message's file is never downloaded"
    assert model_calls(fake_openai) == [], "no model call"
    for event in (first, second, third):
        assert not await bot.runtime.store.is_owned(ThreadKey("slack", fake.team_id, DM, event["ts"]))
    lines = audit.of("access_refused")
    assert [r.told for r in lines] == [True, False, True]
    assert {(r.actor, r.rule, r.source, r.attempt) for r in lines} == {
        (f"slack:{MALLORY}", "deny user", "settings", "message")
    }
    ours = [r for r in caplog.records if r.name.startswith("threadline")]
    assert ours and not [r for r in ours if "merger" in r.getMessage()], "no message text in the logs"


async def test_an_admins_deny_holds_from_the_next_message_and_survives_a_restart(
    slack: SlackHarness, fake_openai: FakeOpenAI, audit: AuditLines
) -> None:
    fake = slack.fake
    options = {"admins": [f"slack:{ADMIN}"], "refusal_replies": "always"}
    bot = await slack.start(**options)
    fake_openai.script(Reply(text="Hi Bob."))

    async def bob_asks(running: SlackBot) -> str:
        event = fake.user_event(f"<@{fake.bot_user_id}> hello", user=BOB, kind="app_mention")
        await running.send(event)
        (answer,) = await running.answered(CHANNEL, event["ts"])
        return answer.text

    assert await bob_asks(bot) == "Hi Bob."
    said = await slash(bot, f"access deny user <@{BOB}|bob>", user=ADMIN)
    assert said == f"Denied user `{BOB}`: they can't use the bot from their next message on."
    assert DENIED in await bob_asks(bot)
    await bot.stop()

    bot = await slack.start(**options)
    assert DENIED in await bob_asks(bot), "the rule is stored: it survives a restart"
    shown = await slash(bot, "access show", user=ADMIN)
    assert f"denied users: {BOB} (stored)" in shown and "DMs on (settings)" in shown
    assert len([r for r in fake_openai.requests if r.path == "/v1/responses"]) == 1

    (command, show) = audit.of("admin_command")
    assert (command.actor, command.platform, command.command, command.arguments) == (
        f"slack:{ADMIN}",
        "slack",
        "access",
        ["deny", "user", f"<@{BOB}|bob>"],
    )
    assert show.arguments == ["show"]
    refused = audit.of("access_refused")
    assert [(r.rule, r.source) for r in refused] == [("deny user", "stored")] * 2


async def test_a_non_admins_access_command_is_refused_and_changes_nothing(
    slack: SlackHarness, fake_openai: FakeOpenAI, audit: AuditLines
) -> None:
    fake = slack.fake
    bot = await slack.start(admins=[f"slack:{ADMIN}"])
    for line in (f"access deny user {BOB}", "access reset", "access show"):
        assert await slash(bot, line, user=BOB) == "Sorry, `access` is for admins only."
    assert await bot.runtime.store.access_rules("slack") == []
    fake_openai.script(Reply(text="Still here, Bob."))
    event = fake.user_event(f"<@{fake.bot_user_id}> still there?", user=BOB, kind="app_mention")
    await bot.send(event)
    assert [m.text for m in await bot.answered(CHANNEL, event["ts"])] == ["Still here, Bob."]
    refused = audit.of("admin_refused")
    assert [(r.actor, r.command) for r in refused] == [(f"slack:{BOB}", "access")] * 3
    assert all(not hasattr(r, "arguments") for r in refused), "a non-admin's arguments are not logged"


async def test_bad_access_input_on_slack_gets_a_line_saying_what_is_accepted(slack: SlackHarness) -> None:
    bot = await slack.start(admins=[f"slack:{ADMIN}"])
    usage = (
        "Use `access show`, `access allow user|channel ID`, `access deny user|channel ID`, "
        "`access remove user|channel ID`, `access dms on|off` or `access reset` (deny beats allow)."
    )
    expected = {
        "access": usage,
        "access frobnicate": f"Unknown `access` sub-command `frobnicate`. {usage}",
        "access deny user bob": "`bob` is not a Slack user id (like U0123ABCD).",
        "access deny user u0bob": "`u0bob` is not a Slack user id (like U0123ABCD).",
        "access allow channel general": "`general` is not a Slack channel id (like C0123ABCD).",
        "access deny role R1": "Roles and guilds are Discord's; on Slack use `user` or `channel`.",
        "access deny": "Say which user or channel, then its id: e.g. `access deny user U0123ABCD`.",
        "access deny user": "Give one user id: `access … user ID`.",
        "access dms maybe": "Say `access dms on` or `access dms off`.",
        f"access remove user {BOB}": f"There is no stored rule on user `{BOB}`; `access show` lists them.",
    }
    for line, answer in expected.items():
        assert await slash(bot, line, user=ADMIN) == answer, line
    assert await bot.runtime.store.access_rules("slack") == [], "bad input changes nothing"


# --- Discord ----------------------------------------------------------------------------------------------------


@pytest.fixture
async def harness(tmp_path: Path, fake_discord: FakeDiscord, fake_openai: FakeOpenAI) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, fake_discord, fake_openai)
    yield h
    await h.close()


async def test_discord_manage_server_members_and_listed_ids_are_admins(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI, audit: AuditLines
) -> None:
    fake = fake_discord
    fake.everyone_permissions = 0x1_FFFF_FFFF & ~(MANAGE_GUILD | ADMINISTRATOR)
    fake.role_permissions[fake.helper_role_id] = MANAGE_GUILD
    managers = [str(fake.helper_role_id)]
    carol, dave = fake.make_user("carol"), fake.make_user("dave")
    bot = await harness.start(admins=[f"discord:{dave['id']}"])

    async def access(rule: str, user: dict[str, Any], roles: list[str] | None = None) -> str:
        done = len(fake.interaction_callbacks)
        await fake.slash("access", [{"name": "rule", "type": 3, "value": rule}], user=user, roles=roles)
        await fake.wait_for(lambda: len(fake.interaction_callbacks) > done, 5, "the /access answer")
        callback = fake.interaction_callbacks[done]
        assert callback["data"]["flags"] == 64, "admin answers are ephemeral"
        return str(callback["data"]["content"])

    assert await access(f"deny user <@{carol['id']}>", fake.bob) == "Sorry, `access` is for admins only."
    assert await bot.runtime.store.access_rules("discord") == []
    said = await access(f"deny user <@{carol['id']}>", fake.bob, managers)
    assert said == f"Denied user `{carol['id']}`: they can't use the bot from their next message on."
    assert await access("dms off", fake.alice) == "Direct messages are off on Discord.", "the owner manages it"

    await fake.user_message(fake.channel_id, "hello?", mention_bot=True, author=carol)
    await answered(fake, bot, fake.channel_id, DENIED)
    bob_dm = fake.dm_channel(fake.bob)
    await fake.user_message(bob_dm, "hi in private", author=fake.bob)
    await answered(fake, bot, bob_dm, NO_DMS)
    assert fake.threads_created == [] and model_calls(fake_openai) == []

    dave_dm = fake.dm_channel(dave)  # THREADLINE_ADMINS works in a DM, where nobody manages a server
    await fake.user_message(dave_dm, "/access show", author=dave)
    await answered(fake, bot, dave_dm, f"denied users: {carol['id']} (stored)")
    assert "DMs off (stored)" in fake.text_in(dave_dm)

    rules = await bot.runtime.store.access_rules("discord")
    assert [(r.kind, r.value, r.effect, r.set_by) for r in rules] == [
        ("dms", "*", "deny", f"discord:{fake.alice['id']}"),
        ("user", carol["id"], "deny", f"discord:{fake.bob['id']}"),
    ]
    assert [r.actor for r in audit.of("admin_refused")] == [f"discord:{fake.bob['id']}"]
    assert [r.rule for r in audit.of("access_refused")] == ["deny user", "dms off"]


async def test_discord_roles_and_guilds_can_be_denied(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    bot = await harness.start(admins=[f"discord:{fake.alice['id']}"], refusal_replies="always")
    helpers = str(fake.helper_role_id)

    async def access(rule: str) -> str:
        done = len(fake.interaction_callbacks)
        await fake.slash("access", [{"name": "rule", "type": 3, "value": rule}])
        await fake.wait_for(lambda: len(fake.interaction_callbacks) > done, 5, "the /access answer")
        return str(fake.interaction_callbacks[done]["data"]["content"])

    assert (await access(f"deny role <@&{helpers}>")).startswith(f"Denied role `{helpers}`")
    await fake.user_message(fake.channel_id, "as a helper", mention_bot=True, author=fake.bob, roles=[helpers])
    await answered(fake, bot, fake.channel_id, DENIED)
    assert (await access(f"remove deny role {helpers}")) == f"Removed the stored rule on role `{helpers}`."
    assert (await access(f"deny server {fake.guild_id}")).startswith(f"Denied guild `{fake.guild_id}`")
    await fake.user_message(fake.channel_id, "in this server", mention_bot=True, author=fake.bob)
    await answered(fake, bot, fake.channel_id, NOT_IN_SERVER)
    assert await access("deny guild Test") == "`Test` is not a Discord guild id (15 to 21 digits)."
    assert fake.threads_created == [] and model_calls(fake_openai) == []
    assert (await access("reset")).startswith("Removed 1 stored rule")


# --- the console ------------------------------------------------------------------------------------------------


async def console(tmp_path: Path, fake_openai: FakeOpenAI, stdin: str, **env: str) -> tuple[str, str]:
    values = {"THREADLINE_DATABASE": str(tmp_path / "db" / "threadline.db"), "LOGNAME": "tester", **env}
    proc = await spawn_threadline(tmp_path, user_env(tmp_path, fake_openai.base_url, **values), "run")
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=60)
    assert proc.returncode == 0, err.decode()
    return out.decode(), err.decode()


async def test_console_admin_by_login_name_with_json_audit_lines(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    admin = {"THREADLINE_ADMINS": "console:tester", "THREADLINE_LOG_FORMAT": "json"}
    script = "/access deny user tester\nmy merger plans are secret\n/access show\n/access frobnicate\n"
    script += "/access deny user a/b\n"
    out, err = await console(tmp_path, fake_openai, script, **admin)
    assert "Denied user `tester`: they can't use the bot from their next message on." in out
    assert out.count(DENIED) == 1, "the console always says why"
    assert "denied users: tester (stored)" in out
    assert "Unknown `access` sub-command `frobnicate`." in out
    assert "`a/b` is not a user name (letters, digits, `.`, `_`, `-` or `@`)." in out
    assert model_calls(fake_openai) == []

    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    audit_lines = [line for line in lines if line["logger"] == AUDIT]
    commands = [line for line in audit_lines if line["audit"] == "admin_command"]
    assert [(c["actor"], c["platform"], c["command"], c["arguments"]) for c in commands] == [
        ("console:tester", "console", "access", ["deny", "user", "tester"]),
        ("console:tester", "console", "access", ["show"]),
        ("console:tester", "console", "access", ["frobnicate"]),
        ("console:tester", "console", "access", ["deny", "user", "a/b"]),
    ]
    (refused,) = [line for line in audit_lines if line["audit"] == "access_refused"]
    assert {k: refused[k] for k in ("actor", "channel", "rule", "source", "attempt", "told")} == {
        "actor": "console:tester",
        "channel": "console",
        "rule": "deny user",
        "source": "stored",
        "attempt": "message",
        "told": True,
    }
    assert "merger" not in err and "sk-test-secret" not in err, "no message text, no secret"

    out, _ = await console(tmp_path, fake_openai, "/access reset\nhello again\n")  # a restart, not an admin now
    assert "Sorry, `access` is for admins only." in out and DENIED in out, "nothing changed; the rule held"

    fake_openai.script(Reply(text="Welcome back."))
    out, _ = await console(tmp_path, fake_openai, "/access reset\nhello\n", **admin)
    assert "Removed 1 stored rule; the settings' defaults apply again on the console." in out
    assert "Welcome back." in out


# --- the core: the rules, the cache, the replies, the log format ------------------------------------------------


def _probe(
    user: str = "U1",
    *,
    platform: str = "discord",
    guild: str = "G1",
    channel: str = "C1",
    roles: tuple[str, ...] = (),
    dm: bool = False,
) -> IncomingMessage:
    key = ThreadKey(platform, "dm" if dm else guild, channel, "t")
    return IncomingMessage(key=key, user_id=user, text="hi", user_roles=roles, is_dm=dm)


def _rule(kind: str, value: str, effect: str) -> AccessRule:
    return AccessRule("discord", kind, value, effect, "discord:admin", 1.0)


@pytest.mark.parametrize(
    ("settings", "stored", "message", "expected"),
    [
        ({}, [], _probe(), None),
        ({"allowed_users": ["U1"]}, [_rule("user", "U1", "deny")], _probe(), ("deny user", "stored", DENIED)),
        ({"denied_users": ["U1"]}, [_rule("user", "U1", "allow")], _probe(), ("deny user", "settings", DENIED)),
        ({}, [_rule("user", "U1", "allow")], _probe("U2"), ("allow users", "stored", NOT_LISTED)),
        ({"allowed_roles": ["R1"]}, [], _probe("U2", roles=("R1",)), None),
        (
            {"allowed_users": ["U2"]},
            [_rule("role", "R1", "deny")],
            _probe("U2", roles=("R1",)),
            ("deny role", "stored", DENIED),
        ),
        ({}, [_rule("guild", "G1", "deny")], _probe(), ("deny guild", "stored", NOT_IN_SERVER)),
        ({}, [_rule("guild", "G1", "deny")], _probe(dm=True), None),
        ({"allowed_guilds": ["G2"]}, [], _probe(), ("allow guilds", "settings", NOT_IN_SERVER)),
        ({"allowed_guilds": ["G2"]}, [], _probe(platform="slack"), None),
        (
            {"allowed_channels": ["C1"]},
            [_rule("channel", "C1", "deny")],
            _probe(),
            ("deny channel", "stored", NOT_IN_CHANNEL),
        ),
        ({"allowed_channels": ["C2"]}, [], _probe(dm=True), None),
        ({}, [_rule("dms", "*", "deny")], _probe(dm=True), ("dms off", "stored", NO_DMS)),
        ({"allow_dms": False}, [_rule("dms", "*", "allow")], _probe(dm=True), None),
    ],
)
def test_the_rules_in_force_and_deny_beats_allow(
    tmp_path: Path,
    settings: dict[str, Any],
    stored: list[AccessRule],
    message: IncomingMessage,
    expected: tuple[str, str, str] | None,
) -> None:
    rules = combine(make_settings(tmp_path, "http://127.0.0.1:9/v1", **settings), stored)
    refusal = refusal_for(rules, message)
    assert (refusal and (refusal.rule, refusal.source, refusal.text)) == expected


async def test_another_replica_sees_a_change_within_the_cache_time(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "http://127.0.0.1:9/v1", access_cache_secs=5)
    now = [100.0]
    here, there = SqliteStore(tmp_path / "shared.db"), SqliteStore(tmp_path / "shared.db")
    try:
        mine = AccessRules(settings, here, clock=lambda: now[0])
        theirs = AccessRules(settings, there, clock=lambda: now[0])
        assert (await theirs.rules("slack")).deny["user"] == frozenset()
        said = await mine.command("deny user U0BOB", platform="slack", actor="slack:UADMIN")
        assert said.startswith("Denied user `U0BOB`")
        assert (await mine.rules("slack")).deny["user"] == {"U0BOB"}, "the replica that changed it sees it at once"
        now[0] += 4.9
        assert (await theirs.rules("slack")).deny["user"] == frozenset(), "read a moment ago: still cached"
        now[0] += 0.2
        assert (await theirs.rules("slack")).deny["user"] == {"U0BOB"}, "seen once the cache time is up"
    finally:
        await here.close()
        await there.close()


@pytest.fixture
async def runtimes(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[Callable[..., Any]]:
    opened: list[Any] = []

    async def build(**overrides: Any) -> Runtime:
        cm = open_runtime(make_settings(tmp_path, fake_openai.base_url, **overrides))
        opened.append(cm)
        return await cm.__aenter__()

    yield build
    for cm in reversed(opened):
        await cm.__aexit__(None, None, None)


@pytest.mark.parametrize(("mode", "told"), [("never", [False, False]), ("always", [True, True])])
async def test_refusal_replies_never_and_always(
    runtimes: Callable[..., Any], fake_openai: FakeOpenAI, mode: str, told: list[bool]
) -> None:
    rt: Runtime = await runtimes(denied_users=["U1"], refusal_replies=mode)
    replies = [RecordingReply(), RecordingReply()]
    for n, reply in enumerate(replies):
        message = IncomingMessage(key=ThreadKey("slack", "T1", "C1", f"{n}.0"), user_id="U1", text="hi")
        assert (await rt.gateway.submit(message, reply)).outcome.value == "refused"
    assert [reply.failed == DENIED for reply in replies] == told
    assert [reply.events == [] for reply in replies] == [not t for t in told]
    assert model_calls(fake_openai) == []


async def test_gateway_refusal_is_the_line_adapters_show_first(runtimes: Callable[..., Any]) -> None:
    rt: Runtime = await runtimes(admins=["slack:UADMIN"])
    probe = IncomingMessage(key=ThreadKey("slack", "T1", "C0DEV", "1.0"), user_id="U1", text="")
    assert await rt.gateway.refusal(probe) is None
    reply = RecordingReply()
    await rt.gateway.command("access deny channel C0DEV", key=probe.key, user="UADMIN", reply=reply)
    assert reply.text.startswith("Denied channel `C0DEV`")
    assert await rt.gateway.refusal(probe) == NOT_IN_CHANNEL
    dm = IncomingMessage(key=ThreadKey("slack", "T1", "D1", "1.0"), user_id="U1", text="", is_dm=True)
    assert await rt.gateway.refusal(dm) is None, "a channel rule says nothing about DMs"


def test_admins_must_name_their_platform(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="'U0123' is not an admin id: write the platform, a colon"):
        make_settings(tmp_path, "http://127.0.0.1:9/v1", admins="slack:U1,U0123")
    settings = make_settings(tmp_path, "http://127.0.0.1:9/v1", admins="slack:U1, discord:42,console:me")
    assert settings.admins == ["slack:U1", "discord:42", "console:me"]


def test_json_lines_carry_extra_fields_and_redact_secrets_everywhere() -> None:
    secret = "xoxb-very-secret-token"
    formatter = JsonFormatter([secret])
    log = logging.getLogger("threadline.test")
    try:
        raise RuntimeError(f"failed with {secret}")
    except RuntimeError:
        record = log.makeRecord(
            "threadline.test",
            logging.ERROR,
            __file__,
            1,
            "token %s rejected",
            (secret,),
            sys.exc_info(),
            extra={"actor": "slack:U1", "arguments": ["deny", secret], "told": False},
        )
    RedactSecrets([secret]).filter(record)
    line = json.loads(formatter.format(record))
    assert line["level"] == "ERROR" and line["logger"] == "threadline.test" and line["time"].endswith("+00:00")
    assert line["message"] == "token *** rejected"
    assert (line["actor"], line["arguments"], line["told"]) == ("slack:U1", ["deny", "***"], False)
    assert "RuntimeError: failed with ***" in line["exception"]
    assert secret not in json.dumps(line)


def test_access_show_fits_one_message_however_many_rules(tmp_path: Path) -> None:
    many = [_rule("user", str(10**17 + n), "deny") for n in range(300)]
    shown = describe(combine(make_settings(tmp_path, "http://127.0.0.1:9/v1"), many), "discord")
    assert len(shown) <= 2000 and shown.startswith("On Discord: denied users: 100000000000000000 (stored)")
    assert shown.endswith(", … (and more)")
