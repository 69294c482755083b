"""Cut long recordings into pieces OpenAI's transcription endpoint accepts (at most 25 MB per file, design §2).

``split_audio`` decodes anything PyAV reads (Ogg/Opus, m4a, mp3, wav, webm, flac…) and, when the recording is
too big, too long or in a format the endpoint refuses, re-encodes it as consecutive mono Ogg/Opus chunks, cut
in a quiet moment when one is near the cut. It is CPU work and blocks: call it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import array
import io
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.errors import AttachmentError

if TYPE_CHECKING:
    from av.audio.frame import AudioFrame
    from av.audio.resampler import AudioResampler
    from av.audio.stream import AudioStream
    from av.container import InputContainer

log = logging.getLogger("threadline.audio_chunks")

MAX_UPLOAD_BYTES = 25 * 1024 * 1024
"""OpenAI's limit per transcription upload."""
SAMPLE_RATE = 16_000
"""Speech recognisers work at 16 kHz: more only makes the chunks bigger."""
OPUS_BITRATE = 24_000
"""Plenty for speech at 16 kHz mono: about 10.5 MB per hour."""
QUIET_ZONE = 0.10
"""A cut may move back by up to this share of a chunk to land in a pause instead of mid-word."""
_WINDOW_SECS = 0.02
_QUIET_RATIO = 0.25
"""A window counts as a pause when its loudness is under this share of the zone's median loudness."""
_DECLARED_SLACK = 1.02
"""Container durations can be estimates: reject on metadata alone only when it is clearly over the cap."""
# Container families (PyAV format names) and file extensions the endpoint takes as they are.
_ACCEPTED_FORMATS = {"flac", "mp3", "ogg", "wav", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"}
_MIME_BY_EXTENSION = {
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "mp4": "audio/mp4",
    "mpeg": "audio/mpeg",
    "mpga": "audio/mpeg",
    "m4a": "audio/mp4",
    "ogg": "audio/ogg",
    "wav": "audio/wav",
    "webm": "audio/webm",
}


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """One file to send for transcription; ``start_secs`` places it in the original recording."""

    data: bytes
    filename: str
    mime: str
    start_secs: float
    duration_secs: float


class AudioTooLong(AttachmentError):
    """The recording is longer than the configured cap (a cost guard): nothing is transcribed."""

    def __init__(self, limit_secs: float, actual_secs: float) -> None:
        self.limit_secs = limit_secs
        self.actual_secs = actual_secs
        actual = _minutes(actual_secs)
        if actual == _minutes(limit_secs):  # just over the limit must not read as equal to it
            actual = _minutes(actual_secs, up=True)
        super().__init__(
            f"That recording is {actual} minutes long; I can transcribe at most {_minutes(limit_secs)} minutes."
        )


class AudioUnreadable(AttachmentError):
    """The file is not audio PyAV can decode (damaged, truncated, or not audio at all)."""

    def __init__(self, filename: str, reason: str = "the file looks damaged or is not audio I know") -> None:
        self.filename = filename
        super().__init__(f"I couldn't read {filename} as audio: {reason}.")


def split_audio(
    data: bytes,
    *,
    filename: str,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_chunk_secs: float,
    hard_cap_secs: float,
) -> list[AudioChunk]:
    """The recording as transcription-ready chunks, in order; the original itself when it already fits.

    Raises ``AudioTooLong`` above ``hard_cap_secs`` and ``AudioUnreadable`` when it cannot be decoded.
    Blocking CPU work: run it in ``asyncio.to_thread``.
    """
    if max_bytes <= 0 or max_chunk_secs <= 0 or hard_cap_secs <= 0:
        raise ValueError("max_bytes, max_chunk_secs and hard_cap_secs must be positive")
    import av  # imported on first use: start-up does not pay for it

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, EOFError, OSError, ValueError) as exc:
        raise AudioUnreadable(filename) from exc
    with container:
        if not container.streams.audio:
            raise AudioUnreadable(filename, "there is no sound track in it")
        accepted = container.format.name in _ACCEPTED_FORMATS and _extension(filename) in _MIME_BY_EXTENSION
        declared = container.duration / 1_000_000 if container.duration else None
        if declared is not None and declared > hard_cap_secs * _DECLARED_SLACK:
            raise AudioTooLong(hard_cap_secs, declared)
        cutter = _Cutter(_chunk_samples(max_chunk_secs, max_bytes))
        try:
            decoded_secs = _decode_into(container, container.streams.audio[0], cutter, hard_cap_secs)
        except (av.FFmpegError, EOFError, OSError, ValueError) as exc:
            raise AudioUnreadable(filename) from exc
    if decoded_secs > hard_cap_secs:
        raise AudioTooLong(hard_cap_secs, max(decoded_secs, declared or 0.0))
    if cutter.total_samples == 0:
        raise AudioUnreadable(filename, "there is no sound in it")
    fits = len(data) <= max_bytes and decoded_secs <= max_chunk_secs and accepted
    if fits:
        return [AudioChunk(data, filename, _mime(filename), 0.0, decoded_secs)]
    cutter.finish()
    log.debug("split %s (%.1f s, %d bytes) into %d chunk(s)", filename, decoded_secs, len(data), len(cutter.pieces))
    return _name(cutter.pieces, filename, max_bytes)


# --- decoding -------------------------------------------------------------------------------------


