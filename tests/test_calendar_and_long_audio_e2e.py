"""The doctor and ``run`` know the shutdown calendar; long audio is split, transcribed in order and joined."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.runtime import Runtime, open_runtime
from bot.types import Attachment, AttachmentKind, IncomingMessage, ThreadKey
from tests.fakes import media
from tests.fakes.openai_server import FakeOpenAI, Reply, audio_seconds
from tests.helpers import RecordingReply, make_settings, spawn_threadline, user_env


async def threadline(tmp_path: Path, env: dict[str, str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    proc = await spawn_threadline(tmp_path, env, *args)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def env_for(tmp_path: Path, fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    return user_env(tmp_path, fake.base_url, THREADLINE_DATABASE=str(tmp_path / "db.sqlite"), **extra)


async def test_doctor_warns_about_the_speech_endpoint_shutdown(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    env = env_for(tmp_path, fake_openai, THREADLINE_TTS_MODEL="gpt-4o-mini-tts")
    code, out, err = await threadline(tmp_path, env, "doctor")
    assert code == 0, out + err
    assert (
        "! model gpt-4o-mini-tts (THREADLINE_TTS_MODEL) shuts down on 2027-01-06 (in 36 days): "
        "change THREADLINE_TTS_MODEL before then"
    ) in out
    assert "✓ model gpt-realtime-2.1-mini" not in out and "✓ model gpt-6.2-sol (THREADLINE_MODEL) exists" in out


async def test_doctor_fails_for_a_shut_down_model_and_names_channel_overrides(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    database = tmp_path / "db.sqlite"
    async with open_runtime(make_settings(tmp_path, fake_openai.base_url, database=database)) as rt:
        await rt.store.set_channel_model("slack", "C0OLD", "o3")
    env = env_for(tmp_path, fake_openai, THREADLINE_IMAGE_MODEL="gpt-image-1.5")
    code, out, err = await threadline(tmp_path, env, "doctor")
    assert code == 1, out + err
    assert (
        "✗ model gpt-image-1.5 (THREADLINE_IMAGE_MODEL) shuts down today (2026-12-01): "
        "set THREADLINE_IMAGE_MODEL to a current model"
    ) in out
    assert "! model o3 (the model of slack channel C0OLD) shuts down on 2026-12-11 (in 10 days)" in out


async def test_run_logs_the_shutdown_warning_once_at_start_up(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    env = env_for(tmp_path, fake_openai, THREADLINE_TTS_MODEL="tts-1")
    fake_openai.script(Reply(text="hello back"))
    code, out, err = await threadline(tmp_path, env, "run", stdin="hello\n")
    assert code == 0, err
    assert "threadline> hello back" in out
    assert err.count("model tts-1 (THREADLINE_TTS_MODEL) shuts down on 2027-01-06") == 1


# --- long audio -------------------------------------------------------------------------------------------------


@pytest.fixture
async def rt(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[Runtime]:
    settings = make_settings(
        tmp_path, fake_openai.base_url, transcribe_chunk_secs=30, audio_max_minutes=2, voice_replies="never"
    )
    async with open_runtime(settings) as runtime:
        yield runtime


def recording(seconds: float) -> Attachment:
    data = media.audio(seconds, "opus")

    async def fetch() -> bytes:
        return data

    return Attachment(AttachmentKind.AUDIO, "audio/ogg", "meeting.ogg", len(data), fetch)


async def turn(rt: Runtime, *attachments: Attachment) -> RecordingReply:
    reply = RecordingReply()
    message = IncomingMessage(key=ThreadKey("t", "w", "c", "1"), user_id="U1", text="", attachments=attachments)
    submission = await rt.gateway.submit(message, reply)
    assert submission.done is not None
    await submission.done
    return reply


async def test_long_audio_is_transcribed_in_order_in_pieces(rt: Runtime, fake_openai: FakeOpenAI) -> None:
    fake_openai.transcript = "part"
    fake_openai.script(Reply(text="Summarised."))
    reply = await turn(rt, recording(75.0))
    assert reply.failed is None and reply.text == "Summarised."
    pieces = [r for r in fake_openai.requests if r.path == "/v1/audio/transcriptions"]
    assert len(pieces) == 3, "75 s in pieces of at most 30 s"
    lengths = [audio_seconds(p.form["file"].data) for p in pieces]
    assert all(length is not None and length <= 30.5 for length in lengths)
    assert sum(length or 0 for length in lengths) == pytest.approx(75.0, abs=0.5)
    assert "transcribing part 2 of 3…" in reply.statuses
    (conv,) = fake_openai.conversations.values()
    (body,) = fake_openai.responses_for(conv.id)
    assert body["input"][0]["content"][0]["text"] == "[Audio file meeting.ogg, transcribed]: part part part"


async def test_audio_over_the_hard_cap_is_refused_with_the_limit_named(rt: Runtime, fake_openai: FakeOpenAI) -> None:
    reply = await turn(rt, recording(150.0))
    assert reply.failed is not None and "at most 2 minutes" in reply.failed
    assert not [r for r in fake_openai.requests if r.path.startswith(("/v1/audio", "/v1/responses"))]
