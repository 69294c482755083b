"""Real media files made in memory for tests (Pillow for images, PyAV for audio): nothing is downloaded."""

from __future__ import annotations

import array
import io
import math

import av
from PIL import Image

Color = tuple[int, int, int]

_TONE_HZ = 440.0
_TONE_AMPLITUDE = 8000

# format name → (PyAV container format, codec, sample rate)
AUDIO_FORMATS: dict[str, tuple[str, str, int]] = {
    "opus": ("ogg", "libopus", 48_000),
    "mp3": ("mp3", "libmp3lame", 24_000),
    "aac": ("adts", "aac", 24_000),
    "m4a": ("ipod", "aac", 44_100),
    "flac": ("flac", "flac", 24_000),
    "wav": ("wav", "pcm_s16le", 24_000),
}
PCM_RATE = 24_000  # raw `pcm` speech output: 16-bit little-endian mono, as OpenAI's TTS sends it


def image(width: int = 64, height: int = 64, color: Color = (255, 0, 0), fmt: str = "PNG") -> bytes:
    """A solid-colour image in any format Pillow can write (PNG, JPEG, WEBP, GIF…)."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format=fmt)
    return out.getvalue()


def png(width: int = 64, height: int = 64, color: Color = (255, 0, 0)) -> bytes:
    return image(width, height, color, "PNG")


def jpeg(width: int = 64, height: int = 64, color: Color = (0, 0, 255)) -> bytes:
    return image(width, height, color, "JPEG")


def corrupt(data: bytes, keep: int = 16) -> bytes:
    """Damaged copy of a file: the first ``keep`` bytes (the magic number) survive, so sniffing still
    believes the type, but everything after is scrambled and the tail is cut off."""
    body = bytes(b ^ 0xA5 for b in data[keep:])
    return data[:keep] + body[: max(1, len(body) // 2)]


def pcm_tone(seconds: float, rate: int) -> bytes:
    """Signed 16-bit mono samples of a sine tone (440 Hz repeats exactly every second, so one second is
    computed and tiled)."""
    one_second = array.array(
        "h", (int(_TONE_AMPLITUDE * math.sin(2 * math.pi * _TONE_HZ * i / rate)) for i in range(rate))
    ).tobytes()
    total = int(seconds * rate) * 2
    return (one_second * (total // len(one_second) + 1))[:total]


def audio(seconds: float, fmt: str = "opus") -> bytes:
    """An encoded mono tone of ``seconds`` in one of AUDIO_FORMATS, or raw 24 kHz s16le for "pcm"."""
    if fmt == "pcm":
        return pcm_tone(seconds, PCM_RATE)
    container_format, codec, rate = AUDIO_FORMATS[fmt]
    pcm = pcm_tone(seconds, rate)
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout="mono")
        resampler = av.AudioResampler(format=stream.codec_context.format, layout="mono", rate=rate)
        step = 960 * 2  # 20 ms at 48 kHz, in bytes; encoders rebuffer to their own frame size
        frames = [_s16_frame(pcm[i : i + step], rate, i // 2) for i in range(0, len(pcm), step)]
        for frame in [*frames, None]:
            for resampled in resampler.resample(frame):
                container.mux(stream.encode(resampled))
        container.mux(stream.encode(None))
    return out.getvalue()


def _s16_frame(chunk: bytes, rate: int, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(chunk) // 2)
    frame.planes[0].update(chunk)
    frame.sample_rate = rate
    frame.pts = pts
    return frame


def ogg_opus_voice(seconds: float = 1.0) -> bytes:
    """A voice note as Discord and WhatsApp send them: Ogg container, Opus codec, 48 kHz mono."""
    return audio(seconds, "opus")


def m4a(seconds: float = 1.0) -> bytes:
    """AAC in an MP4 (.m4a) container, as iPhones record."""
    return audio(seconds, "m4a")


def wav(seconds: float = 1.0) -> bytes:
    return audio(seconds, "wav")


def mp3(seconds: float = 1.0) -> bytes:
    return audio(seconds, "mp3")


def pdf(text: str = "Hello from a test PDF.") -> bytes:
    """A minimal valid one-page PDF showing ``text`` (ASCII), with a correct cross-reference table."""
    safe = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = f"BT /F1 18 Tf 72 720 Td ({safe}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
