"""The Slack adapter's side of the durable inbox, through the real slack-bolt and slack-sdk against the fake Slack:
what a submitted message stores (its reply address, its files' sources) answers and downloads again in another
process, and a reply that takes over the message an interrupted attempt left half posted. Each test runs two
adapters: one receives the event, the other (another replica, or the same bot after a restart) answers it from
what the inbox keeps, as JSON, through the resumer it registered with its gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from adapters.slack.adapter import SlackAdapter
from adapters.slack.address import AddressError
from adapters.slack.convert import PLATFORM
from bot.errors import AttachmentError
from bot.inbox_codec import decode_address, decode_message, encode_address, encode_message
from bot.protocols import Checkpointed
from bot.types import IncomingMessage, OutgoingFile, PartKind, ThreadKey
from tests.fakes import media
from tests.fakes.slack_server import FakeMessage, FakeSlack
from tests.slack_recording import RecordingRig, recording_adapter

CHANNEL, DM, ALICE = "C0GENERAL", "D0ALICE", "U0ALICE"
ANSWER = "A thread keeps replies together. " * 12
FAST = {"slack_stream_interval_secs": 0.02, "slack_update_interval_secs": 0.05}


@pytest.fixture
async def rigs(fake_slack: FakeSlack) -> AsyncIterator[Callable[..., Awaitable[RecordingRig]]]:
    """Start adapters (each with its own recording gateway) against the one fake Slack."""
    async with AsyncExitStack() as stack:

        async def start(**settings: Any) -> RecordingRig:
            return await stack.enter_async_context(recording_adapter(fake_slack, **(FAST | settings)))

        yield start


def resumer(rig: RecordingRig) -> SlackAdapter:
    registered = rig.gateway.resumers[PLATFORM]
    assert isinstance(registered, SlackAdapter)
    return registered


def stored(message: IncomingMessage, other: RecordingRig) -> tuple[IncomingMessage, dict[str, str]]:
    """The message and its address as another process reads them back from the inbox."""
    address = decode_address(encode_address(message.reply_address))
    again = decode_message(
        encode_message(message), message.key, address, lambda source: resumer(other).fetch_for(message.key, source)
    )
    return again, address


async def answer(reply: Any, text: str = ANSWER, size: int = 40) -> None:
    """Drive a reply as the engine does: status, the text in deltas, the end."""
    await reply.start()
    await reply.set_status("thinking…")
    for i in range(0, len(text), size):
        await reply.append(text[i : i + size])
        await asyncio.sleep(0.005)
    await reply.finish()


def methods(fake: FakeSlack, since: int = 0) -> list[str]:
    return [call.method for call in fake.calls[since:]]


async def half_posted(rig: RecordingRig, thread: str, *, streaming: bool) -> FakeMessage:
    """What an interrupted attempt leaves in the thread: a native stream never stopped, or a finished message
    (with its feedback buttons) whose entry the crash kept from being marked done."""
    client, fake = rig.adapter.client, rig.fake
    if streaming:
        started = await client.chat_startStream(
            channel=CHANNEL, thread_ts=thread, recipient_user_id=ALICE, recipient_team_id=fake.team_id
        )
        await client.chat_appendStream(channel=CHANNEL, ts=str(started["ts"]), markdown_text="A thread kee")
        ts = str(started["ts"])
    else:
        blocks = [{"type": "markdown", "text": "An old answer."}, {"type": "divider"}]
        ts = str((await client.chat_postMessage(channel=CHANNEL, thread_ts=thread, text="old", blocks=blocks))["ts"])
    (message,) = fake.thread(CHANNEL, thread)
    assert message.ts == ts and message.streaming is streaming
    return message


async def mentioned(rig: RecordingRig, text: str = "what is a thread?", **event: Any) -> IncomingMessage:
    fake = rig.fake
    await rig.deliver(
        fake.event_callback(fake.user_event(f"<@{fake.bot_user_id}> {text}", kind="app_mention", **event))
    )
    (message,) = rig.gateway.submitted
    return message


# --- the reply address ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["channel thread", "dm"])
async def test_the_stored_address_answers_in_the_same_thread_from_another_process(
    rigs: Callable[..., Awaitable[RecordingRig]], fake_slack: FakeSlack, where: str
) -> None:
    fake = fake_slack
    receiver, other = await rigs(), await rigs()
    if where == "dm":
        channel, root = DM, fake.next_ts()
        await receiver.deliver(fake.event_callback(fake.user_event("what is a thread?", channel=DM, ts=root)))
        (message,) = receiver.gateway.submitted
    else:
        channel, root = CHANNEL, fake.next_ts()
        message = await mentioned(receiver, thread_ts=root)
    assert message.key == ThreadKey(PLATFORM, fake.team_id, channel, root)
    assert all(isinstance(value, str) for value in message.reply_address.values())
    assert message.reply_address == {
        "channel": channel,
        "thread_ts": root,
        "recipient_user_id": ALICE,
        "recipient_team_id": fake.team_id,
        "team_id": fake.team_id,
        "is_dm": "true" if where == "dm" else "false",
        "title": "what is a thread?",  # the thread's first turn names its agent session
    }

    again, address = stored(message, other)
    reply = resumer(other).reply_for(again.key, address, posted=None)
    assert isinstance(reply, Checkpointed) and reply.on_posted is None
    await answer(reply)

    (posted,) = fake.thread(channel, root)
    assert posted.text == ANSWER and posted.via == "stream" and not posted.streaming
    (start,) = fake.calls_to("chat.startStream")
    assert start.token == fake.bot_token
    assert (start.args["recipient_user_id"], start.args["recipient_team_id"]) == (ALICE, fake.team_id)
    assert fake.sessions[(channel, root)]["title"] == "what is a thread?", "the first turn's session title travels"
    with pytest.raises(AddressError):
        resumer(other).reply_for(again.key, {k: v for k, v in address.items() if k != "thread_ts"}, posted=None)


# --- attachments ------------------------------------------------------------------------------------------------


async def test_an_attachments_source_fetches_the_same_bytes_again_with_the_bot_token(
    rigs: Callable[..., Awaitable[RecordingRig]], fake_slack: FakeSlack
) -> None:
    fake = fake_slack
    receiver, other = await rigs(), await rigs()
    data = b"month,total\njan,3\nfeb,5\n"
    url = fake.host_file("totals.csv", data, "text/csv")
    obj = fake.file_object("totals.csv", "text/csv", url, len(data))
    fake.file_info[obj["id"]] = obj
    message = await mentioned(receiver, "sum these up", files=[obj])
    (attachment,) = message.attachments
    assert attachment.source == obj["id"]
    assert fake.bot_token not in attachment.source

    again, _ = stored(message, other)
    (resumed,) = again.attachments
    fake.file_requests.clear()
    assert await resumed.fetch() == data
    (info,) = fake.calls_to("files.info")
    assert info.args["file"] == obj["id"] and info.token == fake.bot_token
    (request,) = fake.file_requests
    assert request.headers["Authorization"] == f"Bearer {fake.bot_token}"


@pytest.mark.parametrize("problem", ["too big", "a canvas", "deleted since"])
async def test_a_refetched_attachment_fails_as_the_live_one_does(
    rigs: Callable[..., Awaitable[RecordingRig]], fake_slack: FakeSlack, problem: str
) -> None:
    fake = fake_slack
    receiver, other = await rigs(), await rigs()
    name, mime = ("plan.quip", "application/vnd.slack-docs") if problem == "a canvas" else ("clip.mp4", "video/mp4")
    url = fake.host_file(name, b"not really big", mime)
    size = 2 * receiver.gateway.max_attachment_bytes if problem == "too big" else 14
    obj = fake.file_object(name, mime, url, size)
    if problem != "deleted since":
        fake.file_info[obj["id"]] = obj
    message = await mentioned(receiver, "look at this", files=[obj])
    again, _ = stored(message, other)

    with pytest.raises(AttachmentError) as resumed:
        await again.attachments[0].fetch()
    if problem == "deleted since":
        assert "files.info: file_not_found" in str(resumed.value)
        return
    with pytest.raises(AttachmentError) as live:
        await message.attachments[0].fetch()
    assert str(resumed.value) == str(live.value)
    assert not fake.file_requests, "nothing was downloaded"


# --- taking over a half-posted answer ---------------------------------------------------------------------------


@pytest.mark.parametrize("streaming", [True, False], ids=["stream never stopped", "finished, not marked done"])
async def test_a_reply_given_posted_finishes_that_message_instead_of_posting_another(
    rigs: Callable[..., Awaitable[RecordingRig]], fake_slack: FakeSlack, streaming: bool
) -> None:
    fake = fake_slack
    receiver, other = await rigs(), await rigs()
    message = await mentioned(receiver)
    thread = message.key.thread
    old = await half_posted(receiver, thread, streaming=streaming)
    since = len(fake.calls)

    again, address = stored(message, other)
    reply = resumer(other).reply_for(again.key, address, posted=old.ts)
    reported: list[str] = []

    async def on_posted(ts: str) -> None:
        reported.append(ts)

    reply.on_posted = on_posted
    await answer(reply)

    (shown,) = fake.thread(CHANNEL, thread)
    assert shown.ts == old.ts and shown.text == ANSWER and not shown.streaming
    assert [b["type"] for b in shown.blocks] == ["markdown", "context_actions"], "its old blocks are gone"
    after = methods(fake, since)
    assert "chat.postMessage" not in after and "chat.startStream" not in after
    stop = after.index("chat.stopStream")
    assert stop < after.index("chat.update"), "the stream left open ends before the message is edited"
    assert fake.calls[since + stop].args["ts"] == old.ts
    assert reported == [old.ts]


@pytest.mark.parametrize("streaming", [True, False], ids=["stream never stopped", "finished, not marked done"])
async def test_fail_replaces_the_half_posted_message_with_the_failure_line(
    rigs: Callable[..., Awaitable[RecordingRig]], fake_slack: FakeSlack, streaming: bool
) -> None:
    fake = fake_slack
    receiver, other = await rigs(), await rigs()
    message = await mentioned(receiver)
    old = await half_posted(receiver, message.key.thread, streaming=streaming)

    again, address = stored(message, other)
    reply = resumer(other).reply_for(again.key, address, posted=old.ts)
    await reply.start()
    await reply.fail("My answer was cut short by a restart. Please ask again.")

    (shown,) = fake.thread(CHANNEL, message.key.thread)
    assert shown.ts == old.ts and not shown.streaming
    line = "⚠️ My answer was cut short by a restart. Please ask again."
    # Slack shows a message's blocks: an edit without blocks would leave the old answer's in place.
    assert shown.text == line and shown.blocks[0]["text"] == line and len(shown.blocks) == 1
    assert len(fake.calls_to("chat.update")) == 1


async def test_an_answer_that_begins_with_a_file_drops_the_half_posted_message(
    rigs: Callable[..., Awaitable[RecordingRig]], fake_slack: FakeSlack
) -> None:
    fake = fake_slack
    receiver, other = await rigs(), await rigs()
    message = await mentioned(receiver, "draw me a chart")
    old = await half_posted(receiver, message.key.thread, streaming=True)

    again, address = stored(message, other)
    reply = resumer(other).reply_for(again.key, address, posted=old.ts)
    await reply.start()
    await reply.attach(OutgoingFile(PartKind.IMAGE, "chart.png", "image/png", media.png(), title="Chart"))
    await reply.append("Here it is.")
    await reply.finish()

    upload, text = fake.thread(CHANNEL, message.key.thread)
    assert upload.via == "upload" and text.text == "Here it is."
    assert [m.ts for m in fake.messages if m.deleted] == [old.ts], "the old text would sit above the file"


async def test_a_message_deleted_meanwhile_is_answered_in_a_new_one(
    rigs: Callable[..., Awaitable[RecordingRig]], fake_slack: FakeSlack
) -> None:
    fake = fake_slack
    receiver, other = await rigs(), await rigs()
    message = await mentioned(receiver)
    old = await half_posted(receiver, message.key.thread, streaming=False)
    await receiver.adapter.client.chat_delete(channel=CHANNEL, ts=old.ts)

    again, address = stored(message, other)
    reply = resumer(other).reply_for(again.key, address, posted=old.ts)
    reported: list[str] = []

    async def on_posted(ts: str) -> None:
        reported.append(ts)

    reply.on_posted = on_posted
    await answer(reply)

    (shown,) = fake.thread(CHANNEL, message.key.thread)
    assert shown.ts != old.ts and shown.text == ANSWER
    assert reported == [shown.ts], "the new message is the one a later retry takes over"


# --- the checkpoint ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("native", [True, False], ids=["native stream", "post and edit"])
async def test_on_posted_is_awaited_with_the_first_messages_ts_before_more_text_goes_in(
    rigs: Callable[..., Awaitable[RecordingRig]], fake_slack: FakeSlack, native: bool
) -> None:
    fake = fake_slack
    rig = await rigs(slack_native_streaming=native)
    message = await mentioned(rig)
    reply = resumer(rig).reply_for(message.key, message.reply_address, posted=None)
    first, more = ("chat.startStream", "chat.appendStream") if native else ("chat.postMessage", "chat.update")
    seen: list[tuple[str, list[str]]] = []

    async def on_posted(ts: str) -> None:
        seen.append((ts, methods(fake)))
        await asyncio.sleep(0.15)  # the store is slow: nothing more may reach Slack meanwhile
        seen.append(("done", methods(fake)))

    reply.on_posted = on_posted
    await answer(reply, size=8)

    (shown,) = fake.thread(CHANNEL, message.key.thread)
    assert shown.text == ANSWER
    (reported, before), (_, during) = seen
    assert reported == shown.ts
    assert before[-1] == first and more not in before, "reported right after the message came to be"
    assert during == before, "awaited: no call went out while it ran"
    assert more in methods(fake), "the answer did go on into that message"


async def test_an_error_from_on_posted_propagates(
    rigs: Callable[..., Awaitable[RecordingRig]], fake_slack: FakeSlack
) -> None:
    rig = await rigs(slack_native_streaming=False)
    message = await mentioned(rig)
    reply = resumer(rig).reply_for(message.key, message.reply_address, posted=None)

    async def on_posted(ts: str) -> None:
        raise RuntimeError("the inbox is out of reach")

    reply.on_posted = on_posted
    await reply.start()
    await reply.append("Short.")
    with pytest.raises(RuntimeError, match="out of reach"):
        await reply.finish()
