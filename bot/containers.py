"""A code-interpreter container per thread: made on first need, holding the thread's data files and the CJK font,
reused by every later turn of the thread, made again (with the same files) when it has expired.

Lifecycle of one thread's container:

- A data file arrives: it is checked, uploaded once to OpenAI Files and kept as a thread file (the store keeps the
  file id, never the bytes). The first turn that needs the interpreter makes the container
  (``containers.create``, memory ``THREADLINE_CONTAINER_MEMORY``) and copies the font and the thread's files in
  (``containers.files.create`` by file id); the store keeps the container id and what is in it.
- Later turns name the container in their ``code_interpreter`` tool, so "now plot it by week" sees the same files
  and whatever the code left there.
- A container that expired (OpenAI drops idle ones) or is gone is noticed before the turn (its status, or a 404)
  or when a response refuses it; a new one is made with the same files ("restoring your files…") and the turn
  goes on.
- Files the code made come back from ``container_file_citation`` annotations and, because those are sometimes
  missing, from the container's file list: files neither threadline put there nor already posted.

Only a thread's own key finds its container: nothing a user types or a model cites can name another one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import openai
from openai import AsyncOpenAI

from bot.errors import AttachmentError, UserFacingError
from bot.fonts import CjkFont, font_instruction, load_font
from bot.settings import Settings
from bot.store import ContainerFile, Store, ThreadFile
from bot.types import OutgoingFile, PartKind, ThreadKey
from bot.upload_routing import Route, RoutedFile

log = logging.getLogger("threadline.containers")

# Charts the code makes are posted as images; everything else as a file.
IMAGE_SUFFIXES = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
}
MAX_OUTPUTS = 10  # files posted from one turn's container list at most (citations come on top)

Status = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ThreadContainer:
    """The container a turn's code interpreter uses, and where its files are."""

    id: str
    font_path: str | None = None
    files: tuple[tuple[str, str], ...] = ()  # (file name as sent, path in the container)
    known: frozenset[str] = field(default_factory=frozenset)  # container file ids not to post as outputs
    missing: tuple[str, ...] = ()  # thread files OpenAI no longer has (the user must send them again)


class ContainerGone(Exception):
    """OpenAI no longer has the container (expired or deleted)."""


def gone_error(exc: openai.OpenAIError) -> bool:
    """Whether an API error says a container is expired or missing (a response naming it, or a container call)."""
    if not isinstance(exc, openai.NotFoundError | openai.BadRequestError):
        return False
    text = str(exc).lower()
    return "container" in text and any(word in text for word in ("expired", "not found", "no such", "does not exist"))


def output_file(filename: str, data: bytes) -> OutgoingFile:
    """A file the code made, as the platform shows it: charts as images, everything else as a file."""
    name = filename.rsplit("/", 1)[-1] or "file"
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix in IMAGE_SUFFIXES:
        return OutgoingFile(PartKind.IMAGE, name, IMAGE_SUFFIXES[suffix], data, title=name)
    mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return OutgoingFile(PartKind.FILE, name, mime, data, title=name)


def container_instructions(container: ThreadContainer) -> str:
    """What a turn's instructions say about the container: where the thread's files are, and the CJK font."""
    lines = []
    if container.files:
        listed = "; ".join(f"{name} at {path}" for name, path in container.files)
        lines.append(f"The files of this conversation are in your code interpreter: {listed}.")
    if container.font_path:
        lines.append(font_instruction(container.font_path))
    return "\n".join(lines)


