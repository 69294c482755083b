"""Voice-note translation: "translate" with a voice note, or right after one, gives an English translation made
by the text model from the transcript. The audio translations endpoint (shut down 2027-02-26) is never called."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.attachments_in import TRANSLATE_INSTRUCTION
from bot.runtime import Runtime, open_runtime
from bot.types import Attachment, AttachmentKind, IncomingMessage, ThreadKey
from tests.fakes import media
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.helpers import RecordingReply, make_settings

KEY = ThreadKey("test", "W1", "C1", "t1")
SPANISH = "hola, nos vemos mañana a las diez"


@pytest.fixture
async def rt(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[Runtime]:
    fake_openai.transcript = SPANISH
    async with open_runtime(make_settings(tmp_path, fake_openai.base_url, voice_replies="never")) as runtime:
        yield runtime


def voice_note() -> Attachment:
    data = media.ogg_opus_voice(1.0)

    async def fetch() -> bytes:
        return data

    return Attachment(AttachmentKind.VOICE, "audio/ogg", "voice-message.ogg", len(data), fetch, duration_secs=1.0)


async def turn(rt: Runtime, text: str, *attachments: Attachment) -> RecordingReply:
    reply = RecordingReply()
    submission = await rt.gateway.submit(
        IncomingMessage(key=KEY, user_id="U1", text=text, attachments=attachments), reply
    )
    assert submission.done is not None
    await submission.done
    return reply


def sent_texts(fake: FakeOpenAI) -> list[list[str]]:
    (conv,) = fake.conversations.values()
    return [[p["text"] for p in body["input"][0]["content"]] for body in fake.responses_for(conv.id)]


async def test_translate_with_the_voice_note(rt: Runtime, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply(text="Hi, see you tomorrow at ten."))
    reply = await turn(rt, "translate", voice_note())
    assert reply.failed is None and reply.text == "Hi, see you tomorrow at ten."
    (texts,) = sent_texts(fake_openai)
    assert texts == [f"[Voice note, transcribed]: {SPANISH}", TRANSLATE_INSTRUCTION]
    (transcription,) = [r for r in fake_openai.requests if r.path == "/v1/audio/transcriptions"]
    assert transcription.form["model"] == "gpt-transcribe"
    assert not [r for r in fake_openai.requests if r.path == "/v1/audio/translations"]


async def test_translate_as_a_reply_to_an_earlier_voice_note(rt: Runtime, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply(text="(answer to the note)"), Reply(text="Hi, see you tomorrow at ten."))
    await turn(rt, "", voice_note())
    reply = await turn(rt, "can you translate that into English?")
    assert reply.text == "Hi, see you tomorrow at ten."
    assert sent_texts(fake_openai)[1] == [f"[Voice note, transcribed]: {SPANISH}", TRANSLATE_INSTRUCTION]
    assert len([r for r in fake_openai.requests if r.path == "/v1/audio/transcriptions"]) == 1, "not transcribed twice"
    assert not [r for r in fake_openai.requests if r.path == "/v1/audio/translations"]


async def test_translate_without_any_voice_note_is_an_ordinary_message(rt: Runtime, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply(text="Bonjour means hello."))
    await turn(rt, "translate bonjour")
    assert sent_texts(fake_openai) == [["translate bonjour"]]
