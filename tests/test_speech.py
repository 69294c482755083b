"""Spoken replies through the real openai SDK (Realtime WebSocket and /v1/audio/speech) against a local fake.

What a user cares about: the reply is one playable file as long as the text read, pieces come from one session,
failures end quickly with a short message that leaks nothing, and a voice that went off script leaves a trace.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
from collections.abc import AsyncIterator

import av
import pytest
from openai import AsyncOpenAI

from bot.audio_encode import AudioFormat, playable_format, waveform_from_pcm
from bot.speech import (
    DEFAULT_REALTIME_MODEL,
    DEFAULT_VOICE,
    EndpointSpeaker,
    RealtimeSpeaker,
    Speaker,
    SpeechError,
    SpokenAudio,
    speaker_for,
    speech_pieces,
)
from tests.fakes.realtime import PCM_RATE, FakeRealtime, Fault, read_seconds, tone_pcm

API_KEY = "sk-test-secret-key-1234"
TWO_SENTENCES = "The quick brown fox jumps over the lazy dog. Then it ran far away into the quiet woods!"
# per codec: (name PyAV decodes it as, samples per frame at its rate, rate)
CODECS = {
    AudioFormat.OGG_OPUS: ("opus", 960, 48_000),
    AudioFormat.M4A: ("aac", 1024, 24_000),
    AudioFormat.MP3: ("mp3float", 1152, 24_000),
}


@pytest.fixture
async def fake() -> AsyncIterator[FakeRealtime]:
    fake = FakeRealtime(valid_keys={API_KEY})
    await fake.start()
    yield fake
    await fake.close()
    assert fake.violations == [], "the speaker sent events the Realtime API would not take"


@pytest.fixture
async def client(fake: FakeRealtime) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0)
    yield client
    await client.close()


def realtime(client: AsyncOpenAI, *, timeout_secs: float = 10.0, **kwargs: int) -> RealtimeSpeaker:
    return RealtimeSpeaker(
        client, model=DEFAULT_REALTIME_MODEL, voice=DEFAULT_VOICE, timeout_secs=timeout_secs, **kwargs
    )


def decoded(data: bytes) -> tuple[str, float]:
    """(codec name, seconds of decoded audio): what a player would get out of the file."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.name, samples / stream.rate


def expected_seconds(*pieces: str) -> float:
    return sum(len(tone_pcm(read_seconds(piece, 15.0))) for piece in pieces) / 2 / PCM_RATE


def assert_short_and_safe(exc: SpeechError) -> None:
    message = str(exc)
    assert 0 < len(message) <= 80
    assert API_KEY not in message and "127.0.0.1" not in message and "://" not in message


# --- the happy path --------------------------------------------------------------------------------


async def test_two_sentences_are_read_in_one_session_as_one_ogg_opus_file(
    fake: FakeRealtime, client: AsyncOpenAI
) -> None:
    speaker = realtime(client, max_piece_chars=60)

    spoken = await speaker.speak(TWO_SENTENCES, audio_format=AudioFormat.OGG_OPUS)

    first, second = "The quick brown fox jumps over the lazy dog.", "Then it ran far away into the quiet woods!"
    assert fake.connections == 1
    assert fake.models == [DEFAULT_REALTIME_MODEL]
    [update] = fake.of_type("session.update")
    assert update["session"]["output_modalities"] == ["audio"]
    assert update["session"]["audio"]["output"] == {
        "voice": DEFAULT_VOICE,
        "format": {"type": "audio/pcm", "rate": 24000},
    }
    creates = [event["response"] for event in fake.of_type("response.create")]
    assert [create["conversation"] for create in creates] == ["none", "none"]
    assert [create["input"][0]["content"][0]["text"] for create in creates] == [first, second]
    assert all("word for word" in create["instructions"] for create in creates)

    codec, seconds = decoded(spoken.data)
    expected = expected_seconds(first, second)
    assert codec == "opus"
    assert seconds == pytest.approx(expected, abs=2 * 960 / 48_000)
    assert spoken.duration_secs == pytest.approx(expected, abs=0.01)
    assert (spoken.mime, spoken.filename) == ("audio/ogg", "reply.ogg")
    assert 1 <= len(spoken.waveform) <= 256 and max(spoken.waveform) == 255
    assert isinstance(speaker, Speaker)


