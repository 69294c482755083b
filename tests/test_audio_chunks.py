"""Long recordings cut into transcription-ready chunks; audio made by the tests (PyAV), nothing downloaded."""

from __future__ import annotations

import io
import itertools
import wave
from collections.abc import AsyncIterator

import av
import openai
import pytest

from bot.audio_chunks import AudioChunk, AudioTooLong, AudioUnreadable, split_audio
from tests.fakes import media
from tests.fakes.openai_server import FakeOpenAI

HOUR = 3600.0


def decoded_seconds(data: bytes) -> float:
    """Length of an audio file by decoding every sample (not the container's header)."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


def wav_with_pause(tone_secs: float, pause_secs: float, then_secs: float, rate: int = 24_000) -> bytes:
    """Tone, silence, tone: a speaker taking a breath."""
    pcm = media.pcm_tone(tone_secs, rate) + b"\0\0" * int(pause_secs * rate) + media.pcm_tone(then_secs, rate)
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm)
    return out.getvalue()


@pytest.fixture(scope="module")
def three_minutes() -> bytes:
    return media.audio(180.0, "opus")


@pytest.fixture(scope="module")
def three_minute_chunks(three_minutes: bytes) -> list[AudioChunk]:
    return split_audio(three_minutes, filename="meeting.ogg", max_chunk_secs=60, hard_cap_secs=HOUR)


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=0)
    yield sdk
    await sdk.close()


# --- long recordings ------------------------------------------------------------------------------


def test_a_long_recording_becomes_consecutive_chunks_that_add_up(
    three_minutes: bytes, three_minute_chunks: list[AudioChunk]
):
    chunks = three_minute_chunks
    assert 3 <= len(chunks) <= 4
    assert chunks[0].start_secs == 0
    for before, after in itertools.pairwise(chunks):
        assert after.start_secs == pytest.approx(before.start_secs + before.duration_secs)
    lengths = [decoded_seconds(chunk.data) for chunk in chunks]  # each one decodes
    assert sum(lengths) == pytest.approx(decoded_seconds(three_minutes), abs=0.2)
    assert all(length <= 60.05 for length in lengths)
    assert lengths == pytest.approx([chunk.duration_secs for chunk in chunks], abs=0.05)


def test_chunks_are_files_the_endpoint_accepts(three_minute_chunks: list[AudioChunk]):
    names = [chunk.filename for chunk in three_minute_chunks]
    assert len(set(names)) == len(names) and all(n.startswith("meeting") and n.endswith(".ogg") for n in names)
    assert all(chunk.mime == "audio/ogg" for chunk in three_minute_chunks)
    assert all(len(chunk.data) <= 25 * 1024 * 1024 for chunk in three_minute_chunks)
    with av.open(io.BytesIO(three_minute_chunks[0].data)) as container:
        stream = container.streams.audio[0]
        assert (container.format.name, stream.codec_context.name, stream.channels) == ("ogg", "opus", 1)


async def test_each_chunk_is_transcribed_by_the_api(three_minute_chunks: list[AudioChunk], client: openai.AsyncOpenAI):
    for chunk in three_minute_chunks:
        result = await client.audio.transcriptions.create(
            model="gpt-transcribe", file=(chunk.filename, chunk.data, chunk.mime)
        )
        assert result.text == "this is a voice note"


def test_the_cut_lands_in_a_pause_near_the_end_of_a_chunk():
    recording = wav_with_pause(56.5, 1.0, 40.0)  # a breath from 56.5 s to 57.5 s
    chunks = split_audio(recording, filename="talk.wav", max_chunk_secs=60, hard_cap_secs=HOUR)
    assert len(chunks) == 2
    assert 56.5 <= chunks[1].start_secs <= 57.5
    assert sum(c.duration_secs for c in chunks) == pytest.approx(97.5, abs=0.05)


def test_a_recording_over_the_byte_limit_is_re_encoded_smaller():
    recording = media.wav(10.0)  # about 480 kB of PCM
    (chunk,) = split_audio(recording, filename="memo.wav", max_bytes=100_000, max_chunk_secs=600, hard_cap_secs=HOUR)
    assert len(chunk.data) <= 100_000 and chunk.filename == "memo.ogg" and chunk.mime == "audio/ogg"
    assert decoded_seconds(chunk.data) == pytest.approx(10.0, abs=0.05)


# --- short recordings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "filename", "mime"),
    [
        ("opus", "voice-message.ogg", "audio/ogg"),
        ("m4a", "Recording.m4a", "audio/mp4"),
        ("mp3", "memo.mp3", "audio/mpeg"),
        ("wav", "memo.wav", "audio/wav"),
    ],
)
def test_a_short_clip_comes_back_untouched(fmt: str, filename: str, mime: str):
    clip = media.audio(2.0, fmt)
    (chunk,) = split_audio(clip, filename=filename, max_chunk_secs=60, hard_cap_secs=HOUR)
    assert chunk == AudioChunk(clip, filename, mime, 0.0, chunk.duration_secs)
    assert chunk.duration_secs == pytest.approx(2.0, abs=0.05)


def test_a_short_clip_in_a_format_the_endpoint_refuses_is_converted():
    clip = media.audio(2.0, "aac")  # raw ADTS AAC: not on the endpoint's list
    (chunk,) = split_audio(clip, filename="note.aac", max_chunk_secs=60, hard_cap_secs=HOUR)
    assert chunk.filename == "note.ogg" and chunk.mime == "audio/ogg"
    assert decoded_seconds(chunk.data) == pytest.approx(decoded_seconds(clip), abs=0.05)


# --- refusals -------------------------------------------------------------------------------------


def test_over_the_hard_cap_is_refused_with_the_limit_in_minutes(three_minutes: bytes):
    with pytest.raises(AudioTooLong) as caught:
        split_audio(three_minutes, filename="meeting.ogg", max_chunk_secs=60, hard_cap_secs=120)
    assert caught.value.limit_secs == 120 and caught.value.actual_secs == pytest.approx(180, abs=0.5)
    assert str(caught.value) == "That recording is 3 minutes long; I can transcribe at most 2 minutes."


def test_the_cap_is_checked_on_the_decoded_length_too():
    """A header within 2 % of the cap is not trusted either way: the decoded length decides."""
    with pytest.raises(AudioTooLong) as caught:
        split_audio(media.wav(6.1), filename="a.wav", max_chunk_secs=60, hard_cap_secs=6.0)
    assert caught.value.actual_secs == pytest.approx(6.1, abs=0.02)
    (chunk,) = split_audio(media.wav(5.9), filename="a.wav", max_chunk_secs=60, hard_cap_secs=6.0)
    assert chunk.duration_secs == pytest.approx(5.9, abs=0.02)


@pytest.mark.parametrize(
    ("limit", "actual", "message"),
    [
        (3600, 5700, "That recording is 95 minutes long; I can transcribe at most 60 minutes."),
        (3600, 3601, "That recording is 60.1 minutes long; I can transcribe at most 60 minutes."),
        (90, 200, "That recording is 3.3 minutes long; I can transcribe at most 1.5 minutes."),
    ],
)
def test_the_length_message_never_reads_as_within_the_limit(limit: float, actual: float, message: str):
    assert str(AudioTooLong(limit, actual)) == message


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (media.corrupt(media.ogg_opus_voice(2.0)), "looks damaged"),
        (b"definitely not audio " * 50, "looks damaged"),
        (b"", "looks damaged"),
        (media.png(), "no sound track"),
    ],
    ids=["corrupt-ogg", "junk", "empty", "an-image"],
)
def test_undecodable_input_is_refused_clearly(data: bytes, words: str):
    with pytest.raises(AudioUnreadable) as caught:
        split_audio(data, filename="voice.ogg", max_chunk_secs=60, hard_cap_secs=HOUR)
    assert str(caught.value).startswith("I couldn't read voice.ogg as audio") and words in str(caught.value)


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        split_audio(media.wav(1.0), filename="a.wav", max_chunk_secs=0, hard_cap_secs=HOUR)
