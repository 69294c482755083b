"""The core end to end: TurnHandler + ConversationsEngine + the real openai SDK against the fake OpenAI."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.runtime import Runtime, open_runtime
from bot.types import Attachment, AttachmentKind, IncomingMessage, PartKind, ThreadKey
from tests.fakes import media
from tests.fakes.openai_server import FakeOpenAI, Reply, audio_seconds
from tests.fakes.realtime import read_seconds
from tests.helpers import RecordingReply, make_settings

RuntimeFactory = Callable[..., Any]


@pytest.fixture
async def runtime_for(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[RuntimeFactory]:
    stack: list[Any] = []

    async def build(**overrides: Any) -> Runtime:
        base_url = overrides.pop("openai_base_url", fake_openai.base_url)
        cm = open_runtime(make_settings(tmp_path, base_url, **overrides))
        stack.append(cm)
        return await cm.__aenter__()

    yield build
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


def msg(text: str, thread: str = "t1", user: str = "U1", **kw: Any) -> IncomingMessage:
    return IncomingMessage(key=ThreadKey("test", "W1", "C1", thread), user_id=user, text=text, **kw)


async def turn(rt: Runtime, message: IncomingMessage) -> RecordingReply:
    reply = RecordingReply()
    submission = await rt.gateway.submit(message, reply)
    if submission.done is not None:
        await submission.done
    return reply


def bytes_attachment(
    kind: AttachmentKind, mime: str, name: str, data: bytes, calls: list[str] | None = None
) -> Attachment:
    async def fetch() -> bytes:
        if calls is not None:
            calls.append(name)
        return data

    return Attachment(kind, mime, name, len(data), fetch)


async def test_thread_maps_to_one_conversation_and_usage_is_recorded(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_for()
    fake_openai.script(Reply(text="Hello there, friend."))
    first = await turn(rt, msg("hello"))
    second = await turn(rt, msg("what did I just say?"))
    assert first.text == "Hello there, friend." and first.finished and first.failed is None
    assert "hello" in second.text, "the default fake answer quotes the earlier turn from the conversation"
    assert len(fake_openai.conversations) == 1
    (conv,) = fake_openai.conversations.values()
    assert conv.metadata == {"platform": "test", "workspace": "W1", "channel": "C1", "thread": "t1"}
    bodies = fake_openai.responses_for(conv.id)
    assert len(bodies) == 2 and all(b["stream"] is True and b["model"] == "gpt-6.2-sol" for b in bodies)
    assert all(b["instructions"] == rt.settings.instructions for b in bodies)
    assert bodies[1]["input"] == [
        {"role": "user", "content": [{"type": "input_text", "text": "what did I just say?"}]}
    ], "only the new message is sent; the server holds the history"
    rows = await rt.store.usage_rows()
    assert len(rows) == 2 and all(r.output_tokens > 0 and r.input_tokens > 0 for r in rows)
    assert rows[0].user == "U1" and rows[0].model == "gpt-6.2-sol"


async def test_text_streams_as_deltas_in_order(runtime_for: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await runtime_for()
    fake_openai.script(Reply(text="one two three four five six", chunk=3))
    reply = await turn(rt, msg("count"))
    deltas = [d for kind, d in reply.events if kind == "append"]
    assert len(deltas) >= 5 and "".join(map(str, deltas)) == "one two three four five six"
    kinds = [k for k, _ in reply.events]
    assert kinds[0] == "status" and kinds.index("start") < kinds.index("append") and kinds[-1] == "finish"


async def test_other_threads_get_their_own_conversations(runtime_for: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await runtime_for()
    await turn(rt, msg("secret plan for thread one", thread="a"))
    other = await turn(rt, msg("what did I just say?", thread="b"))
    assert "secret plan" not in other.text
    assert len(fake_openai.conversations) == 2


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(status=429), "rate limited"),
        (Reply(status=401), "API key was rejected"),
        (Reply(status=500), "server error"),
        (Reply(status=400), "rejected the request"),
        (Reply(end="failed"), "server error while answering"),
        (Reply(end="error"), "server error"),
        (Reply(text="a long answer that will be cut", cut_after=6), "dropped mid-answer"),
    ],
)
async def test_failures_become_short_specific_replies(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI, reply: Reply, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    rt = await runtime_for()
    fake_openai.script(reply)
    with caplog.at_level(logging.WARNING):
        failed = await turn(rt, msg("hi"))
    assert failed.failed is not None and expected in failed.failed
    assert "Traceback" not in failed.failed and "sk-test-secret" not in failed.failed and len(failed.failed) < 300
    assert "sk-test-secret" not in caplog.text
    assert caplog.records, "every failure leaves a log line"
    after = await turn(rt, msg("still there?"))
    assert after.failed is None and after.finished, "the next message is answered normally"


async def test_incomplete_answer_is_kept_and_marked(runtime_for: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await runtime_for()
    fake_openai.script(Reply(text="partial answer", end="incomplete"))
    reply = await turn(rt, msg("write a novel"))
    assert reply.text.startswith("partial answer") and "length limit" in reply.text and reply.finished


async def test_unreachable_openai_and_timeouts(runtime_for: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    closed = await runtime_for(openai_base_url="http://127.0.0.1:9/v1")
    reply = await turn(closed, msg("hi"))
    assert reply.failed is not None and "couldn't reach OpenAI" in reply.failed
    slow = await runtime_for(openai_timeout_secs=0.3)
    fake_openai.script(Reply(status=None, ttft=0), Reply(ttft=3.0))
    await turn(slow, msg("warm up"))
    reply = await turn(slow, msg("slow please"))
    assert reply.failed is not None and ("too long" in reply.failed or "dropped" in reply.failed)


async def test_lost_conversation_is_recreated_once_and_user_told(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_for()
    await turn(rt, msg("first"))
    (old,) = fake_openai.conversations
    fake_openai.forget_conversation(old)
    fake_openai.script(Reply(text="fresh start"))
    reply = await turn(rt, msg("second"))
    assert reply.failed is None and "earlier context" in reply.text and reply.text.endswith("fresh start")
    record = await rt.store.thread(msg("x").key)
    assert record is not None and record.conversation_id != old and record.conversation_id in fake_openai.conversations
    third = await turn(rt, msg("third"))
    assert "earlier context" not in third.text, "the new conversation is reused"


async def test_turns_in_one_thread_run_in_arrival_order(runtime_for: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await runtime_for()
    fake_openai.script(Reply(text="A", ttft=0.4), Reply(text="B", ttft=0.1), Reply(text="C", ttft=0))
    finished: list[str] = []
    futures = []
    for text in ("first", "second", "third"):
        reply = RecordingReply()
        done = (await rt.gateway.submit(msg(text), reply)).done
        assert done is not None
        done.add_done_callback(lambda _f, r=reply: finished.append(r.text))
        futures.append(done)
    await asyncio.gather(*futures)
    assert finished == ["A", "B", "C"]
    (conv,) = fake_openai.conversations.values()
    sent = [b["input"][0]["content"][0]["text"] for b in fake_openai.responses_for(conv.id)]
    assert sent == ["first", "second", "third"]


async def test_threads_run_concurrently_under_the_cap(runtime_for: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await runtime_for(max_concurrent_turns=2)
    fake_openai.script(*[Reply(text=f"r{i}", ttft=0.15) for i in range(6)])
    active = 0
    peak = 0

    class Counting(RecordingReply):
        async def set_status(self, status: str) -> None:
            nonlocal active, peak
            if not self.statuses:
                active += 1
                peak = max(peak, active)
            await super().set_status(status)

        async def finish(self) -> None:
            nonlocal active
            active -= 1
            await super().finish()

    futures = []
    for i in range(6):
        done = (await rt.gateway.submit(msg("go", thread=f"th{i}"), Counting())).done
        assert done is not None
        futures.append(done)
    await asyncio.gather(*futures)
    assert peak == 2, "two threads ran side by side, never more than the cap"


async def test_slow_turn_times_out_and_the_thread_goes_on(runtime_for: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await runtime_for(turn_timeout_secs=0.3)
    fake_openai.script(Reply(text="too slow", ttft=2.0), Reply(text="quick"))
    slow = RecordingReply()
    fast = RecordingReply()
    first = (await rt.gateway.submit(msg("slow"), slow)).done
    second = (await rt.gateway.submit(msg("fast"), fast)).done
    assert first is not None and second is not None
    await asyncio.gather(first, second)
    assert slow.failed is not None and "took longer than 0.3 seconds" in slow.failed
    assert fast.text == "quick" and fast.failed is None


async def test_a_crash_inside_a_turn_is_contained(
    runtime_for: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    rt = await runtime_for()

    async def broken_fetch() -> bytes:
        raise RuntimeError("adapter bug")

    bad = Attachment(AttachmentKind.DOCUMENT, "application/pdf", "a.pdf", 10, broken_fetch)
    with caplog.at_level(logging.ERROR):
        reply = await turn(rt, msg("read this", attachments=(bad,)))
    assert reply.failed is not None and reply.failed.startswith("Sorry, something went wrong on my side (ref ")
    assert "adapter bug" in caplog.text, "the log keeps the details the user doesn't see"
    assert (await turn(rt, msg("hello again"))).finished


async def test_duplicate_deliveries_are_dropped(runtime_for: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await runtime_for()
    first = (await rt.gateway.submit(msg("hi", dedupe_keys=("test:ev:1", "test:msg:C1:1")), RecordingReply())).done
    again = (await rt.gateway.submit(msg("hi", dedupe_keys=("test:ev:2", "test:msg:C1:1")), RecordingReply())).done
    assert first is not None and again is None
    await first
    assert len([r for r in fake_openai.requests if r.path == "/v1/responses"]) == 1


async def test_access_lists_are_checked_before_any_model_call(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_for(allowed_users=["alice"], allowed_channels=["C1"], allow_dms=False)
    denied = await turn(rt, msg("hi", user="mallory"))
    assert denied.failed is not None and "not on this bot's list" in denied.failed
    dm = await turn(rt, msg("hi", user="alice", is_dm=True))
    assert dm.failed is not None and "Direct messages are turned off" in dm.failed
    assert not [r for r in fake_openai.requests if r.path.startswith("/v1/responses")]
    assert not [r for r in fake_openai.requests if r.path.startswith("/v1/conversations")]
    assert not await rt.store.is_owned(msg("x").key), "a refused message never claims its thread"
    allowed = await turn(rt, msg("hi", user="alice"))
    assert allowed.finished and allowed.failed is None
    assert await rt.store.is_owned(msg("x").key), "an accepted message makes the thread the bot's"


async def test_images_are_uploaded_once_per_thread(runtime_for: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await runtime_for()
    png = media.png(64, 48, (200, 10, 10))
    image = bytes_attachment(AttachmentKind.IMAGE, "image/png", "red.png", png)
    await turn(rt, msg("what colour?", attachments=(image,)))
    await turn(rt, msg("and now?", attachments=(image,)))
    uploads = [r for r in fake_openai.requests if r.path == "/v1/files"]
    assert len(uploads) == 1, "the same bytes are never uploaded twice to one thread"
    (conv,) = fake_openai.conversations.values()
    parts = [b["input"][0]["content"] for b in fake_openai.responses_for(conv.id)]
    image_parts = [p for content in parts for p in content if p["type"] == "input_image"]
    assert len(image_parts) == 2 and image_parts[0]["file_id"] == image_parts[1]["file_id"]
    await turn(rt, msg("other thread", thread="t2", attachments=(image,)))
    assert len([r for r in fake_openai.requests if r.path == "/v1/files"]) == 2, "threads never share files"


async def test_bad_files_get_clear_replies(runtime_for: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await runtime_for(max_attachment_bytes=1000)
    fetched: list[str] = []
    big = bytes_attachment(AttachmentKind.DOCUMENT, "application/pdf", "big.pdf", b"x" * 5000, fetched)
    reply = await turn(rt, msg("read", attachments=(big,)))
    assert reply.failed is not None and "big.pdf" in reply.failed and "limit" in reply.failed
    assert fetched == [], "size is checked before any download"
    broken = bytes_attachment(AttachmentKind.IMAGE, "image/png", "broken.png", media.corrupt(media.png(20, 20))[:500])
    reply = await turn(rt, msg("look", attachments=(broken,)))
    assert reply.failed is not None and "couldn't read broken.png as an image" in reply.failed
    assert not [r for r in fake_openai.requests if r.path == "/v1/responses"]


async def test_voice_note_is_transcribed_and_answered_with_speech(
    runtime_for: RuntimeFactory, fake_openai: FakeOpenAI
) -> None:
    rt = await runtime_for()
    fake_openai.transcript = "please summarise the meeting"
    fake_openai.script(Reply(text="Here is the summary."))
    voice = bytes_attachment(AttachmentKind.VOICE, "audio/ogg", "voice-message.ogg", media.ogg_opus_voice(1.0))
    reply = await turn(rt, msg("", attachments=(voice,)))
    assert reply.failed is None and reply.text.startswith("Here is the summary.")
    (conv,) = fake_openai.conversations.values()
    (body,) = fake_openai.responses_for(conv.id)
    assert "please summarise the meeting" in body["input"][0]["content"][0]["text"]
    audio = [f for f in reply.files if f.kind is PartKind.AUDIO]
    assert len(audio) == 1 and audio[0].mime == "audio/ogg" and audio[0].data[:4] == b"OggS"
    expected = read_seconds("Here is the summary.", fake_openai.realtime.chars_per_second)
    assert audio_seconds(audio[0].data) == pytest.approx(expected, abs=0.1)
    assert audio[0].duration_secs == pytest.approx(expected, abs=0.1)
    assert fake_openai.realtime.models == ["gpt-realtime-2.1-mini"], "spoken through the Realtime API by default"
    (asked,) = fake_openai.realtime.of_type("response.create")
    assert asked["response"]["conversation"] == "none" and "Here is the summary." in json.dumps(asked)
    assert not [r for r in fake_openai.requests if r.path == "/v1/audio/speech"]


async def test_generated_image_is_attached(runtime_for: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    import base64

    rt = await runtime_for(tools=["image_generation"])
    fake_openai.script(Reply(text="Here you go.", image_b64=base64.b64encode(media.png(32, 32, (0, 0, 255))).decode()))
    reply = await turn(rt, msg("draw a blue square"))
    images = [f for f in reply.files if f.kind is PartKind.IMAGE]
    assert len(images) == 1 and images[0].data.startswith(b"\x89PNG")
    assert "drawing…" in reply.statuses
    (conv,) = fake_openai.conversations.values()
    (body,) = fake_openai.responses_for(conv.id)
    assert body["tools"][0]["type"] == "image_generation" and body["tools"][0]["model"] == "gpt-image-2.6-sunburst"


async def test_code_interpreter_files_are_attached(runtime_for: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await runtime_for(tools=["code_interpreter"])
    chart = media.png(50, 30, (0, 128, 0))
    fake_openai.script(Reply(text="Chart attached.", container_file=("cntr_1", "cfile_1", "chart.png", chart)))
    reply = await turn(rt, msg("plot it"))
    assert "running code…" in reply.statuses
    assert [(step.title, step.done) for step in reply.steps] == [("Running code", False), ("Running code", True)]
    assert reply.steps[0].id == reply.steps[1].id, "one step, started then finished"
    assert [f.data for f in reply.files] == [chart]


async def test_sdk_retries_a_429_before_telling_the_user(runtime_for: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    rt = await runtime_for(openai_max_retries=1)
    fake_openai.script(Reply(status=429), Reply(text="answered after one retry"))
    reply = await turn(rt, msg("hi"))
    assert reply.failed is None and reply.text == "answered after one retry"
    fake_openai.script(Reply(status=429), Reply(status=429))
    reply = await turn(rt, msg("again"))
    assert reply.failed is not None and "rate limited" in reply.failed


async def test_heic_and_bmp_photos_are_converted_to_png(runtime_for: RuntimeFactory, fake_openai: FakeOpenAI) -> None:
    import io

    from PIL import Image
    from pillow_heif import register_heif_opener

    register_heif_opener()
    rt = await runtime_for()
    photos = []
    for fmt, name, colour in (("HEIF", "IMG_0001.heic", (250, 120, 0)), ("BMP", "scan.bmp", (0, 90, 200))):
        out = io.BytesIO()
        Image.new("RGB", (40, 30), colour).save(out, format=fmt)
        photos.append(bytes_attachment(AttachmentKind.IMAGE, "image/heic", name, out.getvalue()))
    reply = await turn(rt, msg("what are these?", attachments=tuple(photos)))
    assert reply.failed is None
    uploads = [r for r in fake_openai.requests if r.path == "/v1/files"]
    assert [u.form["file"].filename for u in uploads] == ["IMG_0001.png", "scan.png"]
    assert all(u.form["file"].data.startswith(b"\x89PNG") for u in uploads)
