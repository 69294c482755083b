"""Budgets and the request rate, end to end: a real ``threadline run`` console against the fake OpenAI, Slack
through the fake Slack, and the core through its gateway; the in-process bound on concurrent turns through
``Budgets`` on a real store. Whatever is refused makes no model call."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.budgets import Budgets, OverBudget, Scope
from bot.runtime import Runtime, open_runtime
from bot.store import UsageRow
from bot.store.sqlite import SqliteStore
from bot.types import IncomingMessage, ThreadKey
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.slack_server import FakeSlack
from tests.helpers import RecordingReply, make_settings, spawn_threadline, user_env
from tests.test_discord_e2e import Harness
from tests.test_slack_e2e import CHANNEL, SlackBot, SlackHarness

ALICE, ADMIN = "U0ALICE", "U0ADMIN"
RESET = re.compile(r"resets at (\d{4}-\d{2}-\d{2}) 00:00 UTC \(in \d")


def model_calls(fake_openai: FakeOpenAI) -> int:
    return sum(1 for r in fake_openai.requests if r.path == "/v1/responses")


def tomorrows(before: date) -> set[str]:
    """Tomorrow as the test saw it at its start and at its end (a test may run across midnight UTC)."""
    after = datetime.now(UTC).date()
    return {f"{before + timedelta(days=1):%Y-%m-%d}", f"{after + timedelta(days=1):%Y-%m-%d}"}


# --- the console: a real `threadline run` -----------------------------------------------------------------------


async def _run(tmp_path: Path, env: dict[str, str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    proc = await spawn_threadline(tmp_path, env, *args)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _env(tmp_path: Path, base_url: str, **extra: str) -> dict[str, str]:
    return user_env(
        tmp_path,
        base_url,
        THREADLINE_DATABASE=str(tmp_path / "db" / "threadline.db"),
        USER="alice",
        LOGNAME="alice",
        **extra,
    )


async def test_console_admin_sets_a_daily_budget_and_the_third_turn_is_refused_with_the_reset_time(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """The issue's check: a daily budget of 1,000 tokens; turns of 500 tokens; the third is refused."""
    today = datetime.now(UTC).date()
    fake_openai.script(*[Reply(text=f"answer {i}", usage=(300, 200)) for i in range(3)])
    env = _env(tmp_path, fake_openai.base_url, THREADLINE_ADMINS="console:alice")
    script = "/budget user alice daily 1000\none\ntwo\nthree\n/usage\n"
    code, out, err = await _run(tmp_path, env, "run", stdin=script)
    assert code == 0, err

    assert "Done: user alice may use 1,000 tokens a day" in out
    assert "answer 0" in out and "answer 1" in out and "answer 2" not in out
    assert model_calls(fake_openai) == 2, "the refused turn made no model call"
    refusal = next(line for line in out.splitlines() if "limit" in line and "⚠" in line)
    assert "You have reached your daily limit of 1,000 tokens (1,000 used today)" in refusal
    match = RESET.search(refusal)
    assert match is not None and match[1] in tomorrows(today), refusal
    assert "This month you used 1,000 tokens (600 in, 400 out) over 2 turns." in out
    assert "Your limits: 1,000 tokens a day (0 left; resets" in out


