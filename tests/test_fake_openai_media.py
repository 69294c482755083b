"""The fake OpenAI's image streaming, edit masks and model shutdown dates, driven by the real openai SDK."""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator

import openai
import pytest
from PIL import Image

from tests.fakes import media
from tests.fakes.openai_server import FakeOpenAI, prompt_color

IMAGE_MODEL = "gpt-image-2.6-sunburst"


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=0)
    yield sdk
    await sdk.close()


def decode_png(b64: str) -> Image.Image:
    data = base64.b64decode(b64)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def rgba_png(width: int, height: int, *, hole: bool = True) -> bytes:
    """A mask: opaque, with a fully transparent square (the area to edit) when ``hole``."""
    mask = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    if hole:
        mask.paste((0, 0, 0, 0), (0, 0, width // 2, height // 2))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return out.getvalue()


# --- streamed generation --------------------------------------------------------------------------


async def test_streamed_generation_sends_partials_then_the_final_image(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
):
    stream = await client.images.generate(
        model=IMAGE_MODEL, prompt="a red fox", size="1024x1536", stream=True, partial_images=2
    )
    events = [event async for event in stream]

    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    partials, completed = events[:2], events[2]
    assert [p.partial_image_index for p in partials] == [0, 1]
    final = decode_png(completed.b64_json)
    assert final.size == (1024, 1536) and final.convert("RGB").getpixel((0, 0)) == prompt_color("a red fox")
    partial_colours = [decode_png(p.b64_json).convert("RGB").getpixel((0, 0)) for p in partials]
    assert all(decode_png(p.b64_json).size == (1024, 1536) for p in partials)
    assert len({*partial_colours, final.convert("RGB").getpixel((0, 0))}) == 3  # each step looks different
    assert completed.output_format == "png" and completed.usage.total_tokens > 0
    sent = [r.json for r in fake_openai.requests if r.path == "/v1/images/generations"]
    assert sent == [
        {"model": IMAGE_MODEL, "prompt": "a red fox", "size": "1024x1536", "stream": True, "partial_images": 2}
    ]


async def test_streamed_generation_without_partials_sends_only_the_final_image(client: openai.AsyncOpenAI):
    stream = await client.images.generate(
        model=IMAGE_MODEL, prompt="a blue whale", stream=True, partial_images=0, output_format="webp"
    )
    events = [event async for event in stream]
    assert [e.type for e in events] == ["image_generation.completed"]
    image = Image.open(io.BytesIO(base64.b64decode(events[0].b64_json)))
    assert image.format == "WEBP" and image.size == (1024, 1024)


async def test_plain_generation_still_answers_one_json_body(client: openai.AsyncOpenAI):
    result = await client.images.generate(model=IMAGE_MODEL, prompt="a fox", size="1536x1024")
    assert result.data and result.data[0].b64_json
    assert decode_png(result.data[0].b64_json).size == (1536, 1024)


# --- edits and masks ------------------------------------------------------------------------------


async def test_edit_with_a_good_mask_changes_the_image_and_keeps_its_size(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
):
    edited = await client.images.edit(
        model=IMAGE_MODEL,
        image=("in.png", media.png(40, 30, (255, 0, 0)), "image/png"),
        mask=("mask.png", rgba_png(40, 30), "image/png"),
        prompt="paint the corner",
    )
    assert edited.data and edited.data[0].b64_json
    result = decode_png(edited.data[0].b64_json)
    assert result.size == (40, 30) and result.convert("RGB").getpixel((0, 0)) != (255, 0, 0)
    form = fake_openai.requests[-1].form
    assert form is not None and form["mask"].data == rgba_png(40, 30)


async def test_edit_takes_several_images(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI):
    edited = await client.images.edit(
        model=IMAGE_MODEL,
        image=[("a.png", media.png(20, 10), "image/png"), ("b.jpg", media.jpeg(8, 8), "image/jpeg")],
        prompt="combine them",
    )
    assert edited.data and edited.data[0].b64_json
    assert decode_png(edited.data[0].b64_json).size == (20, 10)  # the first image's size
    form = fake_openai.requests[-1].form
    assert form is not None and [upload.filename for upload in form["image"]] == ["a.png", "b.jpg"]


@pytest.mark.parametrize(
    ("mask", "code", "words"),
    [
        (rgba_png(20, 20), "invalid_mask_format", "mask size 20x20 does not match image size 40x30"),
        (media.png(40, 30), "invalid_mask_format", "mask must have an alpha channel"),
        (media.jpeg(40, 30), "invalid_mask_format", "mask must be a PNG"),
        (media.corrupt(rgba_png(40, 30)), "invalid_image", "Invalid mask image"),
    ],
    ids=["wrong-size", "no-alpha", "jpeg", "damaged"],
)
async def test_edit_with_a_bad_mask_is_refused(client: openai.AsyncOpenAI, mask: bytes, code: str, words: str):
    with pytest.raises(openai.BadRequestError) as caught:
        await client.images.edit(
            model=IMAGE_MODEL,
            image=("in.png", media.png(40, 30), "image/png"),
            mask=("mask.png", mask, "image/png"),
            prompt="paint the corner",
        )
    assert caught.value.status_code == 400 and words in caught.value.message
    assert caught.value.code == code and caught.value.param == "mask"


async def test_mask_applies_to_the_first_of_several_images(client: openai.AsyncOpenAI):
    with pytest.raises(openai.BadRequestError, match="does not match image size 40x30"):
        await client.images.edit(
            model=IMAGE_MODEL,
            image=[("a.png", media.png(40, 30), "image/png"), ("b.png", media.png(16, 16), "image/png")],
            mask=("mask.png", rgba_png(16, 16), "image/png"),
            prompt="edit",
        )


# --- models ---------------------------------------------------------------------------------------


async def test_models_carry_their_shutdown_date_as_the_api_sends_it(client: openai.AsyncOpenAI):
    listed = {model.id: model.shutdown_date async for model in client.models.list()}
    assert listed["gpt-4o-mini-tts"] == "2027-01-06" and listed["whisper-1"] == "2027-02-26"
    assert listed["gpt-image-1.5"] == "2026-12-01" and listed["o3"] == "2026-12-11"
    current = ("gpt-6.2-sol", "gpt-realtime-2.1-mini", "gpt-transcribe", "gpt-image-2.6-sunburst")
    assert all(listed[model] is None for model in current)
    assert (await client.models.retrieve("gpt-5-mini")).shutdown_date == "2026-12-11"
    assert (await client.models.retrieve("gpt-6-luna")).shutdown_date is None


async def test_shutdowns_are_configurable():
    fake = FakeOpenAI(models=["old", "new"], shutdowns={"old": "2027-03-01"})
    sdk = openai.AsyncOpenAI(base_url=await fake.start(), api_key="test", max_retries=0)
    try:
        assert {m.id: m.shutdown_date async for m in sdk.models.list()} == {"old": "2027-03-01", "new": None}
    finally:
        await sdk.close()
        await fake.close()
