"""Images on request: ``/imagine PROMPT`` through ``images.generate`` (with partial previews), and edits of a
thread's latest image through ``images.edit`` (with an optional mask).

Which messages are edits is decided here, from plain words: an image attached with an instruction that asks for a
change, or a follow-up that asks for a change right after an image turn ("now make it blue"). A question about
an image ("what is in it?") stays a chat turn.
"""

from __future__ import annotations

import base64
import io
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import openai
from openai import AsyncOpenAI

from bot.errors import AttachmentError, UserFacingError
from bot.media import pillow
from bot.openai_errors import api_error_message

log = logging.getLogger("threadline.imaging")

SIZES = ("auto", "1024x1024", "1536x1024", "1024x1536")
QUALITIES = ("auto", "low", "medium", "high")

# An instruction to change an image is an imperative: a change verb at the start of the message (after "now",
# "please", "can you"…), or a request for variations. "What's in the picture?" is a question; "Turn 2: what changed?"
# is not an instruction; "now make it blue" and "remove the tree" are.
_LEAD = r"^\s*(?:(?:ok(?:ay)?|now|then|please|pls|and|also|so|can you|could you|would you|let'?s)[,!.\s]+)*"
_VERBS = (
    r"(?:make|change|edit|recolou?r|colou?r|paint|remove|erase|delete|add|put|replace|swap|crop|extend|fix|redo|"
    r"redraw|give|draw it|turn (?:it|this|that|the|her|him|them)\b)"
)
_CHANGE = re.compile(_LEAD + _VERBS + r"\b", re.IGNORECASE)
_VARIATIONS = re.compile(r"\b(variations?|another version|more versions)\b", re.IGNORECASE)
_IMAGE_NOUNS = re.compile(r"\b(image|picture|photo|drawing|illustration|pic)\b", re.IGNORECASE)


def asks_for_change(text: str) -> bool:
    """Does this instruction ask to change an image (rather than ask about it)?"""
    text = text.strip()
    return bool(text) and bool(_CHANGE.match(text) or _VARIATIONS.search(text))


def asks_for_change_of_thread_image(text: str, *, last_turn_was_image: bool) -> bool:
    """A text-only follow-up edits the thread's image when it asks for a change and either the previous turn
    was about an image or it names the image ("make the picture brighter")."""
    if not asks_for_change(text):
        return False
    return last_turn_was_image or bool(_IMAGE_NOUNS.search(text))


@dataclass(frozen=True, slots=True)
class MadeImage:
    data: bytes
    fmt: str  # png, jpeg or webp

    @property
    def mime(self) -> str:
        return f"image/{self.fmt}"

    @property
    def filename(self) -> str:
        return f"image.{'jpg' if self.fmt == 'jpeg' else self.fmt}"


Preview = Callable[[int, MadeImage], Awaitable[None]]


def check_mask(image: bytes, mask: bytes, *, mask_name: str) -> None:
    """The images API wants a mask that is a PNG with an alpha channel, the size of the image: say exactly which
    of these a mask is not, before anything is sent."""
    pil = pillow()
    try:
        with pil.open(io.BytesIO(mask)) as probe:
            fmt, mode, size = probe.format, probe.mode, probe.size
            has_alpha = mode in {"RGBA", "LA", "PA"} or (mode == "P" and "transparency" in probe.info)
        with pil.open(io.BytesIO(image)) as base:
            image_size = base.size
    except (pil.UnidentifiedImageError, OSError, ValueError) as exc:
        raise AttachmentError(f"I couldn't read the mask {mask_name} as an image.") from exc
    if fmt != "PNG":
        raise AttachmentError(f"The mask {mask_name} must be a PNG (it is {fmt or 'not an image'}).")
    if not has_alpha:
        raise AttachmentError(
            f"The mask {mask_name} has no alpha channel: make the area to change transparent and save it as a "
            "PNG with transparency."
        )
    if size != image_size:
        raise AttachmentError(
            f"The mask {mask_name} is {size[0]}×{size[1]} but the image is {image_size[0]}×{image_size[1]}: "
            "they must be the same size."
        )


def image_format(data: bytes) -> str:
    pil = pillow()
    try:
        with pil.open(io.BytesIO(data)) as probe:
            return {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}.get(probe.format or "", "png")
    except (pil.UnidentifiedImageError, OSError):
        return "png"


class ImageMaker:
    """``images.generate`` and ``images.edit`` with the image model setting; errors become short replies."""

    def __init__(self, *, client: AsyncOpenAI, model: str, partial_images: int) -> None:
        self.client = client
        self.model = model
        self.partial_images = partial_images

    async def generate(self, prompt: str, *, size: str, quality: str, preview: Preview) -> MadeImage:
        options: dict[str, Any] = {"model": self.model, "prompt": prompt, "size": size, "quality": quality}
        try:
            if self.partial_images <= 0:
                result = await self.client.images.generate(**options)
                return _first_image(result.data, result.output_format)
            stream = await self.client.images.generate(**options, stream=True, partial_images=self.partial_images)
            async for event in stream:
                if event.type == "image_generation.partial_image":
                    partial = MadeImage(base64.b64decode(event.b64_json), event.output_format)
                    await preview(event.partial_image_index, partial)
                elif event.type == "image_generation.completed":
                    return MadeImage(base64.b64decode(event.b64_json), event.output_format)
        except openai.BadRequestError as exc:
            raise UserFacingError(f"OpenAI would not draw that: {exc.message}") from exc
        except openai.OpenAIError as exc:
            raise UserFacingError(api_error_message(exc, model=self.model)) from exc
        raise UserFacingError("The image stopped before it was finished. Please try again.")

    async def edit(self, instruction: str, image: MadeImage, mask: bytes | None) -> MadeImage:
        files: dict[str, Any] = {"image": (image.filename, image.data, image.mime)}
        if mask is not None:
            files["mask"] = ("mask.png", mask, "image/png")
        try:
            result = await self.client.images.edit(model=self.model, prompt=instruction, **files)
        except openai.BadRequestError as exc:
            raise UserFacingError(f"OpenAI would not edit that image: {exc.message}") from exc
        except openai.OpenAIError as exc:
            raise UserFacingError(api_error_message(exc, model=self.model)) from exc
        return _first_image(result.data, result.output_format)


def _first_image(data: Any, output_format: Any) -> MadeImage:
    if not data or not data[0].b64_json:
        raise UserFacingError("OpenAI sent no image back. Please try again.")
    raw = base64.b64decode(data[0].b64_json)
    return MadeImage(raw, str(output_format) if output_format else image_format(raw))
