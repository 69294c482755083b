"""Images on request, end to end through the real SDK and the fake OpenAI: /imagine, edits of an attached image
(with and without a mask), follow-up edits of the thread's image, and what stays a chat turn."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from bot.imaging import asks_for_change, asks_for_change_of_thread_image
from bot.runtime import Runtime, open_runtime
from bot.types import Attachment, AttachmentKind, IncomingMessage, OutgoingFile, ThreadKey, TurnKind
from tests.fakes import media
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.helpers import RecordingReply, make_settings

KEY = ThreadKey("test", "W1", "C1", "t1")


@pytest.fixture
async def rt(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[Runtime]:
    async with open_runtime(make_settings(tmp_path, fake_openai.base_url)) as runtime:
        yield runtime


def png_attachment(name: str, data: bytes) -> Attachment:
    async def fetch() -> bytes:
        return data

    return Attachment(AttachmentKind.IMAGE, "image/png", name, len(data), fetch)


def rgba_mask(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (0, 0, 0, 0)).save(out, format="PNG")
    return out.getvalue()


async def turn(rt: Runtime, text: str, *attachments: Attachment, kind: TurnKind = TurnKind.CHAT) -> RecordingReply:
    reply = RecordingReply()
    message = IncomingMessage(key=KEY, user_id="U1", text=text, attachments=attachments, kind=kind)
    submission = await rt.gateway.submit(message, reply)
    assert submission.done is not None
    await submission.done
    return reply


def images_of(reply: RecordingReply) -> list[OutgoingFile]:
    return [f for f in reply.files if isinstance(f, OutgoingFile)]


def paths(fake: FakeOpenAI, path: str) -> list[object]:
    return [r for r in fake.requests if r.path == path]


async def test_imagine_streams_previews_posts_the_image_and_keeps_it_in_the_conversation(
    rt: Runtime, fake_openai: FakeOpenAI
) -> None:
    reply = await turn(rt, "a red bicycle", kind=TurnKind.IMAGINE)
    assert reply.failed is None and reply.finished
    (image,) = images_of(reply)
    assert Image.open(io.BytesIO(image.data)).format == "PNG" and image.mime == "image/png"
    assert len(reply.previews) == 2, "partial previews arrive before the final image"
    assert reply.statuses[0] == "drawing…"
    (conv,) = fake_openai.conversations.values()
    kept = [part for item in conv.items for part in item.get("content", [])]
    assert {"type": "input_text", "text": "Draw: a red bicycle"} in kept
    assert any(part.get("type") == "input_image" for part in kept), "follow-ups can see the picture"
    stored = await rt.store.last_thread_image(KEY)
    assert stored is not None and stored.data == image.data

    fake_openai.script(Reply(text="It is a bicycle."))
    answer = await turn(rt, "what is in the picture?")
    assert answer.text == "It is a bicycle." and not paths(fake_openai, "/v1/images/edits"), "a question is chat"
    assert fake_openai.responses_for(conv.id), "the question went to the same conversation"


async def test_attached_image_with_a_change_request_is_edited_and_a_follow_up_edits_the_result(
    rt: Runtime, fake_openai: FakeOpenAI
) -> None:
    photo = media.png(64, 48, (200, 10, 10))
    first = await turn(rt, "make the background blue", png_attachment("photo.png", photo))
    (edited,) = images_of(first)
    (request,) = paths(fake_openai, "/v1/images/edits")
    assert request.form["prompt"] == "make the background blue" and request.form["image"].data == photo
    assert "mask" not in request.form
    assert Image.open(io.BytesIO(edited.data)).size == (64, 48)

    again = await turn(rt, "make variations")
    assert len(images_of(again)) == 1
    second = paths(fake_openai, "/v1/images/edits")[1]
    assert second.form["image"].data == edited.data, "the follow-up edits the latest image of the thread"
    assert not [r for r in fake_openai.requests if r.path == "/v1/responses"]


async def test_a_second_png_is_the_mask_and_a_bad_mask_is_named_exactly(rt: Runtime, fake_openai: FakeOpenAI) -> None:
    photo = media.png(64, 48, (10, 200, 10))
    good = await turn(rt, "remove the tree", png_attachment("p.png", photo), png_attachment("m.png", rgba_mask(64, 48)))
    assert good.failed is None and len(images_of(good)) == 1
    (request,) = paths(fake_openai, "/v1/images/edits")
    assert request.form["mask"].data == rgba_mask(64, 48)

    wrong_size = await turn(rt, "remove it", png_attachment("p.png", photo), png_attachment("m.png", rgba_mask(32, 32)))
    assert wrong_size.failed == "The mask m.png is 32×32 but the image is 64×48: they must be the same size."
    opaque = await turn(rt, "remove it", png_attachment("p.png", photo), png_attachment("m.png", media.png(64, 48)))
    assert opaque.failed is not None and opaque.failed.startswith("The mask m.png has no alpha channel")
    jpeg_mask = Attachment(
        AttachmentKind.IMAGE, "image/jpeg", "m.jpg", 10, png_attachment("", media.jpeg(64, 48)).fetch
    )
    not_png = await turn(rt, "remove it", png_attachment("p.png", photo), jpeg_mask)
    assert not_png.failed == "The mask m.jpg must be a PNG (it is JPEG)."
    assert len(paths(fake_openai, "/v1/images/edits")) == 1, "a bad mask is refused before anything is sent"


async def test_an_image_with_a_question_is_a_chat_turn(rt: Runtime, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply(text="A red square."))
    reply = await turn(rt, "what is this?", png_attachment("p.png", media.png(16, 16)))
    assert reply.text == "A red square." and not paths(fake_openai, "/v1/images/edits")


async def test_imagine_without_a_prompt_and_a_refused_drawing_are_short_replies(
    rt: Runtime, fake_openai: FakeOpenAI
) -> None:
    empty = await turn(rt, "  ", kind=TurnKind.IMAGINE)
    assert empty.failed is not None and "Tell me what to draw" in empty.failed
    assert not paths(fake_openai, "/v1/images/generations")


@pytest.mark.parametrize(
    ("text", "after_image", "edit"),
    [
        ("now make it blue", True, True),
        ("make it blue", False, False),
        ("make the picture brighter", False, True),
        ("add a hat", True, True),
        ("what colour is it?", True, False),
        ("thanks!", True, False),
        ("can you describe it?", True, False),
        ("make variations", True, True),
        ("Turn 2: could you look at the numbers again and tell me what changed?", True, False),
        ("how do I make pancakes?", True, False),
        ("can you make the sky red?", True, True),
    ],
)
def test_which_follow_ups_are_edits(text: str, after_image: bool, edit: bool) -> None:
    assert asks_for_change_of_thread_image(text, last_turn_was_image=after_image) is edit
    assert asks_for_change("make the sky purple") and not asks_for_change("what is in the picture?")


async def test_a_follow_up_can_edit_an_image_a_user_posted(rt: Runtime, fake_openai: FakeOpenAI) -> None:
    photo = media.png(40, 30, (250, 200, 0))
    fake_openai.script(Reply(text="A yellow square."))
    asked = await turn(rt, "what is this?", png_attachment("mine.png", photo))
    assert asked.text == "A yellow square."
    edited = await turn(rt, "make it brighter")
    assert len(images_of(edited)) == 1
    (request,) = paths(fake_openai, "/v1/images/edits")
    assert request.form["image"].data == photo, "the user's own image is the one edited"