@pytest.mark.parametrize("audio_format", [AudioFormat.M4A, AudioFormat.MP3])
async def test_slack_formats_decode_with_the_length_of_the_reading(
    client: AsyncOpenAI, audio_format: AudioFormat
) -> None:
    spoken = await realtime(client).speak(TWO_SENTENCES, audio_format=audio_format)

    name, frame, rate = CODECS[audio_format]
    codec, seconds = decoded(spoken.data)
    assert codec == name
    assert seconds == pytest.approx(expected_seconds(TWO_SENTENCES), abs=2 * frame / rate)
    assert spoken.filename == f"reply.{audio_format.extension}"
    assert spoken.mime == {"m4a": "audio/mp4", "mp3": "audio/mpeg"}[audio_format.extension]


async def test_a_long_reply_is_read_in_sentence_pieces_over_one_session(
    fake: FakeRealtime, client: AsyncOpenAI
) -> None:
    sentences = [f"Sentence number {n} says something mildly interesting about item {n}." for n in range(1, 13)]
    text = " ".join(sentences)

    spoken = await realtime(client, max_piece_chars=200).speak(text, audio_format=AudioFormat.OGG_OPUS)

    pieces = [event["response"]["input"][0]["content"][0]["text"] for event in fake.of_type("response.create")]
    assert fake.connections == 1
    assert len(pieces) > 1 and all(len(piece) <= 200 for piece in pieces)
    assert all(piece.endswith(".") for piece in pieces)
    assert " ".join(pieces) == text
    assert decoded(spoken.data)[1] == pytest.approx(expected_seconds(*pieces), abs=0.04)


async def test_the_endpoint_speaker_reads_through_v1_audio_speech(fake: FakeRealtime, client: AsyncOpenAI) -> None:
    speaker = EndpointSpeaker(client, model="gpt-4o-mini-tts", voice="alloy", timeout_secs=10)

    spoken = await speaker.speak(TWO_SENTENCES, audio_format=AudioFormat.OGG_OPUS)

    [request] = fake.speech_requests
    assert request == {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": TWO_SENTENCES, "response_format": "pcm"}
    codec, seconds = decoded(spoken.data)
    assert codec == "opus"
    assert seconds == pytest.approx(expected_seconds(TWO_SENTENCES), abs=0.04)
    assert fake.connections == 0


# --- choosing a speaker ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("gpt-realtime-2.1-mini", RealtimeSpeaker),
        ("gpt-realtime", RealtimeSpeaker),
        ("gpt-4o-mini-realtime-preview-2024-12-17", RealtimeSpeaker),
        ("tts-1", EndpointSpeaker),
        ("tts-1-hd", EndpointSpeaker),
        ("gpt-4o-mini-tts", EndpointSpeaker),
        ("gpt-4o-mini-tts-2025-12-15", EndpointSpeaker),
        ("GPT-4o-Mini-TTS", EndpointSpeaker),
        ("some-future-voice-model", RealtimeSpeaker),
    ],
)
def test_speaker_for_picks_by_model_id(model: str, kind: type[Speaker]) -> None:
    client = AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="unused")
    assert type(speaker_for(client, model=model, voice="marin", timeout_secs=5)) is kind


# --- cutting text ----------------------------------------------------------------------------------


def test_pieces_are_whole_sentences_and_long_sentences_break_at_a_clause_or_word() -> None:
    text = "Short one. " + "This sentence keeps going, with clause after clause, and word after word " * 3 + "end."

    pieces = speech_pieces(text, max_piece_chars=80)

    assert pieces[0].startswith("Short one. ")
    assert all(len(piece) <= 80 for piece in pieces)
    assert " ".join(pieces).split() == text.split()  # nothing lost, no word split in two
    assert any(piece.endswith(",") for piece in pieces)


