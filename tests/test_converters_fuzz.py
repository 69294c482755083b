"""Converters survive anything: real Slack and Discord payloads (tests/fixtures/realworld, see sources.txt there),
mutated by hypothesis (fields dropped, nulled, retyped, nested), go through each platform's converter and the
adapter's event path. Nothing may raise, and a payload either becomes one message for the core or is ignored.

The adapters here run against the fake platforms with a recording stand-in for the core's gateway, so every
example is cheap and nothing reaches a model. Runs are bounded (``max_examples``) and keep no example database.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import hmac
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import discord
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from adapters.discord import convert as discord_convert
from adapters.discord.adapter import DiscordAdapter
from adapters.discord.settings import DiscordSettings
from adapters.slack.adapter import SlackAdapter
from adapters.slack.convert import (
    BotIdentity,
    Ignored,
    SlackFile,
    SlackMessage,
    assistant_thread,
    parse_event,
    parse_slash_command,
    should_answer,
    thread_title,
)
from adapters.slack.settings import SlackSettings
from bot.gateway import Outcome
from bot.types import IncomingMessage, ThreadKey
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.slack_server import FakeSlack
from tests.helpers import RecordingGateway, section

FIXTURES = Path(__file__).parent / "fixtures" / "realworld"


def _load(platform: str) -> dict[str, Any]:
    files = sorted((FIXTURES / platform).glob("*.json"))
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in files if not p.stem.startswith("_")}


SLACK_PAYLOADS = _load("slack")
DISCORD_PAYLOADS = _load("discord")
MARKER = "ZQXJ-fuzz-marker"  # put into every payload's text: it must never show up in a log line

FUZZ = settings(
    max_examples=int(os.environ.get("THREADLINE_FUZZ_EXAMPLES", "150")),  # raise it for a deeper run by hand
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- mutations ---------------------------------------------------------------------------------------------------

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", " ", "D0", "C0", "U0", "<@U0BOT>", "reset", "message", "app_mention", "file_share", "1.2"]),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.sampled_from(["id", "type", "text", "name", "user"]), st.text(max_size=5), max_size=3),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every dict key and list index inside ``value``, as paths from its root."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return found
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutate(draw: st.DrawFn, doc: Any, *, max_steps: int = 4, focus: frozenset[str] = frozenset()) -> Any:
    """``doc`` with one to ``max_steps`` fields dropped, nulled, retyped or nested one level deeper; half the
    steps pick among the fields under a top-level key in ``focus`` (what the code under test reads)."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, max_steps))):
        paths = _paths(doc)
        focused = [p for p in paths if p[0] in focus]
        if focused and draw(st.booleans()):
            paths = focused
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _at(doc, path[:-1]), path[-1]
        old = parent[key]
        op = draw(st.sampled_from(["drop", "null", "retype", "nest"]))
        if op == "drop":
            del parent[key]
        elif op == "null":
            parent[key] = None
        elif op == "retype":
            parent[key] = draw(JUNK)
        else:
            parent[key] = draw(st.sampled_from([[old], {"type": old}, {"id": old, "text": old}]))
    return doc


