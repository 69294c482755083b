"""Raw speech PCM (16-bit mono, as OpenAI's voice models send it) to the files the platforms play.

Discord voice messages and the console take Ogg/Opus; Slack plays M4A (AAC) and MP3 inline. PyAV is imported on
first use so start-up does not pay for it. Everything here is CPU work: callers run it in a thread.
"""

from __future__ import annotations

import enum
import io
import logging
import math
from array import array
from collections.abc import Collection
from dataclasses import dataclass

log = logging.getLogger("threadline.audio_encode")

MAX_WAVEFORM_BYTES = 256  # Discord's limit for a voice message's waveform
WAVEFORM_BUCKETS_PER_SEC = 10  # what Discord's own client draws
_WAVEFORM_ANALYSIS_RATE = 8_000  # levels need no more detail than this
_CHUNK_SAMPLES = 4_800  # frames handed to the resampler; the encoder re-chunks to its own frame size
_MP3_ENCODER = "libmp3lame"


class AudioFormat(enum.Enum):
    """The encoded formats a spoken reply can take."""

    OGG_OPUS = "ogg_opus"  # Discord voice messages, the console
    M4A = "m4a"  # Slack
    MP3 = "mp3"  # Slack

    @property
    def mime(self) -> str:
        return _encoding(self).mime

    @property
    def extension(self) -> str:
        return _encoding(self).extension


@dataclass(frozen=True, slots=True)
class _Encoding:
    container: str
    codec: str
    rate: int
    bit_rate: int
    mime: str
    extension: str


def _encoding(fmt: AudioFormat) -> _Encoding:
    match fmt:
        case AudioFormat.OGG_OPUS:  # Opus runs at 48 kHz; Discord wants exactly Ogg/Opus for voice messages
            return _Encoding("ogg", "libopus", 48_000, 48_000, "audio/ogg", "ogg")
        case AudioFormat.M4A:  # "ipod" is FFmpeg's .m4a muxer (faststart needs a second pass over a real file)
            return _Encoding("ipod", "aac", 24_000, 64_000, "audio/mp4", "m4a")
        case AudioFormat.MP3:
            return _Encoding("mp3", _MP3_ENCODER, 24_000, 48_000, "audio/mpeg", "mp3")


def playable_format(fmt: AudioFormat, *, codecs: Collection[str] | None = None) -> AudioFormat:
    """``fmt``, or M4A when ``fmt`` is MP3 and the bundled FFmpeg has no MP3 encoder (``codecs`` defaults to
    PyAV's ``codecs_available``). Callers use the result for the file's MIME type and name."""
    if fmt is not AudioFormat.MP3:
        return fmt
    if codecs is None:
        import av

        codecs = av.codecs_available
    if _MP3_ENCODER in codecs:
        return fmt
    log.info("this FFmpeg build has no MP3 encoder (%s): sending M4A instead", _MP3_ENCODER)
    return AudioFormat.M4A


def pcm_duration(pcm: bytes, rate: int) -> float:
    """Seconds of 16-bit mono PCM at ``rate``."""
    return (len(pcm) // 2) / rate


def encode_pcm16(pcm: bytes, rate: int, fmt: AudioFormat) -> bytes:
    """Encode 16-bit little-endian mono PCM at ``rate`` as ``fmt`` (see ``playable_format`` for MP3).

    Raises ValueError for empty input and ``av.FFmpegError`` when FFmpeg fails."""
    import av

    samples = len(pcm) // 2
    if samples == 0:
        raise ValueError("no audio samples to encode")
    spec = _encoding(playable_format(fmt))
    out = io.BytesIO()
    with av.open(out, mode="w", format=spec.container) as container:
        stream = container.add_stream(spec.codec, rate=spec.rate, layout="mono")
        if not isinstance(stream, av.AudioStream):
            raise TypeError(f"{spec.codec} is not an audio codec")
        stream.bit_rate = spec.bit_rate
        resampler = av.AudioResampler(format=stream.codec_context.format, layout="mono", rate=spec.rate)
        for start in range(0, samples, _CHUNK_SAMPLES):
            chunk = pcm[start * 2 : min(samples, start + _CHUNK_SAMPLES) * 2]
            frame = av.AudioFrame(format="s16", layout="mono", samples=len(chunk) // 2)
            frame.planes[0].update(chunk)
            frame.sample_rate = rate
            frame.pts = start
            for resampled in resampler.resample(frame):
                container.mux(stream.encode(resampled))
        for resampled in resampler.resample(None):
            container.mux(stream.encode(resampled))
        container.mux(stream.encode(None))
    return out.getvalue()


def waveform_from_pcm(pcm: bytes, rate: int) -> bytes:
    """Discord's voice-message waveform: RMS level per bucket (about 10 a second, at most 256), scaled so the
    loudest bucket is 255."""
    step = max(1, rate // _WAVEFORM_ANALYSIS_RATE)
    samples = array("h", pcm[: len(pcm) // 2 * 2])[::step]
    duration = pcm_duration(pcm, rate)
    buckets = max(1, min(MAX_WAVEFORM_BYTES, math.ceil(duration * WAVEFORM_BUCKETS_PER_SEC)))
    size = max(1, len(samples) // buckets)
    levels = []
    for i in range(buckets):
        chunk = samples[i * size : (i + 1) * size]
        levels.append(math.sqrt(sum(s * s for s in chunk) / len(chunk)) if chunk else 0.0)
    peak = max(levels)
    if peak <= 0:
        return bytes(buckets)
    return bytes(min(255, round(255 * level / peak)) for level in levels)