class Containers:
    def __init__(self, *, settings: Settings, store: Store, client: AsyncOpenAI) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        self._font: CjkFont | None = None
        self._font_loaded = False
        self._font_lock = asyncio.Lock()
        # One lock per thread in use, so two turns never make two containers for one thread (this process).
        self._locks: weakref.WeakValueDictionary[ThreadKey, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, key: ThreadKey) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    # --- the thread's files ----------------------------------------------------------------------------------
    async def add_files(self, key: ThreadKey, files: Sequence[RoutedFile]) -> list[ThreadFile]:
        """Upload the turn's files for the interpreter (once per thread and content) and keep them as thread
        files; the container gets them when the turn's tools are built."""
        added = []
        for routed in files:
            file_id = await self.store.file_id(key, routed.sha256)
            if file_id is None:
                try:
                    uploaded = await self.client.files.create(
                        file=(routed.name, routed.data, routed.mime), purpose="user_data"
                    )
                except openai.BadRequestError as exc:
                    raise AttachmentError(f"OpenAI would not accept {routed.name}: {exc.message}") from exc
                file_id = uploaded.id
                await self.store.save_file(key, routed.sha256, file_id)
            thread_file = ThreadFile(routed.sha256, routed.name, routed.mime, Route.INTERPRETER, file_id, time.time())
            await self.store.add_thread_file(key, thread_file)
            added.append(thread_file)
        return added

    # --- the thread's container ------------------------------------------------------------------------------
    async def for_turn(self, key: ThreadKey, status: Status, *, create: bool) -> ThreadContainer | None:
        """The thread's live container with every thread file in it: the one it has (made again if it expired),
        or, with ``create``, a new one. None when the thread has none and ``create`` is false."""
        async with self._lock(key):
            container_id = await self.store.thread_container(key)
            if container_id is None and not create:
                return None
            if container_id is not None and not await self._alive(container_id):
                log.info("container %s of %s expired; making a new one", container_id, key)
                await status("restoring your files…")
                container_id = None
            if container_id is None:
                container_id = await self._create(key)
            try:
                return await self._fill(key, container_id, status)
            except ContainerGone:
                await status("restoring your files…")
                return await self._fill(key, await self._create(key), status)

    async def renew(self, key: ThreadKey, stale: str, status: Status) -> ThreadContainer:
        """The container ``stale`` was refused mid-turn: a new one with the same files (unless another turn
        already made one)."""
        async with self._lock(key):
            container_id = await self.store.thread_container(key)
            if container_id is None or container_id == stale:
                log.info("container %s of %s is gone; making a new one", stale, key)
                await status("restoring your files…")
                container_id = await self._create(key)
            return await self._fill(key, container_id, status)

    async def forget(self, key: ThreadKey) -> None:
        """A ``reset``: the thread's files and container are dropped (the container deleted, best effort)."""
        container_id = await self.store.forget_thread_files(key)
        if container_id is None:
            return
        try:
            await self.client.containers.delete(container_id)
        except openai.OpenAIError as exc:
            log.info("could not delete container %s: %s", container_id, type(exc).__name__)

    async def _alive(self, container_id: str) -> bool:
        try:
            container = await self.client.containers.retrieve(container_id)
        except openai.NotFoundError:
            return False
        except openai.OpenAIError as exc:
            raise UserFacingError(f"I couldn't reach the code interpreter ({type(exc).__name__}). Try again.") from exc
        return str(container.status).lower() not in {"expired", "deleted"}

    async def _create(self, key: ThreadKey) -> str:
        name = "threadline-" + hashlib.sha256(str(key).encode()).hexdigest()[:16]
        try:
            container = await self.client.containers.create(name=name, memory_limit=self.settings.container_memory)
        except openai.OpenAIError as exc:
            raise UserFacingError(f"I couldn't start the code interpreter ({type(exc).__name__}). Try again.") from exc
        await self.store.save_thread_container(key, container.id)
        log.info("made container %s for %s", container.id, key)
        return container.id

    async def _fill(self, key: ThreadKey, container_id: str, status: Status) -> ThreadContainer:
        """Put what is missing into the container: the font, then each thread file (by OpenAI file id)."""
        inside = {f.sha256: f for f in await self.store.container_files(container_id) if f.sha256}
        font_path = None
        if (font := await self._the_font()) is not None:
            if font.sha256 not in inside and (font_file := await self._put_font(container_id, font)) is not None:
                inside[font.sha256] = font_file
            font_path = inside[font.sha256].path if font.sha256 in inside else None
        placed: list[tuple[str, str]] = []
        missing: list[str] = []
        for thread_file in await self.store.thread_files(key):
            if thread_file.sha256 not in inside:
                await status(f"copying {thread_file.filename} into the code interpreter…")
                copied = await self._copy(container_id, thread_file.file_id, thread_file.sha256)
                if copied is None:
                    missing.append(thread_file.filename)
                    continue
                inside[thread_file.sha256] = copied
            placed.append((thread_file.filename, inside[thread_file.sha256].path))
        known = frozenset(f.file_id for f in await self.store.container_files(container_id))
        return ThreadContainer(container_id, font_path, tuple(placed), known, tuple(missing))

    async def _copy(self, container_id: str, file_id: str, sha256: str) -> ContainerFile | None:
        """Copy an OpenAI file into the container; None when that file is gone from OpenAI."""
        try:
            created = await self.client.containers.files.create(container_id, file_id=file_id)
        except openai.NotFoundError as exc:
            text = str(exc).lower()
            if "container" in text and "file" not in text:
                raise ContainerGone(container_id) from exc
            log.warning("file %s could not be copied into %s: %s", file_id, container_id, type(exc).__name__)
            return None
        except openai.OpenAIError as exc:
            raise UserFacingError(
                f"I couldn't copy a file into the code interpreter ({type(exc).__name__}). Try again."
            ) from exc
        copied = ContainerFile(created.id, created.path, sha256)
        await self.store.save_container_file(container_id, copied)
        return copied

    async def _the_font(self) -> CjkFont | None:
        async with self._font_lock:
            if not self._font_loaded:
                self._font = await asyncio.to_thread(load_font)
                self._font_loaded = True
                if self._font is None:
                    log.warning("no CJK font found (the noto-cjk-sans-otc package): CJK chart labels may show boxes")
        return self._font

    async def _put_font(self, container_id: str, font: CjkFont) -> ContainerFile | None:
        """The font into the container: uploaded to OpenAI Files once for all threads, then copied by id (and
        uploaded again if OpenAI no longer has that upload)."""
        for _ in range(2):
            file_id = await self.store.shared_file(font.sha256)
            if not file_id:
                try:
                    uploaded = await self.client.files.create(
                        file=(font.filename, font.data, "font/collection"), purpose="user_data"
                    )
                except openai.OpenAIError as exc:
                    log.warning("could not upload the CJK font: %s", type(exc).__name__)
                    return None
                file_id = uploaded.id
                await self.store.save_shared_file(font.sha256, file_id)
            copied = await self._copy(container_id, file_id, font.sha256)
            if copied is not None:
                return copied
            await self.store.save_shared_file(font.sha256, "")  # gone from OpenAI: the next round uploads it
        return None

    # --- what the code made ----------------------------------------------------------------------------------
    async def new_outputs(self, container: ThreadContainer, posted: set[str]) -> list[tuple[str, str]]:
        """(file id, path) of files in the container that threadline neither put there nor posted yet."""
        known = container.known | posted | {f.file_id for f in await self.store.container_files(container.id)}
        found: list[tuple[str, str]] = []
        try:
            async for item in self.client.containers.files.list(container.id, order="asc"):
                if item.id not in known and getattr(item, "source", "") != "user":
                    found.append((item.id, item.path))
        except openai.OpenAIError as exc:
            log.warning("could not list the files of %s: %s", container.id, type(exc).__name__)
        return found[:MAX_OUTPUTS]

    async def fetch(self, container_id: str, file_id: str) -> bytes:
        content = await self.client.containers.files.content.retrieve(file_id, container_id=container_id)
        return await content.aread()

    async def posted(self, container_id: str, file_id: str, path: str) -> None:
        """Remember an output as posted, so the file list does not bring it back in a later turn."""
        await self.store.save_container_file(container_id, ContainerFile(file_id, path))