def _decode_into(container: InputContainer, stream: AudioStream, cutter: _Cutter, hard_cap_secs: float) -> float:
    """Feed the stream as 16 kHz mono PCM to ``cutter``; returns the length in seconds. Past the cap it only
    adds up packet durations (no decoding), so a ten-hour file is refused quickly."""
    import av

    resampler: AudioResampler | None = None
    shape: tuple[str, str, int] | None = None
    cap_samples = hard_cap_secs * SAMPLE_RATE
    over_secs = 0.0
    for packet in container.demux(stream):
        if cutter.total_samples > cap_samples:
            if packet.duration and packet.time_base:
                over_secs += float(packet.duration * packet.time_base)
            continue
        for frame in packet.decode():
            # A chained Ogg file or a mid-stream format change needs a new resampler.
            frame_shape = (frame.format.name, frame.layout.name, frame.sample_rate)
            if resampler is None or frame_shape != shape:
                if resampler is not None:
                    _feed(cutter, resampler.resample(None))
                resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
                shape = frame_shape
            _feed(cutter, resampler.resample(frame))
    if resampler is not None:
        _feed(cutter, resampler.resample(None))
    return cutter.total_samples / SAMPLE_RATE + over_secs


def _feed(cutter: _Cutter, frames: list[AudioFrame]) -> None:
    for frame in frames:
        cutter.feed(bytes(frame.planes[0])[: frame.samples * 2])


# --- cutting and encoding -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Piece:
    data: bytes
    start_samples: int
    samples: int


class _Cutter:
    """Holds at most one chunk of PCM; emits an encoded piece each time more than a chunk has arrived."""

    def __init__(self, chunk_samples: int) -> None:
        self._chunk = chunk_samples
        self._pcm = bytearray()
        self._start = 0
        self.total_samples = 0
        self.pieces: list[_Piece] = []

    def feed(self, pcm: bytes) -> None:
        self._pcm += pcm
        self.total_samples += len(pcm) // 2
        while len(self._pcm) // 2 > self._chunk:  # strictly more: audio ending exactly at a cut needs none
            self._emit(_cut_point(self._pcm, self._chunk))

    def finish(self) -> None:
        if self._pcm:
            self._emit(len(self._pcm) // 2)

    def _emit(self, samples: int) -> None:
        pcm = bytes(self._pcm[: samples * 2])
        del self._pcm[: samples * 2]
        self.pieces.append(_Piece(_encode_ogg_opus(pcm), self._start, samples))
        self._start += samples


def _chunk_samples(max_chunk_secs: float, max_bytes: int) -> int:
    """Samples per chunk: the caller's limit, and at most half what the byte budget allows at our bitrate
    (Opus is variable-rate and Ogg adds pages)."""
    byte_bound_secs = max_bytes * 8 / OPUS_BITRATE / 2
    return max(1, int(min(max_chunk_secs, byte_bound_secs) * SAMPLE_RATE))


def _cut_point(pcm: bytearray, chunk: int) -> int:
    """Where to end the next chunk (in samples): the quietest 20 ms in the last ``QUIET_ZONE`` of it when that
    is clearly a pause, else exactly at ``chunk``."""
    window = max(1, int(_WINDOW_SECS * SAMPLE_RATE))
    zone_start = chunk - int(chunk * QUIET_ZONE)
    samples = array.array("h")
    samples.frombytes(bytes(pcm[zone_start * 2 : chunk * 2]))
    starts = range(0, len(samples) - window + 1, window)
    if len(starts) < 3:
        return chunk
    # Every other sample is enough to tell a pause from speech, at half the cost.
    loudness = [sum(map(abs, samples[i : i + window : 2])) for i in starts]
    median = sorted(loudness)[len(loudness) // 2]
    quietest = min(range(len(loudness)), key=lambda i: (loudness[i], -i))  # ties: the latest, longer chunks
    if loudness[quietest] >= median * _QUIET_RATIO:
        return chunk
    return zone_start + starts[quietest] + window // 2


def _encode_ogg_opus(pcm: bytes) -> bytes:
    """16 kHz mono s16 PCM as an Ogg/Opus file (``ogg`` is on the endpoint's list)."""
    import av

    out = io.BytesIO()
    with av.open(out, mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = OPUS_BITRATE
        frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm) // 2)
        frame.planes[0].update(pcm)
        frame.sample_rate = SAMPLE_RATE
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


def _name(pieces: list[_Piece], filename: str, max_bytes: int) -> list[AudioChunk]:
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    chunks = []
    for number, piece in enumerate(pieces, start=1):
        if len(piece.data) > max_bytes:  # only with a max_bytes far below any real upload limit
            raise ValueError(f"max_bytes={max_bytes} is too small to hold even a short Opus chunk")
        name = f"{stem}.ogg" if len(pieces) == 1 else f"{stem}-part{number}of{len(pieces)}.ogg"
        start, duration = piece.start_samples / SAMPLE_RATE, piece.samples / SAMPLE_RATE
        chunks.append(AudioChunk(piece.data, name, "audio/ogg", start, duration))
    return chunks


# --- small helpers --------------------------------------------------------------------------------


def _extension(filename: str) -> str:
    return filename.rsplit(".", 1)[-1].lower() if "." in filename else ""


def _mime(filename: str) -> str:
    return _MIME_BY_EXTENSION.get(_extension(filename), "application/octet-stream")


def _minutes(secs: float, *, up: bool = False) -> str:
    """Minutes with at most one decimal ("60", "1.5"), rounded up with ``up``."""
    tenths = math.ceil(secs / 6 - 1e-9) if up else round(secs / 6)
    return f"{tenths // 10}" if tenths % 10 == 0 else f"{tenths / 10:.1f}"
