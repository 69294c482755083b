"""Turn a message's attachments into Responses API content parts.

Images and documents are uploaded once per thread (keyed by sha256 in the store); voice notes and audio are
transcribed and go in as text; small text files go in inline.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI

from bot.audio_chunks import split_audio
from bot.errors import AttachmentError
from bot.file_checks import check_file
from bot.media import normalize_image
from bot.protocols import ReplyStream
from bot.retrieval import checked_document
from bot.settings import Settings
from bot.store import Store, StoredImage
from bot.types import Attachment, AttachmentKind, IncomingMessage, ThreadKey
from bot.upload_routing import Route, RoutedFile, UploadRoutes, asks_for_analysis

log = logging.getLogger("threadline.attachments")

TRANSCRIBABLE = {"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "oga", "opus", "wav", "webm"}
INLINE_TEXT_MIMES = {"application/json", "application/xml", "application/x-yaml", "application/csv"}
INLINE_TEXT_LIMIT = 200_000
# Per-thread preference: the latest voice note's transcript, so "translate" can come in a later message.
LAST_TRANSCRIPT = "last_transcript"
TRANSCRIPT_KEPT_CHARS = 20_000
TRANSLATE_INSTRUCTION = (
    "Translate the voice note above into English. Answer with the English translation only; if it is already "
    "English, say so and repeat it."
)
_TRANSLATE = re.compile(r"\b(translate|translation|in english|into english|to english)\b", re.IGNORECASE)


def asks_for_translation(text: str) -> bool:
    return bool(_TRANSLATE.search(text))


# Kinds the code interpreter handles better than the model's file input (spreadsheets and the like).
CODE_FILE_SUFFIXES = {"xlsx", "xls", "csv", "tsv", "parquet", "zip", "json"}
# Data files that can go in as text when the code interpreter is off.
INLINE_DATA_SUFFIXES = {"csv", "tsv", "json"}


@dataclass
class TurnInput:
    content: list[dict[str, Any]] = field(default_factory=list)
    had_voice: bool = False
    had_image: bool = False
    transcripts: list[str] = field(default_factory=list)
    code_file_ids: list[str] = field(default_factory=list)
    retrieval_files: list[RoutedFile] = field(default_factory=list)  # checked documents for the thread's file search
    interpreter_files: list[RoutedFile] = field(default_factory=list)  # checked files for the thread's container
    vector_store_ids: list[str] = field(default_factory=list)  # the stores the turn's file search searches


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def _suffix(filename: str) -> str:
    return filename.rsplit(".", 1)[-1].lower() if "." in filename else ""


class AttachmentReader:
    def __init__(self, *, settings: Settings, store: Store, client: AsyncOpenAI) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self.routes = UploadRoutes(settings.upload_routes)

    async def build(self, message: IncomingMessage, reply: ReplyStream) -> TurnInput:
        turn = TurnInput()
        for attachment in message.attachments:
            self.check_size(attachment)
        for attachment in message.attachments:
            await reply.set_status("reading the file…")
            await self._add(turn, message, attachment, await self.read(attachment), reply)
        if asks_for_translation(message.text) and await self._translation(turn, message):
            return turn
        if message.text.strip():
            turn.content.insert(0, {"type": "input_text", "text": message.text})
        elif not turn.content:
            turn.content.append({"type": "input_text", "text": "(empty message)"})
        return turn

    def check_size(self, attachment: Attachment) -> None:
        """Refuse a file whose announced size is over its kind's limit, before anything is downloaded."""
        limit = self._limit(attachment)
        if attachment.size is not None and attachment.size > limit:
            raise AttachmentError(f"{attachment.filename} is {_mb(attachment.size)}; the limit is {_mb(limit)}.")

    async def read(self, attachment: Attachment) -> bytes:
        """Download an attachment, checking its size (announced and real) and that it is not empty."""
        self.check_size(attachment)
        data = await attachment.fetch()
        limit = self._limit(attachment)
        if len(data) > limit:
            raise AttachmentError(f"{attachment.filename} is {_mb(len(data))}; the limit is {_mb(limit)}.")
        if not data:
            raise AttachmentError(f"{attachment.filename} is empty.")
        return data

    def _limit(self, attachment: Attachment) -> int:
        audio = attachment.kind in {AttachmentKind.VOICE, AttachmentKind.AUDIO}
        return self.settings.max_audio_bytes if audio else self.settings.max_attachment_bytes

    async def _translation(self, turn: TurnInput, message: IncomingMessage) -> bool:
        """ "translate" with a voice note (or right after one): the text model translates the transcript. The
        audio translations endpoint is never used (it shuts down 2027-02-26)."""
        if not turn.transcripts:
            if message.attachments:
                return False
            last = await self.store.thread_pref(message.key, LAST_TRANSCRIPT)
            if not last:
                return False
            turn.content.append({"type": "input_text", "text": f"[Voice note, transcribed]: {last}"})
        turn.content.append({"type": "input_text", "text": TRANSLATE_INSTRUCTION})
        return True

    async def _add(
        self, turn: TurnInput, message: IncomingMessage, att: Attachment, data: bytes, reply: ReplyStream
    ) -> None:
        key = message.key
        route = self.routes.route(att.filename, att.kind)
        match att.kind:
            case AttachmentKind.IMAGE:
                image = normalize_image(data, att.filename)
                file_id = await self.upload_image(key, image.data, image.filename, image.mime)
                turn.had_image = True
                await self.store.save_thread_image(key, StoredImage(image.data, image.mime, "user", time.time()))
                turn.content.append({"type": "input_image", "file_id": file_id, "detail": "auto"})
            case AttachmentKind.VOICE | AttachmentKind.AUDIO:
                text = await self._transcribe(att, data, reply)
                turn.transcripts.append(text)
                await self.store.set_thread_pref(key, LAST_TRANSCRIPT, text[:TRANSCRIPT_KEPT_CHARS])
                turn.had_voice = turn.had_voice or att.kind is AttachmentKind.VOICE
                label = "Voice note" if att.kind is AttachmentKind.VOICE else f"Audio file {att.filename}"
                turn.content.append({"type": "input_text", "text": f"[{label}, transcribed]: {text}"})
            case _ if route is None:
                raise AttachmentError(self.routes.refusal(att.filename))
            case _ if route is Route.INTERPRETER:
                await self._for_interpreter(turn, att, data)
            case _ if route is Route.RETRIEVAL:
                max_bytes = self.settings.max_attachment_bytes
                turn.retrieval_files.append(await checked_document(att.filename, data, att.mime, max_bytes=max_bytes))
                if asks_for_analysis(message.text) and self.interpreter_on:
                    await self._for_interpreter(turn, att, data)
            case _ if self._is_text(att):
                text = data[:INLINE_TEXT_LIMIT].decode("utf-8", errors="replace")
                cut = " (truncated)" if len(data) > INLINE_TEXT_LIMIT else ""
                turn.content.append({"type": "input_text", "text": f"[File {att.filename}{cut}]\n{text}"})
            case _:
                file_id = await self._upload(key, data, att.filename, att.mime, "user_data")
                turn.content.append({"type": "input_file", "file_id": file_id})

    @property
    def interpreter_on(self) -> bool:
        return "code_interpreter" in self.settings.tools

    async def _for_interpreter(self, turn: TurnInput, att: Attachment, data: bytes) -> None:
        """A file for the code interpreter: checked (nothing is uploaded when it is bad), then handed to the
        engine, which puts it into the thread's container. With the interpreter off, text data goes in inline."""
        if not self.interpreter_on:
            if _suffix(att.filename) not in INLINE_DATA_SUFFIXES:
                raise AttachmentError(f"I can't open {att.filename}: the code interpreter is switched off here.")
            await asyncio.to_thread(check_file, att.filename, data, max_bytes=self.settings.max_attachment_bytes)
            text = data[:INLINE_TEXT_LIMIT].decode("utf-8", errors="replace")
            cut = " (truncated)" if len(data) > INLINE_TEXT_LIMIT else ""
            turn.content.append({"type": "input_text", "text": f"[File {att.filename}{cut}]\n{text}"})
            return
        await asyncio.to_thread(check_file, att.filename, data, max_bytes=self.settings.max_attachment_bytes)
        turn.interpreter_files.append(RoutedFile(att.filename, att.mime, data))
        turn.content.append({"type": "input_text", "text": f"[File {att.filename} is in the code interpreter's files]"})

    async def upload_image(self, key: ThreadKey, data: bytes, filename: str, mime: str) -> str:
        """Upload an image for vision once per thread (by content); returns its file id."""
        return await self._upload(key, data, filename, mime, "vision")

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

    async def _transcribe(self, att: Attachment, data: bytes, reply: ReplyStream) -> str:
        suffix = _suffix(att.filename)
        filename = att.filename if suffix in TRANSCRIBABLE else f"{att.filename}.ogg"
        if suffix not in TRANSCRIBABLE and "ogg" not in att.mime and "opus" not in att.mime:
            raise AttachmentError(
                f"I can't transcribe {att.filename}: send flac, mp3, mp4, m4a, ogg, wav or webm audio."
            )
        chunks = await asyncio.to_thread(
            split_audio,
            data,
            filename=filename,
            max_chunk_secs=self.settings.transcribe_chunk_secs,
            hard_cap_secs=self.settings.audio_max_minutes * 60,
        )
        texts: list[str] = []
        for chunk in chunks:  # in order: the transcript reads as one
            if len(chunks) > 1:
                await reply.set_status(f"transcribing part {len(texts) + 1} of {len(chunks)}…")
            try:
                result = await self.client.audio.transcriptions.create(
                    model=self.settings.transcription_model, file=(chunk.filename, chunk.data, chunk.mime)
                )
            except openai.BadRequestError as exc:
                raise AttachmentError(f"I couldn't transcribe {att.filename}: {exc.message}") from exc
            texts.append((getattr(result, "text", "") or "").strip())
        text = " ".join(t for t in texts if t)
        if not text:
            raise AttachmentError(f"I couldn't hear any words in {att.filename}.")
        return text
