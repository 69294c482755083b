"""Native Discord voice messages out: the waveform, and the raw route discord.py 2.7 has no API for.

A voice message is a message with flag IS_VOICE_MESSAGE (8192), no text, and exactly one Ogg/Opus attachment
whose metadata carries ``duration_secs`` and ``waveform`` (base64 of up to 256 amplitude bytes). Like every
message the bot creates it carries a ``nonce`` with ``enforce_nonce``, so a retried send posts it once.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
from array import array
from typing import Any

import av
import discord

VOICE_MESSAGE_FLAG = 8192
VOICE_FILENAME = "voice-message.ogg"
MAX_WAVEFORM_SAMPLES = 256
WAVEFORM_SAMPLES_PER_SEC = 10
_ANALYSIS_RATE = 8000


class VoiceMessageError(Exception):
    """The audio cannot be sent as a voice message (undecodable); send it as a plain file instead."""


def decode_levels(ogg: bytes) -> tuple[list[float], float]:
    """Mono 16-bit samples' absolute levels (0..1) at 8 kHz, and the duration in seconds."""
    levels: list[float] = []
    try:
        with av.open(io.BytesIO(ogg), mode="r") as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=_ANALYSIS_RATE)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    samples = array("h", bytes(out.planes[0])[: out.samples * 2])
                    levels.extend(abs(s) / 32768 for s in samples)
            for out in resampler.resample(None):
                samples = array("h", bytes(out.planes[0])[: out.samples * 2])
                levels.extend(abs(s) / 32768 for s in samples)
    except (av.FFmpegError, IndexError, ValueError) as exc:
        raise VoiceMessageError(f"audio could not be decoded: {exc}") from exc
    if not levels:
        raise VoiceMessageError("audio has no samples")
    return levels, len(levels) / _ANALYSIS_RATE


def waveform_bytes(levels: list[float], duration_secs: float) -> bytes:
    """RMS per bucket, scaled so the loudest bucket is 255 (about 10 buckets a second, at most 256)."""
    buckets = max(1, min(MAX_WAVEFORM_SAMPLES, math.ceil(duration_secs * WAVEFORM_SAMPLES_PER_SEC)))
    size = max(1, len(levels) // buckets)
    rms = []
    for i in range(buckets):
        chunk = levels[i * size : (i + 1) * size] or [0.0]
        rms.append(math.sqrt(sum(v * v for v in chunk) / len(chunk)))
    peak = max(rms)
    if peak <= 0:
        return bytes(buckets)
    return bytes(min(255, round(255 * v / peak)) for v in rms)


def voice_metadata(ogg: bytes, duration_secs: float | None = None) -> tuple[float, str]:
    """(duration in seconds, base64 waveform) for an Ogg/Opus file."""
    levels, decoded = decode_levels(ogg)
    duration = duration_secs if duration_secs and duration_secs > 0 else decoded
    return round(duration, 2), base64.b64encode(waveform_bytes(levels, duration)).decode()


def voice_message_form(
    ogg: bytes, duration_secs: float, waveform: str, nonce: str | None = None
) -> tuple[list[dict[str, Any]], discord.File]:
    """The multipart form discord.py's HTTPClient.request sends, built like handle_message_parameters does."""
    file = discord.File(io.BytesIO(ogg), filename=VOICE_FILENAME)
    payload: dict[str, Any] = {
        "flags": VOICE_MESSAGE_FLAG,
        "attachments": [{"id": 0, "filename": VOICE_FILENAME, "duration_secs": duration_secs, "waveform": waveform}],
        "allowed_mentions": {"parse": []},
    }
    if nonce is not None:
        payload |= {"nonce": nonce, "enforce_nonce": True}
    form: list[dict[str, Any]] = [
        {"name": "payload_json", "value": json.dumps(payload)},
        {"name": "files[0]", "value": file.fp, "filename": VOICE_FILENAME, "content_type": "audio/ogg"},
    ]
    return form, file


async def send_voice_message(
    http: discord.http.HTTPClient, channel_id: int, ogg: bytes, duration_secs: float | None, *, nonce: str | None = None
) -> dict[str, Any]:
    """POST the voice message; returns Discord's message payload. Raises VoiceMessageError or HTTPException."""
    duration, waveform = await asyncio.to_thread(voice_metadata, ogg, duration_secs)
    form, file = voice_message_form(ogg, duration, waveform, nonce)
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=channel_id)
    try:
        return await http.request(route, form=form, files=[file])  # type: ignore[no-any-return]
    finally:
        file.close()