def test_the_whole_text_is_capped_at_a_sentence_boundary() -> None:
    text = "First sentence here. Second sentence here. Third sentence is the one that does not fit."

    assert speech_pieces(text, max_piece_chars=500, max_chars=50) == ["First sentence here. Second sentence here."]
    assert speech_pieces("one two three four five", max_piece_chars=500, max_chars=12) == ["one two"]
    assert speech_pieces("A list:\n- apples\n- pears", max_piece_chars=10) == ["A list:", "- apples", "- pears"]
    assert speech_pieces("  \n ", max_piece_chars=100) == []


def test_sentences_keep_their_closing_quotes_and_cjk_text_splits_too() -> None:
    assert speech_pieces('He said "stop." Then (he left.) Fine.', max_piece_chars=16) == [
        'He said "stop."',
        "Then (he left.)",
        "Fine.",
    ]
    assert speech_pieces("你好。今天天气很好！我们走吧？", max_piece_chars=8) == [
        "你好。",
        "今天天气很好！",
        "我们走吧？",
    ]


async def test_nothing_to_read_fails_without_a_connection(fake: FakeRealtime, client: AsyncOpenAI) -> None:
    with pytest.raises(SpeechError):
        await realtime(client).speak(" \n", audio_format=AudioFormat.OGG_OPUS)
    assert fake.attempts == 0


# --- faults ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "status"), [(Fault.REFUSE_403, "403"), (Fault.REFUSE_500, "500")])
async def test_a_refused_upgrade_is_a_short_speech_error(
    fake: FakeRealtime, client: AsyncOpenAI, fault: Fault, status: str
) -> None:
    fake.fault = fault
    with pytest.raises(SpeechError) as caught:
        await realtime(client).speak(TWO_SENTENCES, audio_format=AudioFormat.OGG_OPUS)
    assert status in str(caught.value)
    assert_short_and_safe(caught.value)
    assert fake.connections == 0


async def test_a_wrong_key_never_shows_up_in_the_error(fake: FakeRealtime) -> None:
    wrong = AsyncOpenAI(base_url=fake.base_url, api_key="sk-wrong-key-5678", max_retries=0)
    try:
        with pytest.raises(SpeechError) as caught:
            await realtime(wrong).speak(TWO_SENTENCES, audio_format=AudioFormat.OGG_OPUS)
    finally:
        await wrong.close()
    assert "401" in str(caught.value) and "sk-wrong" not in str(caught.value)
    assert_short_and_safe(caught.value)


async def test_an_error_event_is_a_short_speech_error(fake: FakeRealtime, client: AsyncOpenAI) -> None:
    fake.fault = Fault.ERROR
    with pytest.raises(SpeechError) as caught:
        await realtime(client).speak(TWO_SENTENCES, audio_format=AudioFormat.OGG_OPUS)
    assert "error" in str(caught.value)
    assert_short_and_safe(caught.value)


@pytest.mark.parametrize("fault", [Fault.STALL, Fault.STALL_HANDSHAKE])
async def test_a_stalled_service_ends_in_a_timeout(fake: FakeRealtime, client: AsyncOpenAI, fault: Fault) -> None:
    fake.fault = fault
    async with asyncio.timeout(10):  # the only timing claim: it ends
        with pytest.raises(SpeechError) as caught:
            await realtime(client, timeout_secs=0.5).speak(TWO_SENTENCES, audio_format=AudioFormat.OGG_OPUS)
    assert "in time" in str(caught.value)
    assert_short_and_safe(caught.value)


