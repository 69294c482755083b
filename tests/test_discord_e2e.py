"""The Discord adapter end to end: the real discord.py against the fake Discord (REST + websocket gateway), the
real core and openai SDK against the fake OpenAI."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from adapters.discord import DiscordSettings, build, doctor_checks
from adapters.discord.adapter import DiscordAdapter
from adapters.discord.convert import guild_key
from bot.errors import StartupError
from bot.media import audio_duration
from bot.runtime import Runtime, open_runtime
from tests.fakes import media
from tests.fakes.discord_server import VOICE_MESSAGE_FLAG, FakeDiscord
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.realtime import read_seconds
from tests.helpers import split_settings, stop_adapter


@dataclass
class RunningBot:
    adapter: DiscordAdapter
    runtime: Runtime
    task: asyncio.Task[None]
    stack: AsyncExitStack
    stopped: bool = False

    async def idle(self) -> None:
        await self.runtime.gateway.wait_idle()

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        await stop_adapter(self.adapter, self.task, self.runtime, self.stack)


class Harness:
    """Starts the Discord adapter on a fresh runtime (same database each time, so restarts are real)."""

    def __init__(self, tmp_path: Path, discord: FakeDiscord, openai: FakeOpenAI) -> None:
        self.tmp_path, self.discord, self.openai = tmp_path, discord, openai
        self.bots: list[RunningBot] = []

    def settings(self, **overrides: Any) -> Any:
        values: dict[str, Any] = {
            "discord_bot_token": self.discord.token,
            "discord_api_base": self.discord.api_base,
            "discord_gateway_url": self.discord.gateway_url,
            "discord_guild_ready_timeout_secs": 0.05,
            "discord_ack_reaction": "",
        }
        values.update(overrides)
        return split_settings(self.tmp_path, self.openai.base_url, DiscordSettings, **values)

    async def start(self, **overrides: Any) -> RunningBot:
        stack = AsyncExitStack()
        core, section = self.settings(**overrides)
        runtime = await stack.enter_async_context(open_runtime(core))
        adapter = build(runtime.gateway, section)
        task = asyncio.create_task(adapter.run())
        ready = asyncio.create_task(adapter.ready.wait())
        await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            await stack.aclose()
            task.result()
        assert adapter.ready.is_set(), "the adapter did not get ready"
        bot = RunningBot(adapter, runtime, task, stack)
        self.bots.append(bot)
        return bot

    async def close(self) -> None:
        for bot in self.bots:
            await bot.stop()


@pytest.fixture
async def harness(tmp_path: Path, fake_discord: FakeDiscord, fake_openai: FakeOpenAI) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, fake_discord, fake_openai)
    yield h
    await h.close()


def thread_of(fake: FakeDiscord, index: int = -1) -> int:
    return int(fake.threads_created[index]["id"])


async def answered(fake: FakeDiscord, bot: RunningBot, channel_id: int, text: str) -> None:
    """Wait until the bot's messages in the channel hold ``text`` and its turns are done."""
    await fake.wait_for(lambda: text in fake.text_in(channel_id), 15, f"{text!r} in channel {channel_id}")
    await bot.idle()


def fences_balanced(text: str) -> bool:
    return sum(1 for line in text.split("\n") if line.strip().startswith("```")) % 2 == 0


