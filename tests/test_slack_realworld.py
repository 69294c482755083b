"""Every real Slack payload in tests/fixtures/realworld/slack (sources.txt there) through the real adapter: signed,
POSTed to the adapter in HTTP mode, dispatched by slack-bolt itself (its authorization, self-event filter and
listener matching), converted, and handed to a recording stand-in for the core. The table says what the core
receives for each one (the text, the thread the answer goes to, DM or not, the files) or that it receives
nothing, and which Slack calls the adapter made on its own."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot.errors import AttachmentError
from tests.fakes.slack_server import FakeSlack
from tests.slack_recording import recording_adapter

FIXTURES = Path(__file__).parent / "fixtures" / "realworld" / "slack"
PAYLOADS = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(FIXTURES.glob("*.json"))}
TITLE = ("assistant.threads.setTitle",)  # a DM that opens a thread gets a title


@dataclass(frozen=True)
class Seen:
    """What the core is handed for one payload (``text`` None: nothing), and the adapter's own Slack calls."""

    text: str | None = None
    key: str = ""  # slack:<workspace>:<channel>:<thread root>
    dm: bool = False
    files: tuple[str, ...] = ()
    owned: bool = True  # whether the bot already answers in the payload's thread
    calls: tuple[str, ...] = ()  # Web API calls besides the start-up auth.test
    fetch_error: str = ""  # said when the core asks for the first file's bytes
    log: str = ""  # an INFO line the adapter writes


def answered(text: str, key: str, **more: Any) -> Seen:
    return Seen(text=text, key=key, **more)


IGNORED = Seen()
EXPECTED: dict[str, Seen] = {
    # mentions: answered in the mention's thread, the bot's own mention removed (or named, inside a sentence)
    "bolt_app_mention": answered("Hi there!", "slack:T111:C111:1595926230.009600", owned=False),
    "bolt_app_mention_shared_channel": answered(
        "Hi there!",
        "slack:T_INSTALLED:C111:1595926230.009600",
        owned=False,  # Slack Connect: the installed team
    ),
    "bolt_org_app_mention": answered("Hi there!", "slack:T111:C111:1595926230.009600", owned=False),
    "docs_app_mention_channel": answered(
        "is it everything a river should be?", "slack:T061EG9R6:C0LAN2Q65:1515449522.000016", owned=False
    ),
    "docs_app_mention_invite": answered(
        "You can count on threadline for an honorable mention.",
        "slack:T061EG9R6:C0LAN2Q65:1515449483.000108",
        owned=False,
    ),
    # replies in a thread the bot answers
    "bolt_channel_thread_reply": answered("When Slack was released?", "slack:T111:C111:1726133698.626339"),
    "bolt_thread_broadcast": answered("Hi there!", "slack:T111:C111:1633663824.000500"),
    "ossans_message_in_thread": answered("ラジオCMは", "slack:T02X3XXX1:C0000XXX0XX:1736207085.539649"),
    "hybrid_connect_check_file_info": answered(
        "what is in this file?",
        "slack:T111:C111:1652227000.000100",
        files=("F123ABC456",),
        calls=("files.info",),  # Slack Connect files are looked up first (the fake has no such file)
        fetch_error="files.info: file_not_found",
    ),
    # DMs under an assistant_app_thread root (assistant_view apps): the root's thread
    "bolt_assistant_user_message": answered(
        "When Slack was released?", "slack:T111:D111:1726133698.626339", dm=True, owned=False, calls=TITLE
    ),
    "bolt_assistant_user_message_action_token": answered(
        "When Slack was released?", "slack:T111:D111:1726133698.626339", dm=True, owned=False, calls=TITLE
    ),
    "bolt_file_share_dm_thread": answered(
        "uploaded a file", "slack:T111:D111:1726133698.626339", dm=True, files=("test.png",), owned=False, calls=TITLE
    ),
    # plain top-level DMs (agent_view): each starts its own thread
    "docs_file_share_im": answered(
        "We got one!",
        "slack:T061EG9R6:D0L4B9P0Q:1529342088.000086",
        dm=True,
        files=("ghostrap.png",),
        owned=False,
        calls=TITLE,
    ),
    "hybrid_slack_audio_clip_dm": answered(
        "",
        "slack:T111:D0VOICE01:1652227646.593159",
        dm=True,
        files=("오디오 클립 (2026-08-04 21:23:09).m4a",),
        owned=False,
        calls=TITLE,
    ),
    "hybrid_canvas_share_dm": answered(
        "summarise this canvas",
        "slack:T111:D0CANVAS01:1652227646.593159",
        dm=True,
        files=("Sample_canvas_title",),
        owned=False,
        calls=TITLE,
        fetch_error="I can't read canvases yet",
    ),
    # the legacy assistant panel opening: prompts in its thread, nothing for the core
    "bolt_assistant_thread_started": Seen(calls=("assistant.threads.setSuggestedPrompts",)),
    # a mention inside a canvas: logged, not answered
    "docs_document_mention": Seen(log="a mention inside a canvas (document_mention)"),
    # edits, deletions, bot posts (other bots' and the bot's own), joins and huddles: nothing, even in its threads
    "bolt_assistant_message_changed_title": IGNORED,
    "bolt_assistant_thread_context_changed": IGNORED,
    "bolt_bot_dm_thread_message": IGNORED,
    "bolt_bot_message_classic": IGNORED,
    "bolt_bot_message_modern": IGNORED,
    "bolt_channel_message_changed": IGNORED,
    "bolt_file_share_events": IGNORED,  # posted by the bot itself
    "bolt_message_1": IGNORED,  # the bot's own post
    "bolt_message_2": IGNORED,
    "bolt_message_3": IGNORED,
    "bolt_message_changed": IGNORED,
    "bolt_message_deleted": IGNORED,
    "bolt_response_url_bot_message": IGNORED,
    "bolt_user_message": IGNORED,  # the bot's own post
    "docs_huddle_thread": IGNORED,
    "ossans_bot_message": IGNORED,
    "ossans_bot_message_file_share": IGNORED,
    "ossans_file_share_message_changed": IGNORED,
    "ossans_message_changed": IGNORED,
    "ossans_message_in_thread_changed": IGNORED,
    "ossans_message_in_thread_deleted": IGNORED,
    "ossans_thread_root_message_deleted": IGNORED,
    # top-level channel messages that are not mentions: the app_mention event of the same post is what counts
    "bolt_file_share_channel": IGNORED,
    "bolt_org_app_message": IGNORED,
    "ossans_file_share_message": IGNORED,
    "ossans_message": IGNORED,
    "ossans_message2": IGNORED,
}


