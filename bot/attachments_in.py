"""Turn a message's attachments into Responses API content parts.

Images and documents are uploaded once per thread (keyed by sha256 in the store); voice notes and audio are
transcribed and go in as text; small text files go in inline.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI

from bot.errors import AttachmentError
from bot.media import normalize_image
from bot.protocols import ReplyStream
from bot.settings import Settings
from bot.store import Store
from bot.types import Attachment, AttachmentKind, IncomingMessage, ThreadKey

log = logging.getLogger("threadline.attachments")

TRANSCRIBABLE = {"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "oga", "opus", "wav", "webm"}
INLINE_TEXT_MIMES = {"application/json", "application/xml", "application/x-yaml", "application/csv"}
INLINE_TEXT_LIMIT = 200_000
# Kinds the code interpreter handles better than the model's file input (spreadsheets and the like).
CODE_FILE_SUFFIXES = {"xlsx", "xls", "csv", "tsv", "parquet", "zip", "json"}


@dataclass
class TurnInput:
    content: list[dict[str, Any]] = field(default_factory=list)
    had_voice: bool = False
    code_file_ids: list[str] = field(default_factory=list)


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _suffix(filename: str) -> str:
    return filename.rsplit(".", 1)[-1].lower() if "." in filename else ""


class AttachmentReader:
    def __init__(self, *, settings: Settings, store: Store, client: AsyncOpenAI) -> None:
        self.settings = settings
        self.store = store
        self.client = client

    async def build(self, message: IncomingMessage, reply: ReplyStream) -> TurnInput:
        turn = TurnInput()
        limit = self.settings.max_attachment_bytes
        for attachment in message.attachments:
            if attachment.size is not None and attachment.size > limit:
                raise AttachmentError(f"{attachment.filename} is {_mb(attachment.size)}; the limit is {_mb(limit)}.")
        for attachment in message.attachments:
            await reply.set_status("reading the file…")
            data = await attachment.fetch()
            if len(data) > limit:
                raise AttachmentError(f"{attachment.filename} is {_mb(len(data))}; the limit is {_mb(limit)}.")
            if not data:
                raise AttachmentError(f"{attachment.filename} is empty.")
            await self._add(turn, message, attachment, data)
        if message.text.strip():
            turn.content.insert(0, {"type": "input_text", "text": message.text})
        elif not turn.content:
            turn.content.append({"type": "input_text", "text": "(empty message)"})
        return turn

    async def _add(self, turn: TurnInput, message: IncomingMessage, att: Attachment, data: bytes) -> None:
        key = message.key
        match att.kind:
            case AttachmentKind.IMAGE:
                image = normalize_image(data, att.filename)
                file_id = await self._upload(key, image.data, image.filename, image.mime, "vision")
                turn.content.append({"type": "input_image", "file_id": file_id, "detail": "auto"})
            case AttachmentKind.VOICE | AttachmentKind.AUDIO:
                text = await self._transcribe(att, data)
                turn.had_voice = turn.had_voice or att.kind is AttachmentKind.VOICE
                label = "Voice note" if att.kind is AttachmentKind.VOICE else f"Audio file {att.filename}"
                turn.content.append({"type": "input_text", "text": f"[{label}, transcribed]: {text}"})
            case _ if self._is_text(att):
                text = data[:INLINE_TEXT_LIMIT].decode("utf-8", errors="replace")
                cut = " (truncated)" if len(data) > INLINE_TEXT_LIMIT else ""
                turn.content.append({"type": "input_text", "text": f"[File {att.filename}{cut}]\n{text}"})
            case _ if _suffix(att.filename) in CODE_FILE_SUFFIXES and "code_interpreter" in self.settings.tools:
                file_id = await self._upload(key, data, att.filename, att.mime, "user_data")
                turn.code_file_ids.append(file_id)
                turn.content.append(
                    {
                        "type": "input_text",
                        "text": f"[File {att.filename} is in the code interpreter's files]",
                    }
                )
            case _:
                file_id = await self._upload(key, data, att.filename, att.mime, "user_data")
                turn.content.append({"type": "input_file", "file_id": file_id})

    @staticmethod
    def _is_text(att: Attachment) -> bool:
        mime = att.mime.split(";", 1)[0].lower()
        return (mime.startswith("text/") and _suffix(att.filename) not in {"csv", "tsv"}) or (
            mime in INLINE_TEXT_MIMES and _suffix(att.filename) not in CODE_FILE_SUFFIXES
        )

    async def _upload(self, thread_key: ThreadKey, data: bytes, filename: str, mime: str, purpose: str) -> str:
        digest = hashlib.sha256(data).hexdigest()
        known = await self.store.file_id(thread_key, digest)
        if known:
            return known
        try:
            uploaded = await self.client.files.create(file=(filename, data, mime), purpose=purpose)  # type: ignore[arg-type]
        except openai.BadRequestError as exc:
            raise AttachmentError(f"OpenAI would not accept {filename}: {exc.message}") from exc
        await self.store.save_file(thread_key, digest, uploaded.id)
        return uploaded.id

    async def _transcribe(self, att: Attachment, data: bytes) -> str:
        suffix = _suffix(att.filename)
        filename = att.filename if suffix in TRANSCRIBABLE else f"{att.filename}.ogg"
        if suffix not in TRANSCRIBABLE and "ogg" not in att.mime and "opus" not in att.mime:
            raise AttachmentError(
                f"I can't transcribe {att.filename}: send flac, mp3, mp4, m4a, ogg, wav or webm audio."
            )
        try:
            result = await self.client.audio.transcriptions.create(
                model=self.settings.transcription_model, file=(filename, data, att.mime)
            )
        except openai.BadRequestError as exc:
            raise AttachmentError(f"I couldn't transcribe {att.filename}: {exc.message}") from exc
        text = getattr(result, "text", "") or ""
        if not text.strip():
            raise AttachmentError(f"I couldn't hear any words in {att.filename}.")
        return text.strip()