def _with_marker(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    event = doc.get("event")
    if isinstance(event, dict) and isinstance(event.get("text"), str):
        event["text"] += f" {MARKER}"
    if isinstance(doc.get("content"), str):
        doc["content"] += f" {MARKER}"
    return doc


def slack_bodies() -> st.SearchStrategy[dict[str, Any]]:
    return st.sampled_from(sorted(SLACK_PAYLOADS)).flatmap(lambda name: mutate(_with_marker(SLACK_PAYLOADS[name])))


def _slack_bot(body: Any) -> BotIdentity:
    """The bot a payload was sent to (its authorizations, else the first authed user): mentions of it count."""
    auths = body.get("authorizations") if isinstance(body, dict) else None
    user = auths[0].get("user_id") if isinstance(auths, list) and auths and isinstance(auths[0], dict) else None
    authed = body.get("authed_users") if isinstance(body, dict) else None
    if not isinstance(user, str):
        user = authed[0] if isinstance(authed, list) and authed and isinstance(authed[0], str) else "U0BOT"
    return BotIdentity(user_id=user, bot_id="B0BOT", team_id="T0TEAM")


# --- Slack: the pure converter ------------------------------------------------------------------------------


def _key_ok(key: ThreadKey) -> bool:
    """Every part a string, and the key reads back as itself (the store keeps keys as text)."""
    parts = (key.platform, key.workspace, key.channel, key.thread)
    return all(isinstance(part, str) for part in parts) and ThreadKey.parse(str(key)) == key


def _check_slack_message(message: SlackMessage) -> None:
    for value in (message.team_id, message.channel, message.user, message.text, message.ts, message.event_id):
        assert isinstance(value, str)
    assert message.channel and message.user and message.ts
    assert message.thread_ts is None or (isinstance(message.thread_ts, str) and message.thread_ts)
    assert _key_ok(message.key)
    assert all(isinstance(key, str) for key in message.dedupe_keys) and message.dedupe_keys
    for file in message.files:
        assert isinstance(file, SlackFile)
        assert all(isinstance(v, str) for v in (file.id, file.name, file.mimetype, file.url)) and file.name
        assert file.size is None or (isinstance(file.size, int) and file.size >= 0)
        assert file.duration_secs is None or math.isfinite(file.duration_secs)
        assert file.kind is not None
    assert isinstance(thread_title(message), str) and thread_title(message)
    assert message.thread_command is None or isinstance(message.thread_command, str)
    for event_type in ("app_mention", "message"):
        assert isinstance(should_answer(message, event_type=event_type, thread_owned=True, require_mention=False), bool)


@pytest.mark.parametrize("name", sorted(SLACK_PAYLOADS))
def test_every_real_slack_payload_is_read_or_ignored(name: str) -> None:
    body = SLACK_PAYLOADS[name]
    result = parse_event(body, _slack_bot(body))
    assert isinstance(result, SlackMessage | Ignored)
    if isinstance(result, SlackMessage):
        _check_slack_message(result)
    else:
        assert result.reason


def test_the_real_slack_payloads_that_are_a_person_talking_become_messages() -> None:
    people = {
        name for name, body in SLACK_PAYLOADS.items() if isinstance(parse_event(body, _slack_bot(body)), SlackMessage)
    }
    assert {
        "bolt_app_mention",
        "bolt_channel_thread_reply",
        "bolt_file_share_channel",
        "hybrid_slack_audio_clip_dm",
    } <= people
    ignored = {"bolt_message_changed", "bolt_message_deleted", "bolt_bot_message_modern", "ossans_message_changed"}
    assert not ignored & people


@FUZZ
@given(body=slack_bodies())
def test_slack_converter_takes_any_mutation_of_real_payloads(body: dict[str, Any]) -> None:
    result = parse_event(body, _slack_bot(body))
    assert isinstance(result, SlackMessage | Ignored)
    if isinstance(result, SlackMessage):
        _check_slack_message(result)
    where = assistant_thread(body)
    assert where is None or all(isinstance(part, str) and part for part in where)
    command = parse_slash_command(body)
    assert all(isinstance(v, str) for v in (command.team_id, command.channel, command.user, command.text))
    assert isinstance(command.name, str) and isinstance(command.argument, str)


# --- a stand-in for the core ----------------------------------------------------------------------------------


def _check_incoming(message: IncomingMessage) -> None:
    assert isinstance(message.text, str) and isinstance(message.user_id, str) and message.user_id
    assert isinstance(message.user_name, str) and all(isinstance(role, str) for role in message.user_roles)
    assert _key_ok(message.key)
    assert all(isinstance(key, str) for key in message.dedupe_keys)
    for attachment in message.attachments:
        assert isinstance(attachment.filename, str) and attachment.filename
        assert isinstance(attachment.mime, str) and attachment.mime
        assert attachment.size is None or (isinstance(attachment.size, int) and attachment.size >= 0)


class ErrorLog(logging.Handler):
    """Every record at INFO and above, from any logger, while installed on the root logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def problems(self) -> list[str]:
        """Lines that would mean a crash or a leak: errors, tracebacks, payload text in a line."""
        return [
            f"{r.name} {r.levelname}: {r.getMessage()[:200]}"
            for r in self.records
            if r.levelno >= logging.ERROR or r.exc_info or MARKER in r.getMessage()
        ]


@contextlib.contextmanager
def recording_logs() -> Any:
    root = logging.getLogger()
    handler, level = ErrorLog(), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


# --- Slack: the adapter's event path, and HTTP mode end to end ----------------------------------------------------


@pytest.fixture
async def slack_adapter(fake_slack: FakeSlack) -> AsyncIterator[tuple[SlackAdapter, RecordingGateway]]:
    with recording_logs():  # bolt's loggers take the root's level when the app is built: INFO, like production
        async with aiohttp.ClientSession() as http:
            gateway = RecordingGateway(http, outcome=Outcome.ANSWERED)
            settings_ = section(
                SlackSettings,
                slack_bot_token=fake_slack.bot_token,
                slack_api_url=fake_slack.api_url,
                slack_signing_secret=fake_slack.signing_secret,
                slack_http_port=0,
                slack_http_host="127.0.0.1",
                slack_file_origins=[fake_slack.origin],
            )
            adapter = SlackAdapter(gateway, settings_)  # type: ignore[arg-type]
            task = asyncio.create_task(adapter.run())
            await asyncio.wait_for(adapter.ready.wait(), 10)
            try:
                yield adapter, gateway
            finally:
                await adapter.close()
                await asyncio.wait_for(task, 5)


@FUZZ
@given(body=slack_bodies(), owned=st.booleans())
async def test_slack_event_path_takes_any_mutation_of_real_payloads(
    slack_adapter: tuple[SlackAdapter, RecordingGateway], body: dict[str, Any], owned: bool
) -> None:
    adapter, gateway = slack_adapter
    gateway.reset(owned=owned)
    ev = body.get("event")
    kind = ev.get("type") if isinstance(ev, dict) else None
    with recording_logs() as logs:
        await adapter._on_event(body, kind if kind in ("app_mention", "message") else "message")
    assert logs.problems() == []
    assert len(gateway.submitted) + len(gateway.commands) <= 1, "one message at most"
    event("submitted" if gateway.submitted else "a command" if gateway.commands else "ignored")
    for message in gateway.submitted:
        _check_incoming(message)


def _signed(secret: str, body: str) -> dict[str, str]:
    stamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


async def _drain_bolt_listeners() -> None:
    """Wait for the listeners bolt runs after acking (process_before_response=False) to finish."""
    while pending := [
        t for t in asyncio.all_tasks() if "run_ack_function_asynchronously" in repr(t.get_coro()) and not t.done()
    ]:
        await asyncio.wait(pending)


BODY_JUNK = st.one_of(
    st.just(None), st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=2), st.just({"event": None})
)


@FUZZ
@given(body=st.one_of(slack_bodies(), BODY_JUNK))
async def test_slack_http_mode_answers_any_signed_mutation_without_a_traceback(
    slack_adapter: tuple[SlackAdapter, RecordingGateway], body: Any
) -> None:
    adapter, gateway = slack_adapter
    gateway.reset(owned=False)
    text = json.dumps(body)
    url = f"http://127.0.0.1:{adapter.http_port}/slack/events"
    headers = _signed(adapter.settings.slack_signing_secret.get_secret_value(), text)  # type: ignore[union-attr]
    with recording_logs() as logs:
        async with aiohttp.ClientSession() as session, session.post(url, data=text, headers=headers) as response:
            status = response.status
        await _drain_bolt_listeners()
    assert status in {200, 400, 404}, status
    assert logs.problems() == []


# --- Discord: discord.py's parser and the adapter's message path ----------------------------------------------


@pytest.fixture
async def discord_world(fake_discord: FakeDiscord) -> AsyncIterator[tuple[DiscordAdapter, RecordingGateway, int]]:
    thread_id = fake_discord.add_thread(owner_id=fake_discord.bot_id, name="the bot's thread")
    with recording_logs():
        async with aiohttp.ClientSession() as http:
            gateway = RecordingGateway(http, outcome=Outcome.ANSWERED)
            settings_ = section(
                DiscordSettings,
                discord_bot_token=fake_discord.token,
                discord_api_base=fake_discord.api_base,
                discord_gateway_url=fake_discord.gateway_url,
                discord_guild_ready_timeout_secs=0.05,
                discord_ack_reaction="",
                discord_sync_commands=False,
            )
            adapter = DiscordAdapter(gateway, settings_)  # type: ignore[arg-type]
            task = asyncio.create_task(adapter.run())
            await asyncio.wait_for(adapter.ready.wait(), 10)
            try:
                yield adapter, gateway, thread_id
            finally:
                await adapter.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 5)


def _rehome(fake: FakeDiscord, payload: dict[str, Any], where: str, thread_id: int, mention: bool) -> dict[str, Any]:
    """Put a real payload into the fake's world: its guild and one of its channels (or a DM), maybe mentioning
    the bot, so the guild, thread and DM paths all see it."""
    doc = _with_marker(payload)
    doc["id"] = str(fake.new_id())
    if where == "dm":
        doc.pop("guild_id", None)
        doc.pop("member", None)
        doc["channel_id"] = str(fake.new_id())
    else:
        doc["guild_id"] = str(fake.guild_id)
        channel = {"text": fake.channel_id, "thread": thread_id, "voice": fake.voice_channel_id}.get(where)
        doc["channel_id"] = str(channel or fake.new_id())
        if not isinstance(doc.get("member"), dict):
            doc["member"] = {"roles": [], "joined_at": "2024-01-01T00:00:00+00:00", "deaf": False, "mute": False}
    if mention:
        doc["mentions"] = [*(doc.get("mentions") or []), fake.bot_user]
        doc["content"] = f"<@{fake.bot_id}> {doc.get('content') or ''}"
    return doc


@st.composite
def discord_payloads(draw: st.DrawFn, fake: FakeDiscord, thread_id: int) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(DISCORD_PAYLOADS)))
    where = draw(st.sampled_from(["text", "thread", "voice", "dm", "uncached"]))
    doc = _rehome(fake, DISCORD_PAYLOADS[name], where, thread_id, draw(st.booleans()))
    return draw(mutate(doc, max_steps=3, focus=DISCORD_READ))


# The fields of a message the adapter reads (the rest is discord.py's business, and mutated too).
DISCORD_READ = frozenset(
    {
        *("content", "mentions", "mention_roles", "attachments", "author", "member", "type", "flags"),
        *("message_reference", "referenced_message", "message_snapshots", "stickers", "sticker_items"),
        *("mention_channels", "embeds"),
    }
)


@FUZZ
@given(data=st.data(), owned=st.booleans())
async def test_discord_message_path_takes_any_mutation_of_real_payloads(
    discord_world: tuple[DiscordAdapter, RecordingGateway, int], fake_discord: FakeDiscord, data: Any, owned: bool
) -> None:
    adapter, gateway, thread_id = discord_world
    gateway.reset(owned=owned)
    payload = data.draw(discord_payloads(fake_discord, thread_id))
    state = adapter.client._connection
    with recording_logs() as logs:
        raw = copy.deepcopy(payload)
        adapter._note_raw_fields(raw)  # the adapter's step before discord.py's parser (it must take anything)
        try:  # what discord.py's MESSAGE_CREATE parser does before it dispatches on_message (it edits its input)
            channel, _ = state._get_guild_channel(raw)
            message = discord.Message(state=state, channel=channel, data=raw)
        except Exception:
            # discord.py cannot read it at all: the adapter's guarded parser drops it with one line.
            state.parsers["MESSAGE_CREATE"](copy.deepcopy(payload))
            assert len(logs.records) == 1 and logs.records[0].levelno == logging.WARNING
            event("discord.py cannot read it")
        else:
            await adapter._on_message(message)
            event("submitted" if gateway.submitted else "a command" if gateway.commands else "ignored")
    assert logs.problems() == []
    assert len(gateway.submitted) + len(gateway.commands) <= 1, "one message at most"
    for incoming in gateway.submitted:
        _check_incoming(incoming)


MENTIONS = st.sampled_from(["<@1>", "<@&2>", "<#3>", "<@!99999999999999999999999>", "<@&>", " /reset", "/model x"])


@FUZZ
@given(
    content=st.lists(st.one_of(st.text(max_size=20), MENTIONS), max_size=5).map("".join),
    filename=JUNK,
    content_type=JUNK,
    size=JUNK,
    duration=JUNK,
    voice=st.booleans(),
)
def test_discord_converter_takes_any_text_and_attachment_fields(
    content: str, filename: Any, content_type: Any, size: Any, duration: Any, voice: bool
) -> None:
    text = discord_convert.clean_text(content, bot_id=1, bot_role_id=2, user_names={5: "x"})
    assert isinstance(text, str)
    assert 1 <= len(discord_convert.thread_name(text)) <= 100
    line = discord_convert.text_command(text)
    assert line is None or isinstance(line, str)
    assert all(isinstance(i, int) for i in discord_convert.role_mention_ids(content))
    assert all(isinstance(i, int) for i in discord_convert.channel_mention_ids(content))

    async def read() -> bytes:
        return b""

    info = discord_convert.attachment_info(
        filename=filename, content_type=content_type, size=size, is_voice=voice, duration_secs=duration, read=read
    )
    attachment = discord_convert.core_attachment(info, max_bytes=100)
    assert isinstance(attachment.filename, str) and attachment.filename
    assert isinstance(attachment.mime, str) and attachment.mime and attachment.kind is not None
    assert attachment.size is None or (isinstance(attachment.size, int) and attachment.size >= 0)
    assert attachment.duration_secs is None or math.isfinite(attachment.duration_secs)
