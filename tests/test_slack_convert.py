"""The pure Slack converter: which events become turns, thread keys, dedupe keys, origins, scopes, titles."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.slack.convert import (
    CANVAS_UNREADABLE,
    BotIdentity,
    Ignored,
    MessagesTabOpened,
    SlackMessage,
    display_origin,
    file_from_payload,
    messages_tab_opened,
    missing_scopes,
    origin_allowed,
    parse_event,
    parse_message,
    parse_slash_command,
    should_answer,
    suggested_prompts,
    thread_title,
    url_origin,
)
from bot.types import AttachmentKind, ThreadKey

BOT = BotIdentity(user_id="U0BOT", bot_id="B0BOT", team_id="T0TEAM")


def body(**event: Any) -> dict[str, Any]:
    base = {"type": "message", "user": "U0ALICE", "text": "hi", "ts": "1700.0001", "channel": "C0GEN"}
    return {"team_id": "T0TEAM", "event_id": "Ev001", "event": {**base, **event}}


def parsed(**event: Any) -> SlackMessage:
    message = parse_message(body(**event), BOT)
    assert message is not None
    return message


@pytest.mark.parametrize(
    "event",
    [
        {"subtype": "message_changed"},
        {"subtype": "message_deleted"},
        {"subtype": "channel_join"},
        {"subtype": "bot_message", "bot_id": "B0OTHER"},
        {"bot_id": "B0OTHER"},  # a bot posting with a user id
        {"user": "U0BOT"},  # the bot's own post
        {"user": None},
        {"type": "reaction_added"},
        {"hidden": True},
    ],
)
def test_non_user_messages_are_dropped_early(event: dict[str, Any]) -> None:
    assert parse_message(body(**event), BOT) is None


def test_file_share_and_thread_broadcast_are_kept() -> None:
    files = [{"id": "F1", "name": "a.png", "mimetype": "image/png", "size": 10, "url_private_download": "u"}]
    assert parsed(subtype="file_share", files=files).files[0].kind is AttachmentKind.IMAGE
    assert parsed(subtype="thread_broadcast", thread_ts="1699.0001").thread_ts == "1699.0001"


def test_the_bots_mention_is_stripped_and_others_kept() -> None:
    message = parsed(type="app_mention", text="<@U0BOT>   ask <@U0BOB|bob> about  this")
    assert message.text == "ask <@U0BOB|bob> about this" and message.mentions_bot


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("<@U0BOT>, can you help?", "can you help?"),  # addressing the bot: the mention and its comma go
        ("<@U0BOT>: summarise this", "summarise this"),
        ("<@U0BOT|threadline> <@U0BOT> hi", "hi"),
        ("You can count on <@U0BOT> for an honorable mention.", "You can count on Threadbot for an honorable mention."),
        ("hey <@U0BOT>, you there?", "hey Threadbot, you there?"),  # inside the sentence: the bot's name
        ("thanks, <@U0BOT>!", "thanks!"),  # addressed at the end, after a comma
        ("what do you think <@U0BOT>?", "what do you think Threadbot?"),
        ("<@U0BOT>", ""),
        ("ask <@U0BOB> about it", "ask <@U0BOB> about it"),  # someone else's mention stays
    ],
)
def test_the_bots_mention_leaves_a_sentence_that_reads(text: str, cleaned: str) -> None:
    bot = BotIdentity(user_id="U0BOT", bot_id="B0BOT", team_id="T0TEAM", name="Threadbot")
    message = parse_message(body(text=text), bot)
    assert message is not None and message.text == cleaned
    assert message.mentions_bot is ("U0BOT" in text)


def test_a_canvas_is_explained_instead_of_downloaded() -> None:
    for canvas in (
        {"id": "F1", "name": "Plan", "filetype": "canvas", "url_private": "https://files.slack.com/x"},
        {"id": "F2", "name": "Plan", "filetype": "quip", "mimetype": "application/vnd.slack-docs", "size": 453},
        {"id": "F3", "name": "Plan", "mimetype": "application/vnd.slack-docs"},
    ):
        assert file_from_payload(canvas).problem == CANVAS_UNREADABLE
    assert "can't read canvases yet" in CANVAS_UNREADABLE
    assert file_from_payload({"id": "F4", "name": "a.pdf", "mimetype": "application/pdf"}).problem == ""


def test_a_mention_inside_a_canvas_is_ignored_and_worth_a_log_line() -> None:
    result = parse_event(body(type="app_mention", subtype="document_mention", text="<@U0BOT> was mentioned"), BOT)
    assert isinstance(result, Ignored) and result.notable and "document_mention" in result.reason
    assert not parse_event(body(subtype="message_changed"), BOT).notable  # type: ignore[union-attr]


def test_messages_tab_opened() -> None:
    def home(**event: Any) -> dict[str, Any]:
        return {"team_id": "T0TEAM", "event": {"type": "app_home_opened", "user": "U0ALICE", **event}}

    assert messages_tab_opened(home(tab="messages", channel="D0ALICE")) == MessagesTabOpened(
        "T0TEAM", "U0ALICE", "D0ALICE"
    )
    assert messages_tab_opened(home(tab="messages")) == MessagesTabOpened("T0TEAM", "U0ALICE", "")
    assert messages_tab_opened(home(tab="home", channel="D0ALICE")) is None
    assert messages_tab_opened(home(tab="messages", user=None)) is None
    assert messages_tab_opened({"event": {"type": "app_mention", "tab": "messages"}}) is None


def test_thread_keys_and_dedupe_keys() -> None:
    top = parsed(ts="1700.0001")
    reply = parsed(ts="1700.0009", thread_ts="1700.0001")
    assert top.key == reply.key == ThreadKey("slack", "T0TEAM", "C0GEN", "1700.0001")
    assert reply.dedupe_keys == ("slack:event:Ev001", "slack:msg:C0GEN:1700.0009")


def test_dm_detection_and_the_senders_team() -> None:
    dm = parsed(channel="D0ALICE", channel_type="im", user_team="T0OTHER")
    assert dm.is_dm and dm.user_team == "T0OTHER" and dm.team_id == "T0TEAM"
    assert not parsed(channel="G0PRIV", channel_type="mpim").is_dm


@pytest.mark.parametrize(
    ("event_type", "event", "owned", "require_mention", "answer"),
    [
        ("app_mention", {}, False, True, True),
        ("message", {"channel": "D0A", "channel_type": "im"}, False, True, True),
        ("message", {}, True, False, False),  # top-level channel message without a mention
        ("message", {"thread_ts": "1.0"}, True, False, True),  # follow-up in the bot's thread
        ("message", {"thread_ts": "1.0"}, False, False, False),  # someone else's thread
        ("message", {"thread_ts": "1.0"}, True, True, False),  # follow-up, but mentions are required
    ],
)
def test_trigger_rules(
    event_type: str, event: dict[str, Any], owned: bool, require_mention: bool, answer: bool
) -> None:
    message = parsed(type=event_type, **event)
    assert should_answer(message, event_type=event_type, thread_owned=owned, require_mention=require_mention) is answer


def test_reset_is_the_whole_text_only() -> None:
    assert parsed(text="<@U0BOT> Reset").is_reset
    assert not parsed(text="reset the router please").is_reset


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://files.slack.com/files-pri/T1-F1/a.png", "https://files.slack.com:443"),
        ("https://FILES.slack.com:443/x", "https://files.slack.com:443"),
        ("http://127.0.0.1:8080/files/x", "http://127.0.0.1:8080"),
        ("ftp://files.slack.com/x", None),
        ("not a url", None),
    ],
)
def test_url_origin(url: str, origin: str | None) -> None:
    assert url_origin(url) == origin


def test_origin_allowlist_compares_scheme_host_and_port() -> None:
    allow = ["https://files.slack.com"]
    assert origin_allowed("https://files.slack.com:443/files-pri/x", allow)
    assert not origin_allowed("http://files.slack.com/files-pri/x", allow), "scheme matters"
    assert not origin_allowed("https://files.slack.com:8443/x", allow), "port matters"
    assert not origin_allowed("https://files.slack.com.evil.example/x", allow), "host matters"
    assert not origin_allowed("https://evil.example/?u=https://files.slack.com", allow)
    assert display_origin("https://files.slack.com:443/a") == "https://files.slack.com"


def test_file_payload_fields() -> None:
    voice = file_from_payload(
        {"id": "F1", "name": "clip.webm", "mimetype": "audio/webm", "subtype": "slack_audio", "duration_ms": 2500}
    )
    assert voice.kind is AttachmentKind.VOICE and voice.duration_secs == 2.5
    stub = file_from_payload({"id": "F2", "mode": "file_access", "file_access": "check_file_info"})
    assert stub.needs_info and stub.url == "" and stub.size is None


def test_missing_scopes_are_named_in_order() -> None:
    assert missing_scopes("chat:write,files:read") == [
        "app_mentions:read",
        "assistant:write",
        "channels:history",
        "commands",
        "files:write",
        "groups:history",
        "im:history",
        "mpim:history",
        "reactions:read",
    ]
    assert missing_scopes(None)[0] == "app_mentions:read"


def test_suggested_prompts_and_titles() -> None:
    prompts = suggested_prompts(["Summarize a document I attach to this thread please", " ", "Draw", "a", "b", "c"])
    assert len(prompts) == 4 and prompts[0]["message"] == "Summarize a document I attach to this thread please"
    assert len(prompts[0]["title"]) <= 40 and prompts[0]["title"].endswith("…")
    assert thread_title(parsed(text="x " * 100)).endswith("…")
    assert len(thread_title(parsed(text="x " * 100))) <= 80


def test_slash_command_addresses_the_channel() -> None:
    command = parse_slash_command({"team_id": "T0TEAM", "channel_id": "D0A", "user_id": "U0A", "text": "model x"})
    assert command.is_dm and command.name == "model" and command.key == ThreadKey("slack", "T0TEAM", "D0A", "")


def test_voice_on_and_off_in_a_thread_are_thread_commands() -> None:
    assert parsed(text="<@U0BOT> Voice  ON").thread_command == "voice on"
    assert parsed(text="voice off").thread_command == "voice off"
    assert parsed(text="voice off please, it's loud").thread_command is None