async def test_console_request_rate_refuses_the_third_message_in_a_minute(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    env = _env(tmp_path, fake_openai.base_url, THREADLINE_USER_REQUESTS_PER_MINUTE="2")
    code, out, err = await _run(tmp_path, env, "run", stdin="one\ntwo\nthree\n")
    assert code == 0, err
    assert model_calls(fake_openai) == 2
    (refusal,) = [line for line in out.splitlines() if "⚠" in line]
    assert re.search(r"faster than this bot allows \(2 a minute\)\. Try again in \d+ seconds\.", refusal), refusal


async def test_console_budget_commands_are_refused_to_a_non_admin(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    env = _env(tmp_path, fake_openai.base_url, THREADLINE_USER_DAILY_TOKENS="5")
    code, out, err = await _run(tmp_path, env, "run", stdin="/budget user alice daily 0\n/usage all\n/budget show\n")
    assert code == 0, err
    assert out.count("is for admins only") == 3
    async with open_runtime(make_settings(tmp_path, fake_openai.base_url, database=env["THREADLINE_DATABASE"])) as rt:
        assert await rt.store.budget_overrides("console") == [], "a non-admin's budget command changed nothing"


# --- Slack, through the fake Slack ------------------------------------------------------------------------------


@pytest.fixture
async def slack(tmp_path: Path, fake_slack: FakeSlack, fake_openai: FakeOpenAI) -> AsyncIterator[SlackHarness]:
    harness = SlackHarness(tmp_path, fake_slack, fake_openai)
    yield harness
    await harness.close()


async def slash(bot: SlackBot, text: str, *, user: str) -> str:
    return str((await bot.fake.send_envelope(bot.fake.slash_command(text, user=user), kind="slash_commands"))["text"])


async def test_slack_admin_budget_refuses_the_third_turn_and_reports_add_up(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    today = datetime.now(UTC).date()
    fake = slack.fake
    fake_openai.script(*[Reply(text=f"answer {i}", usage=(400, 100), cached_tokens=100) for i in range(3)])
    bot = await slack.start(admins=[f"slack:{ADMIN}"], prices={"gpt-6.2-sol": {"input": 2, "output": 8}})

    assert await slash(bot, f"budget user <@{ALICE}> daily 1,000", user=ADMIN) == (
        f"Done: user {ALICE} may use 1,000 tokens a day (UTC)."
    )
    assert await slash(bot, f"budget user {ALICE} daily 5", user=ALICE) == "Sorry, `budget` is for admins only."
    (override,) = await bot.runtime.store.budget_overrides("slack")
    assert override.tokens == 1000, "the non-admin's command changed nothing"

    mention = fake.user_event(f"<@{fake.bot_user_id}> one", kind="app_mention")
    await bot.send(mention)
    await bot.answered(CHANNEL, mention["ts"])
    for n, text in enumerate(("two", "three"), start=2):
        await bot.send(fake.user_event(text, thread_ts=mention["ts"]))
        messages = await bot.answered(CHANNEL, mention["ts"], n)
    assert [m.text for m in messages[:2]] == ["answer 0", "answer 1"]
    refusal = messages[2].text
    assert "You have reached your daily limit of 1,000 tokens (1,000 used today)" in refusal
    match = RESET.search(refusal)
    assert match is not None and match[1] in tomorrows(today)
    assert model_calls(fake_openai) == 2

    rows = await bot.runtime.store.usage_rows()
    assert [(r.input_tokens, r.cached_input_tokens, r.output_tokens) for r in rows] == [(400, 100, 100)] * 2
    # 300 uncached × $2 + 100 cached × $2 (no cached price: the input price) + 100 out × $8, per 1M, twice
    own = (await slash(bot, "usage", user=ALICE)).splitlines()
    assert own[:2] == [
        "This month you used 1,000 tokens (800 in, 200 out) over 2 turns, about $0.0032.",
        "Today: 1,000 tokens over 2 turns, about $0.0032.",
    ]
    assert own[2].startswith("Your limits: 1,000 tokens a day (0 left; resets ")
    channel = await slash(bot, "usage channel", user=ADMIN)
    assert f"• {ALICE}: 1,000 tokens over 2 turns, about $0.0032" in channel
    assert "This channel today: 1,000 tokens over 2 turns" in channel
    everyone = await slash(bot, "usage all", user=ADMIN)
    total_in = sum(r.input_tokens for r in rows)
    total_out = sum(r.output_tokens for r in rows)
    assert f"{total_in + total_out:,} tokens ({total_in:,} in, 200 of them cached; {total_out:,} out)" in everyone
    assert "• gpt-6.2-sol: 1,000 tokens over 2 turns" in everyone
    assert await slash(bot, "usage all", user=ALICE) == "Sorry, `usage all` is for admins only."


# --- Discord, through the fake Discord ----------------------------------------------------------------------------


@pytest.fixture
async def discord(tmp_path: Path, fake_discord: FakeDiscord, fake_openai: FakeOpenAI) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path, fake_discord, fake_openai)
    yield harness
    await harness.close()


async def test_discord_budget_and_usage_slash_commands(discord: Harness, fake_discord: FakeDiscord) -> None:
    """Alice owns the server (Manage Server: an admin); Bob does not."""
    fake_discord.everyone_permissions = 0x1_FFFF_FFFF & ~(0x20 | 0x8)  # no Manage Server, no Administrator
    bot = await discord.start(discord_command_guilds=[str(fake_discord.guild_id)])
    bob = fake_discord.bob["id"]
    await fake_discord.slash("budget", [{"name": "rule", "type": 3, "value": f"user <@{bob}> daily 50,000"}])
    await fake_discord.slash("usage", [{"name": "scope", "type": 3, "value": "all"}])
    await fake_discord.slash("budget", [{"name": "rule", "type": 3, "value": "user 1 daily 5"}])
    await fake_discord.slash("budget", [{"name": "rule", "type": 3, "value": "show"}], user=fake_discord.bob)
    await fake_discord.wait_for(lambda: len(fake_discord.interaction_callbacks) == 4, 5, "command answers")
    answers = [cb["data"]["content"] for cb in fake_discord.interaction_callbacks]
    assert answers[0] == f"Done: user {bob} may use 50,000 tokens a day (UTC)."
    assert answers[1].startswith("Month to date (since ")
    assert answers[2] == "`1` is not a user id here: use a Discord user id (digits; or an @mention)."
    assert "is for admins only" in answers[3]
    (override,) = await bot.runtime.store.budget_overrides("discord")
    assert (override.subject, override.tokens) == (bob, 50_000)


# --- the core, through its gateway --------------------------------------------------------------------------------

RuntimeFactory = Callable[..., Any]


@pytest.fixture
async def runtime_for(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[RuntimeFactory]:
    stack: list[Any] = []

    async def build(**overrides: Any) -> Runtime:
        cm = open_runtime(make_settings(tmp_path, fake_openai.base_url, **overrides))
        stack.append(cm)
        return await cm.__aenter__()

    yield build
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


def msg(text: str, thread: str, user: str = ALICE, channel: str = "C1", **kw: Any) -> IncomingMessage:
    return IncomingMessage(key=ThreadKey("console", "W1", channel, thread), user_id=user, text=text, **kw)


async def test_concurrent_turns_of_one_user_overspend_by_at_most_one_turn(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    """Five turns at once in five threads, 400 tokens each, a limit of 1,000: without the in-flight bound all five
    would run (2,000 tokens); with it the first runs alone (its size unknown), then one at a time near the limit."""
    rt = await runtime_for(user_daily_tokens=1000)
    fake_openai.script(*[Reply(text=f"answer {i}", usage=(300, 100), ttft=0.3) for i in range(5)])
    replies = [RecordingReply() for _ in range(5)]
    submissions = await asyncio.gather(
        *(rt.gateway.submit(msg("hello", f"t{i}"), reply) for i, reply in enumerate(replies))
    )
    await asyncio.gather(*(s.done for s in submissions if s.done is not None))

    spent = sum(r.input_tokens + r.output_tokens for r in await rt.store.usage_rows())
    assert model_calls(fake_openai) == 3 and spent == 1200, "over by 200: less than one turn (400)"
    refused = [r.failed for r in replies if r.failed]
    assert len(refused) == 2 and all("daily limit of 1,000 tokens (1,200 used today)" in f for f in refused)
    assert rt.turns.budgets.running("console", Scope.USER, ALICE) == 0


async def test_a_dm_has_no_channel_budget_and_an_override_of_0_lifts_a_users_limit(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_for(user_daily_tokens=100, channel_daily_tokens=100)
    fake_openai.script(*[Reply(usage=(100, 100)) for _ in range(3)])
    await rt.store.set_budget("console", "user", ALICE, "daily", 0)
    for thread in ("a", "b"):
        reply = RecordingReply()
        submission = await rt.gateway.submit(msg("hi", thread, channel="D1", is_dm=True), reply)
        assert submission.done is not None
        await submission.done
        assert reply.failed is None
    assert model_calls(fake_openai) == 2, "no user limit for alice, no channel limit in a DM"
    reply = RecordingReply()
    submission = await rt.gateway.submit(msg("hi", "c", user="U0BOB", channel="D1", is_dm=True), reply)
    assert submission.done is not None
    await submission.done
    assert reply.failed is None, "bob's first turn: under his own limit; the DM's 400 tokens count for nothing"
    reply = RecordingReply()
    submission = await rt.gateway.submit(msg("hi", "d", user="U0BOB", channel="D1", is_dm=True), reply)
    assert submission.done is not None
    await submission.done
    assert reply.failed is not None and "your daily limit of 100 tokens (200 used today)" in reply.failed


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        ("budget user U0ALICE daily -5", "A budget cannot be negative (-5): give a whole number of tokens, 0 or more"),
        ("budget user U0ALICE daily lots", "`lots` is not a number of tokens: give a whole number, 0 or more"),
        ("budget user U0ALICE weekly 5", "Unknown limit kind `weekly`: use `daily` or `monthly`."),
        ("budget user al!ce daily 5", "`al!ce` is not a user id here: use letters, digits"),
        ("budget channel #general monthly 5", "`#general` is not a channel id here"),
        ("budget user U0ALICE daily", "Give the kind and the number of tokens"),
        ("budget spend 5", "Unknown budget command `spend`. Use `budget user ID daily|monthly N`"),
        ("budget reset team", "Reset what? `budget reset user ID` or `budget reset channel [ID]`"),
        ("budget show everyone", "Show what? `budget show`, `budget show user ID` or `budget show channel [ID]`."),
        ("usage everything", "`usage` takes nothing, `channel` or `all`, not `everything`."),
    ],
)
async def test_bad_budget_and_usage_input_gets_one_clear_line_and_changes_nothing(
    runtime_for: RuntimeFactory, command: str, answer: str
) -> None:
    rt = await runtime_for(admins=["console:root"])
    reply = RecordingReply()
    await rt.gateway.command(command, key=msg("", "t").key, user="root", reply=reply)
    assert reply.failed is None and answer in reply.text, reply.text
    assert "\n" not in reply.text
    assert await rt.store.budget_overrides("console") == []


async def test_budget_show_and_reset(runtime_for: RuntimeFactory) -> None:
    rt = await runtime_for(admins=["console:root"], user_monthly_tokens=50_000)
    key = msg("", "t").key

    async def run(command: str) -> str:
        reply = RecordingReply()
        await rt.gateway.command(command, key=key, user="root", reply=reply)
        return reply.text

    assert await run("budget channel daily 2000") == "Done: channel C1 may use 2,000 tokens a day (UTC)."
    assert (
        await run("budget user U0BOB monthly 0") == "Done: user U0BOB has no monthly limit (whatever the setting says)."
    )
    shown = await run("budget show")
    assert "Settings: users no limit a day; users 50,000 tokens a month" in shown
    assert "• channel C1: 2,000 tokens a day" in shown and "• user U0BOB: no limit a month" in shown
    assert await run("budget show user U0BOB") == (
        "User U0BOB: daily: no limit (the setting; 0 used); monthly: no limit (set by an admin; 0 used)."
    )
    assert (await run("budget show channel")).startswith("Channel C1: daily: 2,000 tokens (set by an admin; 0 used")
    assert await run("budget reset user U0BOB") == (
        "Done: user U0BOB is back to the settings (no limit a day, 50,000 tokens a month)."
    )
    assert await run("budget reset channel daily") == "Done: channel C1 is back to the settings (no limit a day)."
    assert await rt.store.budget_overrides("console") == []


# --- the in-process bound, step by step, on a real store ---------------------------------------------------------


class Turns:
    """Turns held open by the test inside ``Budgets.turn``; each records its tokens in the ledger as it ends."""

    def __init__(self, budgets: Budgets, store: SqliteStore) -> None:
        self.budgets, self.store = budgets, store
        self.events: list[str] = []
        self._release: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, tokens: int) -> None:
        self._release[name] = asyncio.Event()
        self.tasks[name] = asyncio.create_task(self._turn(name, tokens))

    async def _turn(self, name: str, tokens: int) -> None:
        message = IncomingMessage(key=ThreadKey("console", "W", "C1", name), user_id="U1", text="hi")
        async with self.budgets.turn(message):
            self.events.append(f"{name} in")
            await self._release[name].wait()
            await self.store.record_usage(UsageRow("console", "U1", "C1", name, "m", tokens, 0))
            self.events.append(f"{name} out")

    async def end(self, name: str) -> None:
        self._release[name].set()
        await self.tasks[name]


async def settle() -> None:
    """Let every task run until it waits (store calls on SQLite never yield, so a few rounds are plenty)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def test_near_the_limit_turns_wait_for_the_ones_in_flight(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    budgets = Budgets(settings=make_settings(tmp_path, "http://127.0.0.1:9/v1", user_daily_tokens=1000), store=store)
    turns = Turns(budgets, store)
    turns.start("A", 400)
    turns.start("B", 400)
    await settle()
    assert turns.events == ["A in"], "no response yet this month: its size is unknown, so B waits"
    await turns.end("A")
    await settle()
    assert turns.events == ["A in", "A out", "B in"]
    turns.start("C", 400)
    await settle()
    assert turns.events[-1] == "B in", "400 used + 2 × 400 in flight would pass 1,000: C waits"
    await turns.end("B")
    await settle()
    assert turns.events[-1] == "C in", "800 used, nothing in flight: C may start (and overspend by less than a turn)"
    turns.start("D", 400)
    await settle()
    await turns.end("C")
    with pytest.raises(OverBudget, match=r"daily limit of 1,000 tokens \(1,200 used today\)"):
        await turns.tasks["D"]
    assert budgets.running("console", Scope.USER, "U1") == 0 and not budgets._flights
    await store.close()


async def test_far_from_the_limit_turns_run_side_by_side(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    budgets = Budgets(settings=make_settings(tmp_path, "http://127.0.0.1:9/v1", user_daily_tokens=10_000), store=store)
    await store.record_usage(UsageRow("console", "U1", "C1", "earlier", "m", 400, 0))
    turns = Turns(budgets, store)
    for name in ("A", "B", "C"):
        turns.start(name, 400)
    await settle()
    assert turns.events == ["A in", "B in", "C in"], "400 used + 3 × 400 fits in 10,000"
    assert budgets.running("console", Scope.USER, "U1") == 3
    for name in ("A", "B", "C"):
        await turns.end(name)
    await store.close()
