"""Slack's agent messaging around one answer, end to end (real slack-bolt and slack-sdk against the fake Slack, the
real core against the fake OpenAI): the agent session and its stop button, task steps in the stream, and the
feedback buttons under every final answer. Each also where Slack refuses it: the answer goes on as before."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from adapters.slack.convert import FEEDBACK_ACTION_ID, feedback_click, session_stopped
from adapters.slack.stream import SESSION_UNSTOPPABLE
from bot.types import ThreadKey
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.slack_server import FakeMessage, FakeSlack
from tests.slack_recording import drain_bolt_listeners
from tests.test_slack_e2e import ALICE, CHANNEL, DM, SlackBot, SlackHarness, responses, slack

__all__ = ["slack"]  # the harness fixture, shared with test_slack_e2e

LONG = " ".join(f"word{i}" for i in range(400))
STOPPED = "_(stopped)_"
REPORT = ("cntr_1", "cfile_1", "report.csv", b"month,total\njan,3\n")


def mention(fake: FakeSlack, text: str) -> dict[str, Any]:
    return fake.user_event(f"<@{fake.bot_user_id}> {text}", kind="app_mention")


def session(fake: FakeSlack, channel: str, thread_ts: str) -> dict[str, Any]:
    return fake.sessions.get((channel, thread_ts)) or {"status": None, "title": None, "history": []}


def statuses(fake: FakeSlack) -> list[str]:
    return [c.args["status"] for c in fake.calls_to("assistant.threads.setStatus")]


def buttons(message: FakeMessage) -> list[dict[str, Any]]:
    """The feedback_buttons elements a message shows."""
    return [
        element
        for block in message.blocks
        if block["type"] == "context_actions"
        for element in block["elements"]
        if element["type"] == "feedback_buttons"
    ]


async def click(bot: SlackBot, payload: dict[str, Any]) -> None:
    """Deliver an interaction the way the adapter's mode receives it, and check that it was acked."""
    if bot.adapter.http_mode:
        status, _ = await bot.fake.deliver_interaction(bot.events_url, payload)
        assert status == 200, "acked"
    else:
        acks = len(bot.fake.acks)
        await bot.fake.send_envelope(payload, kind="interactive")  # returns once the ack arrived
        assert len(bot.fake.acks) == acks + 1
    await drain_bolt_listeners()


# --- agent sessions ----------------------------------------------------------------------------------------------


