"""Image and audio helpers: check and normalise what users send, measure what we send back."""

from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass
from types import ModuleType

from bot.errors import AttachmentError

log = logging.getLogger("threadline.media")

# Formats the vision models take as they are; anything else Pillow can read is converted to PNG.
_VISION_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
MAX_IMAGE_SIDE = 4096


@functools.cache
def pillow() -> ModuleType:
    """Pillow with HEIC/HEIF support (iPhone photos), imported on first use: start-up does not pay for it."""
    from PIL import Image
    from pillow_heif import register_heif_opener

    register_heif_opener()
    return Image


@dataclass(frozen=True, slots=True)
class ImageData:
    data: bytes
    mime: str
    filename: str


def normalize_image(data: bytes, filename: str) -> ImageData:
    """Verify an image and return it in a format the model accepts (PNG/JPEG/WEBP/still GIF)."""
    pil = pillow()
    try:
        with pil.open(io.BytesIO(data)) as probe:
            probe.verify()
        image = pil.open(io.BytesIO(data))
        image.load()
    except (pil.UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise AttachmentError(f"I couldn't read {filename} as an image: the file looks damaged.") from exc
    fmt = image.format or ""
    animated = bool(getattr(image, "is_animated", False))
    too_big = max(image.size) > MAX_IMAGE_SIDE
    if fmt in _VISION_FORMATS and not animated and not too_big:
        return ImageData(data, _VISION_FORMATS[fmt], filename)
    if too_big:
        image.thumbnail((MAX_IMAGE_SIDE, MAX_IMAGE_SIDE))
    if image.mode not in {"RGB", "RGBA", "L", "LA"}:
        image = image.convert("RGBA")
    out = io.BytesIO()
    image.save(out, format="PNG")
    stem = filename.rsplit(".", 1)[0] if "." in filename else filename
    return ImageData(out.getvalue(), "image/png", f"{stem}.png")


def audio_duration(data: bytes) -> float | None:
    """Duration in seconds of an encoded audio file, or None when it can't be decoded."""
    import av  # imported on first use: start-up does not pay for it

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.audio[0]
            if container.duration:
                return container.duration / 1_000_000
            if stream.duration and stream.time_base:
                return float(stream.duration * stream.time_base)
            samples = sum(int(frame.samples) for frame in container.decode(stream))
            return samples / stream.rate if stream.rate else None
    except (av.FFmpegError, IndexError, ValueError) as exc:
        log.info("could not measure audio duration: %s", exc)
        return None
