"""How an accepted message is written into the durable inbox, and read back in any process.

What is kept is what a turn needs to run again after a crash: who asked, the text, the turn's options and each
attachment's metadata with its ``source`` (never its bytes, never a token). The adapter that owns the platform
turns a source back into a download (``Resumer.fetch_for``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bot.errors import AttachmentError
from bot.types import Attachment, AttachmentKind, Fetch, IncomingMessage, ThreadKey, TurnKind

FetchFor = Callable[[str], Fetch]


def encode_message(message: IncomingMessage) -> str:
    return json.dumps(
        {
            "user_id": message.user_id,
            "user_name": message.user_name,
            "text": message.text,
            "is_dm": message.is_dm,
            "user_roles": list(message.user_roles),
            "kind": message.kind.value,
            "image_size": message.image_size,
            "image_quality": message.image_quality,
            "answer_format": message.answer_format,
            "target": message.target,
            "attachments": [
                {
                    "kind": a.kind.value,
                    "mime": a.mime,
                    "filename": a.filename,
                    "size": a.size,
                    "duration_secs": a.duration_secs,
                    "source": a.source,
                }
                for a in message.attachments
            ],
        },
        ensure_ascii=False,
    )


def encode_address(address: dict[str, str]) -> str:
    return json.dumps(address, ensure_ascii=False, sort_keys=True)


def decode_address(text: str) -> dict[str, str]:
    data = json.loads(text or "{}")
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def decode_message(text: str, key: ThreadKey, address: dict[str, str], fetch_for: FetchFor) -> IncomingMessage:
    data: dict[str, Any] = json.loads(text)
    attachments = tuple(_attachment(item, fetch_for) for item in data.get("attachments") or ())
    return IncomingMessage(
        key=key,
        user_id=str(data.get("user_id") or ""),
        text=str(data.get("text") or ""),
        attachments=attachments,
        user_name=str(data.get("user_name") or ""),
        is_dm=bool(data.get("is_dm")),
        user_roles=tuple(str(r) for r in data.get("user_roles") or ()),
        kind=TurnKind(data.get("kind") or TurnKind.CHAT.value),
        image_size=str(data.get("image_size") or "auto"),
        image_quality=str(data.get("image_quality") or "auto"),
        answer_format=str(data.get("answer_format") or "text"),
        target=str(data.get("target") or ""),
        reply_address=address,
    )


def _attachment(item: dict[str, Any], fetch_for: FetchFor) -> Attachment:
    filename = str(item.get("filename") or "file")
    source = str(item.get("source") or "")
    fetch = fetch_for(source) if source else _gone(filename)
    size = item.get("size")
    duration = item.get("duration_secs")
    return Attachment(
        kind=AttachmentKind(item.get("kind") or AttachmentKind.OTHER.value),
        mime=str(item.get("mime") or ""),
        filename=filename,
        size=int(size) if size is not None else None,
        fetch=fetch,
        duration_secs=float(duration) if duration is not None else None,
        source=source,
    )


def _gone(filename: str) -> Fetch:
    async def fetch() -> bytes:
        raise AttachmentError(f"I can no longer fetch {filename} (it was sent before a restart). Please send it again.")

    return fetch