# --- 9.1 mention → thread → streamed edits → final text -----------------------------------------------------
async def test_mention_creates_a_thread_then_streams_edits_then_the_final_text(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start(discord_ack_reaction="👀", discord_typing_interval_secs=0.2)
    answer = " ".join(f"word{i}" for i in range(60))
    fake_openai.script(Reply(text=answer, ttft=0.6, token_interval=0.04, chunk=12))
    asked = await fake_discord.user_message(
        fake_discord.channel_id, "How do plants turn light into sugar?", mention_bot=True
    )
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    thread = fake_discord.threads_created[0]
    tid = int(thread["id"])
    assert tid == int(asked["id"]) and thread["parent_id"] == str(fake_discord.channel_id)
    assert thread["name"] == "How do plants turn light into sugar?"
    await answered(fake_discord, bot, tid, answer)

    writes = fake_discord.writes_in(tid)
    assert writes[0].kind == "send" and answer.startswith(writes[0].content or "")
    assert len(writes[0].content or "") < len(answer), "the first part is posted before the answer is complete"
    assert [w.kind for w in writes[1:]] == ["edit"] * (len(writes) - 1) and len(writes) >= 2
    gaps = [b.at - a.at for a, b in itertools.pairwise(writes)]
    assert min(gaps) >= 0.95, f"edits of one message at least 1 s apart, got {gaps}"
    assert len(writes) < len(answer) / 12 / 4, "text is coalesced, not one edit per delta"
    assert fake_discord.bot_messages_in(tid)[0]["content"] == answer
    assert fake_discord.bot_messages_in(fake_discord.channel_id) == [], "nothing is posted in the channel itself"

    key = guild_key(fake_discord.guild_id, fake_discord.channel_id, tid)
    assert await bot.runtime.store.is_owned(key)
    (conv,) = fake_openai.conversations.values()
    assert conv.metadata["thread"] == str(tid)
    (body,) = fake_openai.responses_for(conv.id)
    assert body["input"][0]["content"][0]["text"] == "How do plants turn light into sugar?", "mention stripped"

    typing = [at for cid, at in fake_discord.typing if cid == tid]
    assert len(typing) >= 2 and typing[0] < writes[0].at, "typing shows while the model thinks"
    count = len(fake_discord.typing)
    await asyncio.sleep(0.5)
    assert len(fake_discord.typing) == count, "typing stops when the answer is finished"
    answer_id = int(fake_discord.bot_messages_in(tid)[-1]["id"])
    await fake_discord.wait_for(lambda: len(fake_discord.reactions) == 3, 5, "the feedback reactions")
    assert fake_discord.reactions == [
        (fake_discord.channel_id, int(asked["id"]), "👀"),
        (tid, answer_id, "👍"),
        (tid, answer_id, "👎"),
    ], "taken on, then the finished answer offers feedback"


# --- 9.2 follow-ups after a restart -------------------------------------------------------------------------
async def test_follow_up_in_an_owned_thread_after_a_restart_needs_no_mention(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    fake_openai.script(Reply(text="Photosynthesis."))
    await fake_discord.user_message(fake_discord.channel_id, "what do plants do?", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await answered(fake_discord, bot, tid, "Photosynthesis.")
    await bot.stop()

    bot = await harness.start()  # a new process, as far as discord.py and the core can tell
    fake_openai.script(Reply(text="Chlorophyll absorbs light."))
    await fake_discord.user_message(tid, "and how?")
    await answered(fake_discord, bot, tid, "Chlorophyll absorbs light.")
    (conv,) = fake_openai.conversations.values()
    bodies = fake_openai.responses_for(conv.id)
    assert [b["input"][0]["content"][0]["text"] for b in bodies] == ["what do plants do?", "and how?"]


async def test_mention_in_someone_elses_thread_makes_it_a_conversation_that_survives_restarts(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    tid = fake_discord.add_thread(owner_id=int(fake_discord.alice["id"]), name="alice's thread")
    bot = await harness.start()
    await fake_discord.user_message(tid, "just chatting among humans")
    fake_openai.script(Reply(text="Hello, thread."))
    await fake_discord.user_message(tid, "what do you think?", mention_bot=True)
    await answered(fake_discord, bot, tid, "Hello, thread.")
    assert len(fake_openai.responses_for(next(iter(fake_openai.conversations)))) == 1, "unmentioned msg ignored"
    assert fake_discord.threads_created == [], "no new thread inside a thread"
    await bot.stop()

    bot = await harness.start()
    fake_openai.script(Reply(text="Still here."))
    await fake_discord.user_message(tid, "follow-up without a mention")
    await answered(fake_discord, bot, tid, "Still here.")
    assert len(fake_openai.conversations) == 1


# --- 9.3 DMs ------------------------------------------------------------------------------------------------
async def test_dm_is_answered_as_one_conversation_until_reset(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    dm = fake_discord.dm_channel(fake_discord.alice)
    fake_openai.script(Reply(text="Hi Alice."), Reply(text="You said hi."), Reply(text="Fresh start."))
    await fake_discord.user_message(dm, "hi")
    await answered(fake_discord, bot, dm, "Hi Alice.")
    await fake_discord.user_message(dm, "what did I say?")
    await answered(fake_discord, bot, dm, "You said hi.")
    assert len(fake_openai.conversations) == 1
    await fake_discord.user_message(dm, "/reset")
    await answered(fake_discord, bot, dm, "starts a new conversation")
    await fake_discord.user_message(dm, "hello again")
    await answered(fake_discord, bot, dm, "Fresh start.")
    assert len(fake_openai.conversations) == 2
    assert fake_discord.threads_created == []


async def test_bots_itself_and_unmentioned_channel_messages_are_ignored(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    await fake_discord.user_message(fake_discord.channel_id, "hey", author=fake_discord.other_bot, mention_bot=True)
    await fake_discord.user_message(fake_discord.channel_id, "talking to myself", author=fake_discord.bot_user)
    await fake_discord.user_message(fake_discord.channel_id, "no mention here")
    dm = fake_discord.dm_channel(fake_discord.bob)
    fake_openai.script(Reply(text="sentinel answer"))
    await fake_discord.user_message(dm, "sentinel", author=fake_discord.bob)
    await answered(fake_discord, bot, dm, "sentinel answer")
    assert fake_discord.threads_created == []
    assert len([r for r in fake_openai.requests if r.path == "/v1/responses"]) == 1


# --- 9.4 long answers ---------------------------------------------------------------------------------------
async def test_a_5000_character_answer_is_split_across_messages_without_breaking_code(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    paragraphs = [f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 12 for i in range(12)]
    code = "```python\n" + "\n".join(f"print('line {i}')" for i in range(80)) + "\n```"
    answer = "\n\n".join([*paragraphs[:6], code, *paragraphs[6:]])
    assert 5000 < len(answer) < 6000 and 1000 < len(code) < 2000
    fake_openai.script(Reply(text=answer, chunk=200))
    await fake_discord.user_message(fake_discord.channel_id, "write a lot", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await answered(fake_discord, bot, tid, "Paragraph 11")
    contents = [m["content"] for m in fake_discord.bot_messages_in(tid)]
    assert len(contents) >= 3 and all(len(c) <= 2000 for c in contents)
    assert all(fences_balanced(c) for c in contents), "every message renders its code block whole"
    assert "\n\n".join(contents) == answer
    assert fake_discord.rate_limited == 0


# --- 9.5 throttle -------------------------------------------------------------------------------------------
async def test_fast_stream_keeps_to_5_writes_per_5_seconds_per_channel_with_no_429(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    assert fake_discord.rate_limit == (5, 5.0), "the fake enforces Discord's observed limit"
    bot = await harness.start()  # real limits: 5 writes / 5 s per channel, edits 1 s apart
    answer = "\n\n".join(f"Part {i}. " + "fast words streaming by " * 20 for i in range(18))
    assert len(answer) > 8000
    fake_openai.script(Reply(text=answer, chunk=40, token_interval=0.005))
    await fake_discord.user_message(fake_discord.channel_id, "go fast", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await answered(fake_discord, bot, tid, "Part 17.")
    assert fake_discord.rate_limited == 0
    assert fake_discord.max_writes_in_window(tid, 5.0) <= 5
    assert len(fake_discord.writes_in(tid)) > 5, "the answer needed more than one window of writes"
    assert "\n\n".join(m["content"] for m in fake_discord.bot_messages_in(tid)) == answer


async def test_discordpy_retries_after_a_429_so_the_answer_still_arrives(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake_discord.rate_limit = (2, 0.3)  # stricter than our throttle is told: Discord answers 429
    bot = await harness.start(discord_channel_max_writes=50, discord_edit_interval_secs=0.05)
    answer = "\n\n".join(f"Block {i}. " + "text " * 300 for i in range(4))
    fake_openai.script(Reply(text=answer, chunk=300, token_interval=0.01))
    await fake_discord.user_message(fake_discord.channel_id, "go", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await answered(fake_discord, bot, tid, "Block 3.")
    assert fake_discord.rate_limited >= 1
    assert "\n\n".join(m["content"] for m in fake_discord.bot_messages_in(tid)) == answer


# --- 9.6 exactly one answer ---------------------------------------------------------------------------------
async def test_message_create_replayed_after_a_resume_gets_one_answer(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    fake_openai.script(Reply(text="The one and only answer."), Reply(text="sentinel answer"))
    asked = await fake_discord.user_message(fake_discord.channel_id, "answer once", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await answered(fake_discord, bot, tid, "The one and only answer.")

    resumed = asyncio.Event()
    bot.adapter.client.event(_set_on_resumed(resumed))
    await fake_discord.force_resume(replay=[("MESSAGE_CREATE", asked)])
    await asyncio.wait_for(resumed.wait(), 10)
    assert len(fake_discord.resumes) == 1 and len(fake_discord.identifies) == 1, "a real RESUME, no new session"
    dm = fake_discord.dm_channel(fake_discord.alice)
    await fake_discord.user_message(dm, "sentinel")
    await answered(fake_discord, bot, dm, "sentinel answer")

    assert len(fake_discord.threads_created) == 1
    assert [m["content"] for m in fake_discord.bot_messages_in(tid)] == ["The one and only answer."]
    assert len([r for r in fake_openai.requests if r.path == "/v1/responses"]) == 2


def _set_on_resumed(event: asyncio.Event) -> Any:
    async def on_resumed() -> None:
        event.set()

    return on_resumed


# --- 9.7 missing intent -------------------------------------------------------------------------------------
async def test_missing_message_content_intent_fails_start_with_a_clear_message(
    harness: Harness, fake_discord: FakeDiscord
) -> None:
    fake_discord.message_content_intent = False
    with pytest.raises(StartupError) as failure:
        await harness.start()
    message = str(failure.value)
    assert "Bot → Privileged Gateway Intents → Message Content Intent" in message
    assert "Traceback" not in message and len(message) < 400
    assert fake_discord.identifies and fake_discord.identifies[0]["intents"] & (1 << 15)


# --- 9.8 / 9.9 voice ----------------------------------------------------------------------------------------
def voice_note(fake: FakeDiscord, seconds: float = 1.5) -> dict[str, Any]:
    waveform = base64.b64encode(bytes(range(0, 250, 10))).decode()
    data = media.ogg_opus_voice(seconds)
    return fake.attachment(data, "voice-message.ogg", "audio/ogg", duration_secs=seconds, waveform=waveform)


async def test_voice_message_attachment_is_normalized_as_a_voice_note(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start(voice_replies="never")
    fake_openai.transcript = "remind me to water the plants"
    fake_openai.script(Reply(text="I will remind you."))
    dm = fake_discord.dm_channel(fake_discord.alice)
    await fake_discord.user_message(dm, "", attachments=[voice_note(fake_discord)], flags=VOICE_MESSAGE_FLAG)
    await answered(fake_discord, bot, dm, "I will remind you.")
    assert len(fake_discord.cdn_hits) == 1, "downloaded once, lazily, through discord.py's Attachment.read"
    transcriptions = [r for r in fake_openai.requests if r.path == "/v1/audio/transcriptions"]
    assert len(transcriptions) == 1
    (conv,) = fake_openai.conversations.values()
    (body,) = fake_openai.responses_for(conv.id)
    texts = [part["text"] for part in body["input"][0]["content"] if part["type"] == "input_text"]
    assert any(t.startswith("[Voice note, transcribed]: remind me to water the plants") for t in texts)


async def test_audio_reply_is_sent_as_a_native_voice_message(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start(voice_replies="always")
    fake_openai.script(Reply(text="Here is your spoken answer."))
    dm = fake_discord.dm_channel(fake_discord.alice)
    await fake_discord.user_message(dm, "say something")
    await fake_discord.wait_for(lambda: any(w.flags & VOICE_MESSAGE_FLAG for w in fake_discord.writes), 15, "voice")
    await bot.idle()
    (voice,) = [w for w in fake_discord.writes_in(dm) if w.flags & VOICE_MESSAGE_FLAG]
    assert voice.flags == 8192 and not voice.content
    (meta,) = voice.attachments
    (upload,) = voice.files
    assert meta["id"] == 0 and meta["filename"] == "voice-message.ogg" == upload.filename
    assert upload.content_type == "audio/ogg" and upload.data[:4] == b"OggS"
    assert meta["duration_secs"] == pytest.approx(audio_duration(upload.data), abs=0.05)
    expected = read_seconds("Here is your spoken answer.", fake_openai.realtime.chars_per_second)
    assert audio_duration(upload.data) == pytest.approx(expected, abs=0.1), "the whole answer, read aloud"
    assert fake_openai.realtime.connections == 1, "spoken through the Realtime API"
    samples = base64.b64decode(meta["waveform"])
    assert 1 <= len(samples) <= 256 and max(samples) > 0
    text_first = fake_discord.writes_in(dm)[0]
    assert text_first.content == "Here is your spoken answer.", "the text comes first, then the voice message"


async def test_refused_voice_message_falls_back_to_a_plain_audio_file(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake_discord.voice_messages_allowed = False
    bot = await harness.start(voice_replies="always")
    fake_openai.script(Reply(text="Spoken, sort of."))
    dm = fake_discord.dm_channel(fake_discord.alice)
    await fake_discord.user_message(dm, "say something")
    await fake_discord.wait_for(lambda: any(w.files for w in fake_discord.writes), 15, "an audio file")
    await bot.idle()
    (sent,) = [w for w in fake_discord.writes_in(dm) if w.files]
    assert sent.flags == 0 and sent.files[0].filename == "reply.ogg" and sent.files[0].data[:4] == b"OggS"


# --- attachments in, files out ------------------------------------------------------------------------------
async def test_image_attachment_reaches_the_model(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    fake_openai.script(Reply(text="A red square."))
    image = fake_discord.attachment(media.png(16, 16), "square.png", "image/png")
    await fake_discord.user_message(fake_discord.channel_id, "what is this?", mention_bot=True, attachments=[image])
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    await answered(fake_discord, bot, thread_of(fake_discord), "A red square.")
    (conv,) = fake_openai.conversations.values()
    (body,) = fake_openai.responses_for(conv.id)
    assert [p["type"] for p in body["input"][0]["content"]] == ["input_text", "input_image"]


async def test_attachment_over_the_limit_gets_a_clear_reply_and_is_never_downloaded(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start(max_attachment_bytes=1024 * 1024)
    big = fake_discord.attachment(b"%PDF-1.4 small", "report.pdf", "application/pdf", size=3 * 1024 * 1024)
    await fake_discord.user_message(fake_discord.channel_id, "summarise", mention_bot=True, attachments=[big])
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await answered(fake_discord, bot, tid, "report.pdf is")
    assert fake_discord.text_in(tid) == "⚠️ report.pdf is 3.0 MB; the limit is 1.0 MB."
    assert fake_discord.cdn_hits == []
    assert not [r for r in fake_openai.requests if r.path == "/v1/responses"]


async def test_generated_files_are_uploaded_and_one_over_the_guild_limit_becomes_a_note(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start(tools=["image_generation", "code_interpreter"])
    png = media.png(24, 24, (0, 0, 255))
    big = b"\0" * (12 * 1024 * 1024)
    fake_openai.script(
        Reply(text="Here you go.", image_b64=base64.b64encode(png).decode()),
        Reply(text="Data attached.", container_file=("cntr_1", "cfile_1", "data.bin", big)),
    )
    await fake_discord.user_message(fake_discord.channel_id, "draw a blue square", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await fake_discord.wait_for(lambda: any(w.files for w in fake_discord.writes_in(tid)), 15, "an image")
    await bot.idle()
    (sent,) = [w for w in fake_discord.writes_in(tid) if w.files]
    assert sent.files[0].data == png and sent.files[0].filename.endswith(".png")
    await fake_discord.user_message(tid, "now the data")
    await answered(fake_discord, bot, tid, "over the 10.0 MB upload limit")
    assert "data.bin is 12.0 MB" in fake_discord.text_in(tid)
    assert len([w for w in fake_discord.writes_in(tid) if w.files]) == 1, "the big file was not uploaded"


# --- access -------------------------------------------------------------------------------------------------
async def test_refused_user_gets_a_reply_in_the_channel_and_no_thread(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start(allowed_users=[fake_discord.bob["id"]])
    asked = await fake_discord.user_message(fake_discord.channel_id, "let me in", mention_bot=True)
    await answered(fake_discord, bot, fake_discord.channel_id, "not on this bot's list")
    (reply,) = fake_discord.bot_messages_in(fake_discord.channel_id)
    assert reply["type"] == 19, "a reply to the message"
    assert fake_discord.threads_created == [] and not fake_openai.requests
    assert asked["id"]


# --- slash commands -----------------------------------------------------------------------------------------
async def test_slash_commands_register_per_guild_and_ask_reset_model_usage_work(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start(discord_command_guilds=[str(fake_discord.guild_id)])
    ((scope, commands),) = fake_discord.command_puts
    assert scope == str(fake_discord.guild_id)
    assert sorted(c["name"] for c in commands) == [
        "access",
        "ask",
        "budget",
        "imagine",
        "model",
        "reset",
        "stop",
        "usage",
        "voice",
    ]

    fake_openai.script(Reply(text="Because of Rayleigh scattering."), Reply(text="New conversation here."))
    await fake_discord.slash("ask", [{"name": "prompt", "type": 3, "value": "Why is the sky blue?"}])
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    assert fake_discord.threads_created[0]["name"] == "Why is the sky blue?"
    await answered(fake_discord, bot, tid, "Because of Rayleigh scattering.")
    assert fake_discord.interaction_callbacks[0]["data"]["content"] == "**Alice** asked: Why is the sky blue?"

    await fake_discord.slash("model", [{"name": "name", "type": 3, "value": "gpt-6-luna"}], channel_id=tid)
    await fake_discord.slash("reset", [], channel_id=tid)
    await fake_discord.slash("usage", [], channel_id=tid)
    await fake_discord.slash("voice", [{"name": "state", "type": 3, "value": "on"}], channel_id=tid)
    await fake_discord.wait_for(lambda: len(fake_discord.interaction_callbacks) == 5, 5, "command answers")
    answers = [cb["data"]["content"] for cb in fake_discord.interaction_callbacks[1:]]
    assert answers[0] == "This channel now uses `gpt-6-luna` for new turns."
    assert answers[1].startswith("Done: the next message here starts a new conversation")
    assert answers[2].startswith("This month you used") and "over 1 turns" in answers[2]
    assert answers[3] == "Spoken replies are on in this thread."
    assert all(cb["data"]["flags"] == 64 for cb in fake_discord.interaction_callbacks[1:]), "ephemeral"

    await fake_discord.user_message(tid, "hello after reset")
    await answered(fake_discord, bot, tid, "New conversation here.")
    assert len(fake_openai.conversations) == 2
    last = fake_openai.responses_for(list(fake_openai.conversations)[-1])[-1]
    assert last["model"] == "gpt-6-luna"


async def test_slash_commands_register_globally_without_guild_ids(harness: Harness, fake_discord: FakeDiscord) -> None:
    await harness.start()
    ((scope, commands),) = fake_discord.command_puts
    assert scope == "global" and len(commands) == 9
    await fake_discord.slash("reset", [])
    await fake_discord.wait_for(lambda: fake_discord.interaction_callbacks, 5, "an answer")
    assert "inside one of my threads" in fake_discord.interaction_callbacks[0]["data"]["content"]


# --- sharding, gateway proxy, doctor ------------------------------------------------------------------------
async def test_auto_sharded_client_keeps_the_configured_gateway_and_answers(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake_discord.bot_gateway_url = "ws://127.0.0.1:9/not-the-configured-gateway"
    bot = await harness.start(discord_sharded=True)
    assert fake_discord.identifies[0]["shard"] == [0, 1]
    fake_openai.script(Reply(text="Sharded hello."))
    await fake_discord.user_message(fake_discord.channel_id, "hi shards", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    await answered(fake_discord, bot, thread_of(fake_discord), "Sharded hello.")


async def test_doctor_checks_token_and_intent(harness: Harness, fake_discord: FakeDiscord) -> None:
    async def checks(**overrides: Any) -> list[tuple[bool, str]]:
        core, section = harness.settings(**overrides)
        async with open_runtime(core) as runtime:
            return await doctor_checks(runtime.gateway, section)

    good = await checks()
    assert all(ok for ok, _ in good) and any("Message Content intent is enabled" in line for _, line in good)
    fake_discord.message_content_intent = False
    off = await checks()
    assert [ok for ok, _ in off][:2] == [True, False]
    assert "Bot → Privileged Gateway Intents → Message Content Intent" in off[1][1]
    bad = await checks(discord_bot_token="wrong-token")
    assert bad == [(False, bad[0][1])] and "rejected DISCORD_BOT_TOKEN" in bad[0][1]
    assert "wrong-token" not in bad[0][1]


# --- less common places ----------------------------------------------------------------------------------
async def test_a_thread_discordpy_has_not_cached_is_looked_up_and_answered(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    tid = fake_discord.add_thread(owner_id=int(fake_discord.bob["id"]))  # appeared while we were not told
    fake_openai.script(Reply(text="Found your thread."))
    await fake_discord.user_message(tid, "over here", mention_bot=True)
    await answered(fake_discord, bot, tid, "Found your thread.")
    assert ("GET", f"channels/{tid}") in fake_discord.rest_log


async def test_mention_in_a_voice_channels_text_chat_is_answered_in_place(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    fake_openai.script(Reply(text="Answered in the lounge."))
    await fake_discord.user_message(fake_discord.voice_channel_id, "hello lounge", mention_bot=True)
    await answered(fake_discord, bot, fake_discord.voice_channel_id, "Answered in the lounge.")
    assert fake_discord.threads_created == []


async def test_without_thread_permission_the_answer_goes_to_the_channel(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake_discord.threads_allowed = False
    bot = await harness.start()
    fake_openai.script(Reply(text="No thread, still an answer."))
    await fake_discord.user_message(fake_discord.channel_id, "hi", mention_bot=True)
    await answered(fake_discord, bot, fake_discord.channel_id, "No thread, still an answer.")
    assert fake_discord.threads_created == []


async def test_slash_imagine_draws_in_a_thread_with_size_and_quality_and_a_reply_edits_it(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    options = [
        {"name": "prompt", "type": 3, "value": "a red bicycle"},
        {"name": "size", "type": 3, "value": "1536x1024"},
        {"name": "quality", "type": 3, "value": "low"},
    ]
    await fake_discord.slash("imagine", options)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await answered(fake_discord, bot, tid, "🎨 a red bicycle")
    (drawn,) = [f for w in fake_discord.writes_in(tid) for f in w.files]
    assert drawn.filename == "image.png" and Image.open(io.BytesIO(drawn.data)).size == (1536, 1024)
    (request,) = [r for r in fake_openai.requests if r.path == "/v1/images/generations"]
    assert request.json["size"] == "1536x1024" and request.json["quality"] == "low"

    await fake_discord.user_message(tid, "now make it blue")
    await answered(fake_discord, bot, tid, "🎨 now make it blue")
    (edit,) = [r for r in fake_openai.requests if r.path == "/v1/images/edits"]
    assert edit.form["image"].data == drawn.data, "the thread's image is the one edited"
    assert not fake_openai.responses_for(next(iter(fake_openai.conversations))), "no text turn was needed"


async def test_ask_in_a_dm_with_a_file_answers_below_it(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    dm = fake_discord.dm_channel(fake_discord.alice)
    image = fake_discord.attachment(media.png(12, 12), "photo.png", "image/png")
    fake_openai.script(Reply(text="A tiny red picture."))
    await fake_discord.slash(
        "ask",
        [{"name": "prompt", "type": 3, "value": "what is in it?"}, {"name": "file", "type": 11, "value": image["id"]}],
        channel_id=dm,
        resolved={"attachments": {image["id"]: image}},
    )
    await answered(fake_discord, bot, dm, "A tiny red picture.")
    assert fake_discord.threads_created == []
    (conv,) = fake_openai.conversations.values()
    assert conv.metadata["workspace"] == "dm"
    (body,) = fake_openai.responses_for(conv.id)
    assert [p["type"] for p in body["input"][0]["content"]] == ["input_text", "input_image"]


async def test_closing_lets_an_answer_in_progress_finish(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    fake_openai.script(Reply(text="Finished despite the shutdown.", ttft=0.5))
    await fake_discord.user_message(fake_discord.channel_id, "slow one", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    await bot.stop()
    assert fake_discord.text_in(thread_of(fake_discord)) == "Finished despite the shutdown."


async def test_a_refused_mention_in_someone_elses_thread_does_not_claim_it(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    tid = fake_discord.add_thread(owner_id=int(fake_discord.alice["id"]))
    bot = await harness.start(allowed_users=[fake_discord.bob["id"]])
    await fake_discord.user_message(tid, "answer me", mention_bot=True)
    await answered(fake_discord, bot, tid, "not on this bot's list")
    assert not await bot.runtime.store.is_owned(guild_key(fake_discord.guild_id, fake_discord.channel_id, tid))
    dm = fake_discord.dm_channel(fake_discord.bob)
    fake_openai.script(Reply(text="sentinel answer"))
    await fake_discord.user_message(tid, "bob talking without a mention", author=fake_discord.bob)
    await fake_discord.user_message(dm, "sentinel", author=fake_discord.bob)
    await answered(fake_discord, bot, dm, "sentinel answer")
    assert len([r for r in fake_openai.requests if r.path == "/v1/responses"]) == 1


async def test_allowed_roles_come_from_the_members_discord_roles(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start(allowed_roles=[str(fake_discord.helper_role_id)])
    fake_openai.script(Reply(text="Hello, helper."))
    await fake_discord.user_message(fake_discord.channel_id, "no role", mention_bot=True)
    await answered(fake_discord, bot, fake_discord.channel_id, "not on this bot's list")
    helper = [str(fake_discord.helper_role_id)]
    await fake_discord.user_message(fake_discord.channel_id, "with role", mention_bot=True, roles=helper)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    await answered(fake_discord, bot, thread_of(fake_discord), "Hello, helper.")


# --- messages as Discord really sends them: forwards, replies, stickers, mentions ---------------------------------
def model_texts(fake_openai: FakeOpenAI) -> list[str]:
    """The text the model got in each turn, in order, over every conversation."""
    bodies = [b for conv in fake_openai.conversations for b in fake_openai.responses_for(conv)]
    return ["".join(p.get("text", "") for p in b["input"][0]["content"] if p["type"] == "input_text") for b in bodies]


def model_parts(fake_openai: FakeOpenAI) -> list[list[str]]:
    bodies = [b for conv in fake_openai.conversations for b in fake_openai.responses_for(conv)]
    return [[p["type"] for p in b["input"][0]["content"]] for b in bodies]


async def test_a_forwarded_message_is_answered_with_its_text_and_attachments(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    elsewhere = fake_discord.message_payload(
        fake_discord.channel_id,
        "The launch moved to Thursday.",
        author=fake_discord.bob,
        attachments=[fake_discord.attachment(media.png(8, 8), "plan.png", "image/png")],
    )
    dm = fake_discord.dm_channel(fake_discord.alice)
    fake_openai.script(Reply(text="Thursday it is."))
    await fake_discord.user_message(dm, "", forward=elsewhere)
    await answered(fake_discord, bot, dm, "Thursday it is.")
    assert model_texts(fake_openai) == ["[forwarded] The launch moved to Thursday."]
    assert model_parts(fake_openai) == [["input_text", "input_image"]], "the forwarded image goes along"


async def test_a_reply_brings_the_message_it_answers_once(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    fake_openai.script(Reply(text="It is at 3 pm now."), Reply(text="Because the room was taken."))
    picture = fake_discord.attachment(media.png(8, 8), "room.png", "image/png")
    bobs = await fake_discord.user_message(
        fake_discord.channel_id, "The meeting moved to 3pm.", author=fake_discord.bob, attachments=[picture]
    )
    await fake_discord.user_message(fake_discord.channel_id, "when is it?", mention_bot=True, reply_to=bobs, ping=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    assert fake_discord.threads_created[0]["name"] == "when is it?", "the thread is named after the question"
    await answered(fake_discord, bot, tid, "It is at 3 pm now.")

    (answer,) = fake_discord.bot_messages_in(tid)
    await fake_discord.user_message(tid, "why?", reply_to=fake_discord.messages[int(answer["id"])], ping=True)
    await answered(fake_discord, bot, tid, "Because the room was taken.")
    assert model_texts(fake_openai) == [
        "[replying to Bob's message: The meeting moved to 3pm.]\nwhen is it?",
        '[replying to your earlier answer: "It is at 3 pm now."]\nwhy?',
    ]
    assert model_parts(fake_openai) == [["input_text", "input_image"], ["input_text"]], "the quoted image, once"


async def test_a_sticker_only_dm_is_answered_by_the_model_not_with_the_help_text(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    dm = fake_discord.dm_channel(fake_discord.alice)
    fake_openai.script(Reply(text="👋 Hello to you too!"))
    await fake_discord.user_message(dm, "", stickers=["wave"])
    await answered(fake_discord, bot, dm, "👋 Hello to you too!")
    assert model_texts(fake_openai) == ["[sticker: wave]"]
    assert fake_discord.text_in(dm) == "👋 Hello to you too!"


async def test_the_bots_mention_is_removed_where_it_addresses_the_bot_and_named_mid_sentence(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start()
    fake_openai.script(Reply(text="Sure."), Reply(text="Thanks!"))
    me = f"<@{fake_discord.bot_id}>"
    await fake_discord.user_message(fake_discord.channel_id, f"{me}, can you help?", mention_bot=True)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await answered(fake_discord, bot, tid, "Sure.")
    await fake_discord.user_message(tid, f"You can count on {me} for an honorable mention", mention_bot=True)
    await answered(fake_discord, bot, tid, "Thanks!")
    assert model_texts(fake_openai) == ["can you help?", "You can count on threadline for an honorable mention"]
    assert fake_discord.threads_created[0]["name"] == "can you help?"


# --- idempotent posts: a nonce from the turn and the part, enforced by the fake ----------------------------------
@pytest.mark.parametrize("lost", [None, 504], ids=["connection-dropped", "gateway-timeout"])
async def test_a_send_retried_after_a_timeout_posts_once(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI, lost: int | None
) -> None:
    bot = await harness.start()
    dm = fake_discord.dm_channel(fake_discord.alice)
    fake_openai.script(Reply(text="Posted exactly once."))
    fake_discord.lose_responses(status=lost)  # the message is made, but the bot does not hear back
    asked = await fake_discord.user_message(dm, "hello")
    await answered(fake_discord, bot, dm, "Posted exactly once.")
    assert [m["content"] for m in fake_discord.bot_messages_in(dm)] == ["Posted exactly once."]
    assert fake_discord.nonce_hits == 1, "the retry carried the first try's nonce"
    sends = [w for w in fake_discord.writes_in(dm) if w.kind == "send"]
    assert [w.nonce for w in sends] == [f"{asked['id']}.0"], "the nonce is the turn's message id and the part"


async def test_a_voice_message_retried_after_a_timeout_posts_once(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start(voice_replies="always")
    dm = fake_discord.dm_channel(fake_discord.alice)
    fake_openai.script(Reply(text="Spoken once."))
    fake_discord.lose_responses(voice_only=True)
    asked = await fake_discord.user_message(dm, "say it")
    await fake_discord.wait_for(lambda: any(w.flags & VOICE_MESSAGE_FLAG for w in fake_discord.writes), 15, "voice")
    await bot.idle()
    voice = [m for m in fake_discord.bot_messages_in(dm) if m["flags"] & VOICE_MESSAGE_FLAG]
    assert len(voice) == 1 and fake_discord.nonce_hits == 1
    assert [w.nonce for w in fake_discord.writes_in(dm)] == [f"{asked['id']}.0", f"{asked['id']}.1"]


# --- the global rate limit ---------------------------------------------------------------------------------------
async def test_200_mentions_at_once_stay_under_the_global_limit_and_every_one_is_answered(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    assert fake_discord.global_limit == (50, 1.0), "the fake enforces Discord's global limit"
    bot = await harness.start(discord_ack_reaction="👀")  # typing and reactions on, as by default
    mentions = 200
    asked = [
        await fake_discord.user_message(fake_discord.channel_id, f"question {n}", mention_bot=True)
        for n in range(mentions)
    ]

    def all_answered() -> bool:
        return all(f"«question {n}»" in fake_discord.text_in(int(m["id"])) for n, m in enumerate(asked))

    await fake_discord.wait_for(all_answered, 90, "every answer")
    await bot.idle()
    assert fake_discord.global_rate_limited == 0 and fake_discord.rate_limited == 0
    assert len(fake_discord.threads_created) == mentions

    def feedback_offered() -> int:
        return sum(1 for _, _, emoji in fake_discord.reactions if emoji in ("👍", "👎"))

    await fake_discord.wait_for(lambda: feedback_offered() == 2 * mentions, 60, "the deferred 👍/👎 of every answer")
    finals = {int(fake_discord.bot_messages_in(int(m["id"]))[-1]["id"]) for m in asked}
    assert {mid for _, mid, emoji in fake_discord.reactions if emoji in ("👍", "👎")} == finals
    assert fake_discord.global_rate_limited == 0, "the reactions waited for room"


async def test_ask_with_the_json_option_answers_in_a_json_code_block(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    bot = await harness.start(discord_command_guilds=[str(fake_discord.guild_id)])
    ((_, commands),) = fake_discord.command_puts
    (ask,) = [c for c in commands if c["name"] == "ask"]
    (option,) = [o for o in ask["options"] if o["name"] == "json"]
    assert option["type"] == 5 and not option.get("required"), "an optional boolean"

    options = [
        {"name": "prompt", "type": 3, "value": "three primary colours"},
        {"name": "json", "type": 5, "value": True},
    ]
    await fake_discord.slash("ask", options)
    await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
    tid = thread_of(fake_discord)
    await answered(fake_discord, bot, tid, "```")
    (body,) = [r.json for r in fake_openai.requests if r.path == "/v1/responses"]
    assert body["text"] == {"format": {"type": "json_object"}}
    content = fake_discord.text_in(tid)
    assert content.startswith("```json\n") and content.rstrip().endswith("```") and fences_balanced(content)
    assert json.loads(content.strip().removeprefix("```json").removesuffix("```")) == {
        "answer": "You said: «three primary colours»."
    }
