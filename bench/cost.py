"""Cost per turn as a thread grows: what is sent to the model, and what the model bills, at turns 1, 10 and 50.

threadline sends only the new message (the conversation lives on the server); the baseline (bench.baseline)
re-sends the whole history. Bytes are the request bodies the fake OpenAI received; input tokens are what the
fake bills (it counts the conversation's text server-side, as OpenAI does, so threadline is billed for history
too: the saving is in bytes, latency and re-uploads, not in tokens). A second thread sends an image on turn 1 and
counts the image bytes sent again on the turns after it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from PIL import Image

from bench.baseline import HistoryResendEngine
from bench.common import TimedReply, bench_settings
from bench.report import Row
from bot.inbox_codec import encode_message
from bot.runtime import build_openai_client, open_runtime
from bot.settings import Settings
from bot.store import open_store
from bot.turns import TurnHandler
from bot.types import Attachment, AttachmentKind, IncomingMessage, ThreadKey
from tests.fakes.openai_server import FakeOpenAI, FormFile, Recorded, Reply

CHECKPOINTS = (1, 10, 50)
IMAGE_TURNS = 10
BYTES_TARGET = 1.2
QUESTION = "Turn {n}: could you look at last quarter's numbers again and tell me, briefly, what changed and why?"
ANSWER = (
    "Here is what changed. Revenue grew 8% quarter on quarter, mostly from the two enterprise renewals that "
    "closed in the last week, while self-serve was flat. Costs rose 5%: hosting went up after the migration, "
    "and two new hires started in support. Gross margin held at 71%. The one thing to watch is churn in the "
    "small-business tier, which ticked up from 2.1% to 2.6%; the exit survey points at pricing, not product. "
    "If you want, I can break this down by region or compare it with the same quarter last year."
)


@dataclass(frozen=True, slots=True)
class TurnCost:
    model_bytes: int  # POST /v1/responses bodies
    other_bytes: int  # conversation creation, file uploads
    input_tokens: int  # what the model billed
    image_bytes: int  # image payload on the wire: uploads and inline data URLs


def _body_bytes(recorded: Recorded) -> int:
    for name, value in recorded.headers.items():
        if name.lower() == "content-length":
            return int(value)
    return len(json.dumps(recorded.json).encode()) if recorded.json is not None else 0


def _image_bytes(recorded: Recorded) -> int:
    if recorded.path == "/v1/files" and recorded.form:
        upload = recorded.form.get("file")
        is_image = isinstance(upload, FormFile) and (upload.content_type or "").startswith("image/")
        return len(upload.data) if is_image else 0  # type: ignore[union-attr]
    if recorded.path != "/v1/responses" or not isinstance(recorded.json, dict):
        return 0
    total = 0
    for item in recorded.json.get("input") or []:
        for part in item.get("content") or [] if isinstance(item, dict) else []:
            if isinstance(part, dict) and part.get("type") == "input_image":
                total += len(str(part.get("image_url") or ""))
    return total


def _cost(requests: list[Recorded], input_tokens: int) -> TurnCost:
    model = sum(_body_bytes(r) for r in requests if r.path == "/v1/responses")
    other = sum(_body_bytes(r) for r in requests if r.path != "/v1/responses")
    return TurnCost(model, other, input_tokens, sum(_image_bytes(r) for r in requests))


def photo_png(side: int = 256) -> bytes:
    """A photo-sized PNG (noise does not compress, like a photo)."""
    image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    out = BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _attachment(data: bytes) -> Attachment:
    async def fetch() -> bytes:
        return data

    return Attachment(AttachmentKind.IMAGE, "image/png", "photo.png", len(data), fetch)


def _message(thread: str, n: int, image: bytes | None) -> IncomingMessage:
    attachments = (_attachment(image),) if image is not None and n == 1 else ()
    key = ThreadKey("cost", "W1", "C1", thread)
    text = QUESTION.format(n=n)
    return IncomingMessage(key=key, user_id="U1", text=text, dedupe_keys=(f"{thread}-{n}",), attachments=attachments)


Ask = Callable[[IncomingMessage, TimedReply], Awaitable[None]]


async def _thread(
    fake: FakeOpenAI, ask: Ask, thread: str, count: int, tokens: Any, image: bytes | None = None
) -> list[TurnCost]:
    costs = []
    for n in range(1, count + 1):
        before = len(fake.requests)
        fake.script(Reply(text=ANSWER))
        reply = TimedReply()
        await ask(_message(thread, n, image), reply)
        if reply.failed:
            raise RuntimeError(f"cost turn {n} failed: {reply.failed}")
        costs.append(_cost(fake.requests[before:], await tokens()))
    return costs


async def _threadline(fake: FakeOpenAI, settings: Settings, turns: int, image: bytes) -> tuple[list[TurnCost], ...]:
    async with open_runtime(settings) as runtime:

        async def tokens() -> int:
            return (await runtime.store.usage_rows())[-1].input_tokens

        async def ask(message: IncomingMessage, reply: TimedReply) -> None:
            submission = await runtime.gateway.submit(message, reply)
            if submission.done is not None:
                await submission.done

        text = await _thread(fake, ask, "text", turns, tokens)
        with_image = await _thread(fake, ask, "image", IMAGE_TURNS, tokens, image)
    return text, with_image


async def _baseline(fake: FakeOpenAI, settings: Settings, turns: int, image: bytes) -> tuple[list[TurnCost], ...]:
    client = build_openai_client(settings)
    engine = HistoryResendEngine(client=client, model=settings.model, instructions=settings.instructions)
    store = await open_store(settings.database_location)
    handler = TurnHandler(settings=settings, engine=engine, store=store)

    async def tokens() -> int:
        return engine.input_tokens[-1]

    async def ask(message: IncomingMessage, reply: TimedReply) -> None:
        entry = await store.accept(message.dedupe_keys, message.key, message=encode_message(message), address="{}")
        assert entry is not None
        await handler.enqueue(entry, message, reply)

    try:
        text = await _thread(fake, ask, "text", turns, tokens)
        with_image = await _thread(fake, ask, "image", IMAGE_TURNS, tokens, image)
    finally:
        await client.close()
        await store.close()
    return text, with_image


def _at(costs: list[TurnCost], field: str) -> str:
    def short(value: int) -> str:
        return f"{value / 1000:.1f}k" if value >= 1000 else str(value)

    return " · ".join(f"t{n} {short(getattr(costs[n - 1], field))}" for n in CHECKPOINTS if n <= len(costs))


def _rows(name: str, text: list[TurnCost], with_image: list[TurnCost], judged: bool) -> list[Row]:
    last = min(CHECKPOINTS[-1], len(text))
    bytes_ratio = text[last - 1].model_bytes / text[0].model_bytes
    tokens_ratio = text[last - 1].input_tokens / text[0].input_tokens
    resent = sum(c.image_bytes for c in with_image[1:])
    first_image = with_image[0].image_bytes
    return [
        Row(
            measure="cost: request bytes/turn",
            adapter=name,
            unit="B",
            figure=_at(text, "model_bytes"),
            ratio=bytes_ratio,
            target=f"t{last}/t1 ≤ {BYTES_TARGET}×" if judged else "",
            passed=bytes_ratio <= BYTES_TARGET if judged else None,
            note="bytes of the responses.create body (what is sent to the model each turn)",
            extra={"per_turn": [c.model_bytes for c in text], "other_bytes": [c.other_bytes for c in text]},
        ),
        Row(
            measure="cost: billed input tokens/turn",
            adapter=name,
            unit="tokens",
            figure=_at(text, "input_tokens"),
            ratio=tokens_ratio,
            note="the fake bills the conversation's text, as OpenAI does; server-side history is billed too",
            extra={"per_turn": [c.input_tokens for c in text]},
        ),
        Row(
            measure=f"cost: image bytes re-sent (turns 2–{IMAGE_TURNS})",
            adapter=name,
            unit="B",
            figure=f"{resent:,} B",
            target="0" if judged else "",
            passed=resent == 0 if judged else None,
            note=f"image of {first_image:,} B sent on turn 1 (threadline: one upload, then a file id)",
            extra={"per_turn": [c.image_bytes for c in with_image]},
        ),
    ]


async def measure(folder: Path, turns: int = 50) -> list[Row]:
    image = photo_png()
    fake = FakeOpenAI()
    await fake.start()
    try:
        ours = await _threadline(fake, bench_settings(folder / "threadline", fake.base_url), turns, image)
        theirs = await _baseline(fake, bench_settings(folder / "baseline", fake.base_url), turns, image)
    finally:
        await fake.close()
    if fake.violations:
        raise RuntimeError(f"requests broke OpenAI's spec: {fake.violations[:3]}")
    return [
        *_rows("threadline", ours[0], ours[1], judged=True),
        *_rows("baseline: re-send history", theirs[0], theirs[1], judged=False),
    ]