def test_every_fixture_has_a_row() -> None:
    assert sorted(EXPECTED) == sorted(PAYLOADS)


def bot_of(body: dict[str, Any]) -> tuple[str, str]:
    """(bot user id, workspace) the payload was sent to: its authorizations, else its authed users, else the
    first user it mentions (Slack's samples without either are mentions of the bot)."""
    auths = body.get("authorizations") or []
    user = auths[0].get("user_id") if auths and isinstance(auths[0], dict) else None
    if not user and body.get("authed_users"):
        user = body["authed_users"][0]
    if not user:
        found = re.search(r"<@([UW][A-Z0-9]+)", str((body.get("event") or {}).get("text") or ""))
        user = found.group(1) if found else "U0BOT"
    return str(user), str(body.get("team_id") or "T0TEAM")


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_real_payload_reaches_the_core_as_expected(name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="threadline.slack")
    body, expected = PAYLOADS[name], EXPECTED[name]
    user_id, team_id = bot_of(body)
    fake = await FakeSlack(bot_user_id=user_id, team_id=team_id).start()
    try:
        async with recording_adapter(fake, owned=expected.owned) as rig:
            assert await rig.deliver(body) == 200
            submitted = list(rig.gateway.submitted)
            fetch_error = ""
            if expected.fetch_error:
                with pytest.raises(AttachmentError) as caught:
                    await submitted[0].attachments[0].fetch()
                fetch_error = str(caught.value)
    finally:
        await fake.close()

    assert rig.gateway.commands == []
    if expected.text is None:
        assert submitted == [], "the core is handed nothing"
    else:
        (message,) = submitted
        assert (message.text, str(message.key), message.is_dm) == (expected.text, expected.key, expected.dm)
        assert tuple(a.filename for a in message.attachments) == expected.files
        assert expected.fetch_error in fetch_error
    assert [c.method for c in fake.calls] == ["auth.test", *expected.calls], "one auth.test: bolt asks no more"
    if expected.log:
        assert expected.log in caplog.text