async def test_a_turn_moves_the_session_to_processing_then_active(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    fake_openai.script(Reply(text="A thread is a conversation.", token_interval=0.01), Reply(text="Yes."))
    bot = await slack.start()
    first = mention(fake, "what is a thread?")
    await bot.send(first)
    await bot.answered(CHANNEL, first["ts"])

    state = session(fake, CHANNEL, first["ts"])
    assert state["history"] == ["processing", "active"] and state["title"] == "what is a thread?"
    (processing,) = fake.calls_to("agents.sessions.setStatus")
    assert processing.args == {
        "channel_id": CHANNEL,
        "thread_ts": first["ts"],
        "status": "processing",
        "title": "what is a thread?",
    }
    (stop,) = fake.calls_to("chat.stopStream")
    assert stop.args["session_status"] == "active", "the stream's end moves the session back, in the same call"

    await bot.send(fake.user_event("really?", thread_ts=first["ts"]))
    await bot.answered(CHANNEL, first["ts"], 2)
    assert session(fake, CHANNEL, first["ts"])["history"] == ["processing", "active"] * 2
    assert "title" not in fake.calls_to("agents.sessions.setStatus")[1].args, "only the first turn creates it"


async def test_an_answer_off_the_stream_moves_the_session_back_with_its_own_call(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    fake = slack.fake
    fake_openai.script(Reply(text="Posted, then edited.", token_interval=0.01))
    bot = await slack.start(slack_native_streaming=False)
    dm = fake.user_event("hello", channel=DM)
    await bot.send(dm)
    await bot.answered(DM, dm["ts"])

    assert session(fake, DM, dm["ts"])["history"] == ["processing", "active"]
    assert [c.args["status"] for c in fake.calls_to("agents.sessions.setStatus")] == ["processing", "active"]
    assert not fake.calls_to("chat.startStream")


@pytest.mark.parametrize("error", ["unknown_method", "not_allowed", "missing_scope"])
async def test_where_slack_refuses_sessions_answers_keep_the_status_line_and_it_is_not_asked_again(
    slack: SlackHarness, fake_openai: FakeOpenAI, error: str
) -> None:
    fake = slack.fake
    fake.fail("agents.sessions.setStatus", error, times=100)
    fake_openai.script(Reply(text="One."), Reply(text="Two."))
    bot = await slack.start()
    texts = []
    for ask in ("one", "two"):  # two threads of one workspace
        event = mention(fake, ask)
        await bot.send(event)
        texts += [m.text for m in await bot.answered(CHANNEL, event["ts"])]

    assert texts == ["One.", "Two."]
    assert len(fake.calls_to("agents.sessions.setStatus")) == 1, "refused once, not asked again in the workspace"
    assert statuses(fake).count("is thinking…") == 2, "the status line, as before"
    assert all("session_status" not in c.args for c in fake.calls_to("chat.stopStream"))
    assert fake.sessions == {}


async def test_a_session_that_cannot_be_stopped_is_ended_and_not_used_again(
    slack: SlackHarness, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="threadline.slack")
    fake = slack.fake
    fake.session_warning = SESSION_UNSTOPPABLE  # the app is not subscribed to agent_session_stopped
    fake_openai.script(Reply(text="One."), Reply(text="Two."))
    bot = await slack.start()
    first, second = mention(fake, "one"), mention(fake, "two")
    await bot.send(first)
    await bot.answered(CHANNEL, first["ts"])
    await bot.send(second)
    await bot.answered(CHANNEL, second["ts"])

    assert session(fake, CHANNEL, first["ts"])["history"] == ["processing", "active"], "no indicator left behind"
    assert (CHANNEL, second["ts"]) not in fake.sessions, "the next answer goes without a session"
    assert "subscribe the app to agent_session_stopped" in caplog.text


# --- the stop button ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_the_stop_button_stops_a_long_answer_and_the_thread_goes_on(
    slack: SlackHarness, fake_openai: FakeOpenAI, mode: str
) -> None:
    fake = slack.fake
    fake_openai.script(Reply(text=LONG, token_interval=0.02, chunk=8), Reply(text="Next answer."))
    bot = await slack.start(mode)
    ask = mention(fake, "talk a lot")
    await bot.send(ask)
    await fake.wait_for(lambda: any(len(m.text) > 40 for m in fake.thread(CHANNEL, ask["ts"])))
    (streaming,) = fake.thread(CHANNEL, ask["ts"])
    assert streaming.streaming and session(fake, CHANNEL, ask["ts"])["status"] == "processing"

    await bot.send(fake.session_stopped(CHANNEL, ask["ts"], [streaming.ts]))  # acked: HTTP 200 / envelope ack
    (message,) = await bot.answered(CHANNEL, ask["ts"])

    assert message.text.endswith(f"\n\n{STOPPED}") and LONG not in message.text
    said = message.text.removesuffix(f"\n\n{STOPPED}")
    assert said and LONG.startswith(said), "the answer so far stays, and nothing came after the stop"
    (cut,) = [turn for turn in fake_openai.responses_by_id.values() if not turn.finished]
    assert cut.sent_text.startswith(said), "the model stream was closed"
    assert session(fake, CHANNEL, ask["ts"])["history"] == ["processing", "active"]
    assert buttons(message), "a stopped answer is still an answer"

    await bot.send(fake.user_event("and now?", thread_ts=ask["ts"]))
    messages = await bot.answered(CHANNEL, ask["ts"], 2)
    assert messages[1].text == "Next answer."
    assert session(fake, CHANNEL, ask["ts"])["history"] == ["processing", "active"] * 2
    assert len(fake_openai.conversations) == 1, "the thread keeps its conversation"


async def test_a_stop_when_nothing_runs_posts_nothing(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    fake_openai.script(Reply(text="Done already."))
    bot = await slack.start("http")
    ask = mention(fake, "quick one")
    await bot.send(ask)
    (answer,) = await bot.answered(CHANNEL, ask["ts"])
    before = len(fake.messages)

    await bot.send(fake.session_stopped(CHANNEL, ask["ts"], []))
    await drain_bolt_listeners()
    await bot.runtime.gateway.wait_idle()

    assert len(fake.messages) == before and answer.text == "Done already.", "nothing posted, nothing changed"
    assert session(fake, CHANNEL, ask["ts"])["status"] == "active"
    assert len(responses(fake_openai)) == 1


# --- task steps --------------------------------------------------------------------------------------------------


async def test_code_shows_as_a_task_step_in_the_stream(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    fake_openai.script(Reply(text="I made the report.", container_file=REPORT, token_interval=0.01))
    bot = await slack.start()
    ask = mention(fake, "make a csv")
    await bot.send(ask)
    messages = await bot.answered(CHANNEL, ask["ts"], 2)

    assert [m.via for m in messages] == ["stream", "upload"]
    steps = messages[0].chunks
    assert [(c["type"], c["title"], c["status"]) for c in steps] == [
        ("task_update", "Running code", "in_progress"),
        ("task_update", "Running code", "complete"),
    ]
    assert steps[0]["id"] == steps[1]["id"], "one task, marked complete when done"
    assert messages[0].text == "I made the report." and messages[0].task_display_mode == "timeline"
    assert "is running code…" not in statuses(fake), "the step, not the status line"
    assert buttons(messages[0]), "the answer ended with the file: its last text carries the buttons"


async def test_off_the_stream_a_step_is_the_status_line(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    fake_openai.script(Reply(text="I made the report.", container_file=REPORT))
    bot = await slack.start(slack_native_streaming=False)
    ask = mention(fake, "make a csv")
    await bot.send(ask)
    messages = await bot.answered(CHANNEL, ask["ts"], 2)

    assert "is running code…" in statuses(fake)
    assert all(m.chunks == [] for m in messages) and not fake.calls_to("chat.startStream")
    assert messages[0].text == "I made the report."


async def test_a_workspace_whose_streams_refuse_chunks_gets_the_status_line(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    fake = slack.fake
    fake.chunks_supported = False  # an older workspace: invalid_chunks for anything but text
    fake_openai.script(Reply(text="I made the report.", container_file=REPORT, token_interval=0.01))
    bot = await slack.start()
    ask = mention(fake, "make a csv")
    await bot.send(ask)
    messages = await bot.answered(CHANNEL, ask["ts"], 2)

    assert "is running code…" in statuses(fake)
    assert messages[0].via == "stream" and messages[0].text == "I made the report.", "the text still streams"
    assert all(m.chunks == [] for m in messages)


# --- feedback ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_a_click_on_the_feedback_buttons_is_acked_and_stored(
    slack: SlackHarness, fake_openai: FakeOpenAI, mode: str
) -> None:
    fake = slack.fake
    fake_openai.script(Reply(text="Paris.", token_interval=0.01))
    bot = await slack.start(mode)
    ask = mention(fake, "capital of France?")
    await bot.send(ask)
    (answer,) = await bot.answered(CHANNEL, ask["ts"])
    (element,) = buttons(answer)
    assert element["action_id"] == FEEDBACK_ACTION_ID and answer.text == "Paris.", "the text stays"
    assert (element["positive_button"]["value"], element["negative_button"]["value"]) == ("good", "bad")

    await click(bot, fake.feedback_click(answer, value="bad"))
    (row,) = await bot.runtime.store.recent_feedback(10)
    assert (row.key, row.turn, row.user, row.value) == (
        str(ThreadKey("slack", fake.team_id, CHANNEL, ask["ts"])),
        answer.ts,
        ALICE,
        "bad",
    )

    await click(bot, fake.feedback_click(answer, value="good", user="U0BOB"))
    await click(bot, fake.feedback_click(answer, value="good"))  # Alice changes her mind
    rows = await bot.runtime.store.recent_feedback(10)
    assert sorted((r.user, r.value) for r in rows) == [(ALICE, "good"), ("U0BOB", "good")]


async def test_the_help_text_is_no_answer_to_rate_and_runs_no_session(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    fake = slack.fake
    bot = await slack.start()
    bare = fake.user_event(f"<@{fake.bot_user_id}>", kind="app_mention")
    await bot.send(bare)
    (help_text,) = await bot.answered(CHANNEL, bare["ts"])

    assert "threadline" in help_text.text and buttons(help_text) == []
    assert fake.calls_to("agents.sessions.setStatus") == [] and responses(fake_openai) == []


async def test_answers_off_the_stream_carry_the_buttons_too(slack: SlackHarness, fake_openai: FakeOpenAI) -> None:
    fake = slack.fake
    text = "Edited in place. " * 40
    fake_openai.script(Reply(text=text, token_interval=0.005, chunk=12))
    bot = await slack.start(slack_native_streaming=False, slack_message_limit=300)
    ask = mention(fake, "a long one")
    await bot.send(ask)
    messages = await bot.answered(CHANNEL, ask["ts"], 2)

    assert len(messages) > 1 and all(m.via == "post" for m in messages)
    assert [bool(buttons(m)) for m in messages] == [False] * (len(messages) - 1) + [True], "on the last one"
    assert " ".join(m.text for m in messages).split() == text.split(), "the text is kept beside the buttons"
    # The buttons ride on the last message's final write: an edit, or its post when the answer rolled over just
    # before the end (which of the two depends on how the text arrived).
    (final,) = [
        c.args for c in fake.calls_to("chat.update") + fake.calls_to("chat.postMessage") if c.args.get("blocks")
    ]
    assert "markdown_text" not in final and final["text"], "blocks don't mix with markdown_text"


async def test_a_workspace_refusing_the_buttons_still_gets_the_answer(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    fake = slack.fake
    fake.fail("chat.stopStream", "invalid_blocks", when=lambda args: "blocks" in args)
    fake_openai.script(Reply(text="Plain answer.", token_interval=0.01))
    bot = await slack.start()
    ask = mention(fake, "hi")
    await bot.send(ask)
    (message,) = await bot.answered(CHANNEL, ask["ts"])

    assert message.text == "Plain answer." and not message.streaming and buttons(message) == []
    assert session(fake, CHANNEL, ask["ts"])["status"] == "active", "the session still goes back to active"


# --- the payloads themselves ---------------------------------------------------------------------------------------


def test_malformed_stop_and_feedback_payloads_name_nothing() -> None:
    assert session_stopped({"event": {"type": "agent_session_stopped", "channel": "C1"}}, "T1") is None
    assert session_stopped({"event": {"type": "message"}}, "T1") is None
    stopped = session_stopped(
        {"event": {"type": "agent_session_stopped", "channel": "C1", "thread_ts": "1.2", "streaming_message_ts": 3}},
        "T1",
    )
    assert stopped is not None and stopped.key == ThreadKey("slack", "T1", "C1", "1.2") and stopped.streaming == ()

    good = {
        "type": "block_actions",
        "user": {"id": "U1"},
        "channel": {"id": "C1"},
        "message": {"ts": "1.3", "thread_ts": "1.2"},
        "actions": [{"action_id": FEEDBACK_ACTION_ID, "value": "good"}],
    }
    click_ = feedback_click(good, "T1")
    assert click_ is not None and (click_.key.thread, click_.turn, click_.value) == ("1.2", "1.3", "good")
    assert feedback_click({**good, "actions": [{"action_id": "other", "value": "good"}]}, "T1") is None
    assert feedback_click({**good, "actions": [{"action_id": FEEDBACK_ACTION_ID, "value": "meh"}]}, "T1") is None
    assert feedback_click({**good, "message": {"ts": "1.3"}}, "T1") is None, "an answer is always in a thread"