async def test_a_session_cut_mid_reply_is_a_short_speech_error(fake: FakeRealtime, client: AsyncOpenAI) -> None:
    fake.fault = Fault.CUT
    async with asyncio.timeout(10):
        with pytest.raises(SpeechError) as caught:
            await realtime(client).speak(TWO_SENTENCES, audio_format=AudioFormat.OGG_OPUS)
    assert "hung up" in str(caught.value)
    assert_short_and_safe(caught.value)
    assert fake.connections == 1  # no silent reconnect and replay


async def test_a_response_without_audio_is_a_short_speech_error(fake: FakeRealtime, client: AsyncOpenAI) -> None:
    fake.fault = Fault.NO_AUDIO
    with pytest.raises(SpeechError) as caught:
        await realtime(client).speak(TWO_SENTENCES, audio_format=AudioFormat.OGG_OPUS)
    assert "no audio" in str(caught.value)
    assert_short_and_safe(caught.value)


async def test_a_voice_that_never_stops_is_cut_off(fake: FakeRealtime, client: AsyncOpenAI) -> None:
    fake.chars_per_second = 0.5  # three minutes of "reading" for two sentences
    async with asyncio.timeout(20):
        with pytest.raises(SpeechError) as caught:
            await realtime(client, timeout_secs=1).speak(TWO_SENTENCES, audio_format=AudioFormat.OGG_OPUS)
    assert "off script" in str(caught.value)
    assert_short_and_safe(caught.value)


async def test_nobody_listening_is_a_short_speech_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=API_KEY, max_retries=0)
    try:
        with pytest.raises(SpeechError) as caught:
            await realtime(client, timeout_secs=2).speak(TWO_SENTENCES, audio_format=AudioFormat.OGG_OPUS)
    finally:
        await client.close()
    assert "reach" in str(caught.value)
    assert_short_and_safe(caught.value)


async def test_the_endpoint_speaker_turns_http_errors_into_speech_errors(fake: FakeRealtime) -> None:
    wrong = AsyncOpenAI(base_url=fake.base_url, api_key="sk-wrong-key-5678", max_retries=0)
    try:
        with pytest.raises(SpeechError) as caught:
            await EndpointSpeaker(wrong, model="tts-1", voice="alloy", timeout_secs=5).speak(
                TWO_SENTENCES, audio_format=AudioFormat.MP3
            )
    finally:
        await wrong.close()
    assert "401" in str(caught.value) and "sk-wrong" not in str(caught.value)
    assert_short_and_safe(caught.value)


# --- rewording, formats ----------------------------------------------------------------------------


async def test_a_reworded_reading_is_logged(
    fake: FakeRealtime, client: AsyncOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="threadline.speech")
    await realtime(client).speak(TWO_SENTENCES, audio_format=AudioFormat.OGG_OPUS)
    assert not [r for r in caplog.records if "reworded" in r.getMessage()]

    fake.reword = True
    spoken = await realtime(client).speak(TWO_SENTENCES, audio_format=AudioFormat.OGG_OPUS)

    [line] = [r for r in caplog.records if "reworded" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert decoded(spoken.data)[0] == "opus"  # the audio is still delivered


def test_mp3_falls_back_to_m4a_without_an_mp3_encoder(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="threadline.audio_encode")
    assert playable_format(AudioFormat.MP3, codecs={"aac", "libopus"}) is AudioFormat.M4A
    assert any("MP3" in r.getMessage() for r in caplog.records)
    assert playable_format(AudioFormat.OGG_OPUS, codecs=set()) is AudioFormat.OGG_OPUS


def test_the_waveform_follows_the_loudness() -> None:
    quiet_then_loud = bytes(2 * PCM_RATE) + tone_pcm(1.0)
    waveform = waveform_from_pcm(quiet_then_loud, PCM_RATE)
    assert len(waveform) == 20
    assert max(waveform[:10]) == 0 and min(waveform[10:]) > 200


def test_spoken_audio_is_immutable() -> None:
    spoken = SpokenAudio(b"x", "audio/ogg", "reply.ogg", 1.0, b"\x00")
    with pytest.raises(AttributeError):
        spoken.data = b"y"  # type: ignore[misc]
