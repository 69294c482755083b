"""Retrieval with ``file_search``: a thread's documents in the thread's own vector store, a channel's knowledge
base in the channel's, and the ids a turn's ``file_search`` tool may search.

A scope (``bot.store.thread_scope`` / ``channel_scope``) has at most one vector store, made when its first
document comes, expiring ``THREADLINE_VECTOR_STORE_DAYS`` after its last use. The documents' OpenAI file ids are
kept, so a store that expired (or is gone) is rebuilt from them without the user sending anything again. A turn
only ever gets the stores of its own thread and its own channel: both scopes are built from the turn's thread
key, never looked up by anything a user typed.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import openai
from openai import AsyncOpenAI
from openai.types.vector_stores import VectorStoreFile

from bot.errors import AttachmentError
from bot.file_checks import check_file
from bot.settings import Settings
from bot.store import Document, Store, channel_scope, thread_scope
from bot.types import TaskStep, ThreadKey
from bot.upload_routing import RoutedFile

log = logging.getLogger("threadline.retrieval")

POLL_FIRST_SECS = 0.2
POLL_MAX_SECS = 2.0


def kb_scope(key: ThreadKey) -> str:
    """The knowledge base every thread of this thread's channel searches."""
    return channel_scope(key.platform, key.workspace, key.channel)


class Progress(Protocol):
    """Where indexing shows as a step ("Indexing 3 files"): the turn's renderer."""

    async def step(self, step: TaskStep) -> None: ...


async def checked_document(name: str, data: bytes, mime: str, *, max_bytes: int) -> RoutedFile:
    """``data`` as a document for retrieval, once ``bot.file_checks`` passed it (run off the event loop): a bad
    file is refused, naming it and the problem, before anything is uploaded."""
    await asyncio.to_thread(check_file, name, data, max_bytes=max_bytes)
    return RoutedFile(name, mime, data)


@dataclass(slots=True)
class Indexed:
    """What adding documents to a scope came to, by name."""

    ready: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)  # still indexing when the wait ran out: searchable once done
    known: list[str] = field(default_factory=list)  # the same bytes were there already
    failed: list[tuple[str, str]] = field(default_factory=list)  # (name, why)

    @property
    def searchable(self) -> list[str]:
        return [*self.ready, *self.pending, *self.known]

    def notes(self) -> list[str]:
        """What the user should hear about, one line each: documents that failed, and ones still indexing."""
        lines = [f"I couldn't index {name}: {why}" for name, why in self.failed]
        lines += [f"{name} is still being indexed; it becomes searchable when that finishes." for name in self.pending]
        return lines


@dataclass(frozen=True, slots=True)
class TurnSearch:
    """The vector stores one turn searches (its thread's, its channel's knowledge base), and what indexing the
    turn's own documents came to."""

    vector_store_ids: tuple[str, ...] = ()
    indexed: Indexed = field(default_factory=Indexed)


class Retrieval:
    def __init__(self, *, settings: Settings, store: Store, client: AsyncOpenAI) -> None:
        self.settings = settings
        self.store = store
        self.client = client
        # One lock per scope in use, so two turns never make two stores for one scope (this process).
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, scope: str) -> asyncio.Lock:
        lock = self._locks.get(scope)
        if lock is None:
            lock = self._locks[scope] = asyncio.Lock()
        return lock

    async def for_turn(
        self, key: ThreadKey, new: Sequence[RoutedFile], progress: Progress, *, knowledge: bool = True
    ) -> TurnSearch:
        """Index the turn's new documents into the thread's store; then the stores the turn searches: the
        thread's and (unless ``knowledge`` is off: the channel setting ``kb``) the channel's knowledge base, each
        when it holds documents (rebuilt first if it expired)."""
        ids: list[str] = []
        indexed = Indexed()
        if new:
            thread_store, indexed = await self.add(thread_scope(key), new, progress)
            if thread_store is not None:
                ids.append(thread_store)
        elif (thread_store := await self.searchable(thread_scope(key), progress)) is not None:
            ids.append(thread_store)
        if knowledge and (kb_store := await self.searchable(kb_scope(key), progress)) is not None:
            ids.append(kb_store)
        return TurnSearch(tuple(ids), indexed)

    async def searchable(self, scope: str, progress: Progress) -> str | None:
        """The scope's live vector store id, or None when the scope holds no documents."""
        documents = await self.store.documents(scope)
        if not documents:
            return None
        async with self._lock(scope):
            return await self._live(scope, documents, progress)

    async def add(self, scope: str, new: Sequence[RoutedFile], progress: Progress) -> tuple[str | None, Indexed]:
        """Upload and index documents into the scope's store (made or rebuilt as needed). A document with the
        name of an earlier one but new bytes replaces it. Returns the store id (None if the scope holds nothing
        searchable) and what indexing came to."""
        indexed = Indexed()
        async with self._lock(scope):
            documents = await self.store.documents(scope)
            vector_store = await self._live(scope, documents, progress)
            seen = {d.sha256 for d in documents}
            fresh: list[RoutedFile] = []
            for doc in new:
                if doc.sha256 in seen:
                    indexed.known.append(doc.name)
                else:
                    seen.add(doc.sha256)
                    fresh.append(doc)
            uploads = [(doc, await self._upload(doc)) for doc in fresh]
            states = await self._attach(vector_store, [(d.name, file_id) for d, file_id in uploads], progress)
            for doc, file_id in uploads:
                status, why = states[file_id]
                if status not in {"completed", "in_progress"}:
                    indexed.failed.append((doc.name, why or "OpenAI could not process it."))
                    await self._discard(vector_store, file_id)
                    continue
                (indexed.ready if status == "completed" else indexed.pending).append(doc.name)
                older = [d for d in documents if d.name == doc.name and d.sha256 != doc.sha256]
                if older:
                    await self.store.remove_documents(scope, doc.name)
                    for old in older:
                        await self._discard(vector_store, old.file_id)
                await self.store.save_document(scope, Document(doc.name, file_id, doc.sha256, time.time()))
            if not await self.store.documents(scope):
                return None, indexed
        return vector_store, indexed

    async def remove(self, scope: str, name: str) -> list[Document]:
        """Take the scope's documents of this name out of its store (and delete their files)."""
        async with self._lock(scope):
            removed = await self.store.remove_documents(scope, name)
            vector_store = await self.store.vector_store(scope)
            for doc in removed:
                await self._discard(vector_store, doc.file_id)
        return removed

    async def forget(self, scope: str) -> None:
        """Drop the scope's store and documents (a thread's ``reset``); OpenAI's copies are deleted, best effort."""
        async with self._lock(scope):
            vector_store = await self.store.vector_store(scope)
            documents = await self.store.documents(scope)
            await self.store.forget_scope(scope)
            for doc in documents:
                await self._discard(None, doc.file_id)
            if vector_store is not None:
                try:
                    await self.client.vector_stores.delete(vector_store)
                except openai.OpenAIError as exc:
                    log.info("could not delete vector store %s: %s", vector_store, type(exc).__name__)

    async def _live(self, scope: str, documents: Sequence[Document], progress: Progress) -> str:
        """The scope's vector store id: made now if it has none; rebuilt from ``documents`` if it expired or is
        gone (documents whose files are gone too are dropped)."""
        vector_store = await self.store.vector_store(scope)
        if vector_store is not None:
            try:
                found = await self.client.vector_stores.retrieve(vector_store)
            except openai.NotFoundError:
                log.info("vector store %s of %s is gone; rebuilding it", vector_store, scope)
            else:
                if found.status != "expired":
                    return vector_store
                log.info("vector store %s of %s expired; rebuilding it", vector_store, scope)
        created = await self.client.vector_stores.create(
            name=f"threadline {scope}"[:256],
            expires_after={"anchor": "last_active_at", "days": self.settings.vector_store_days},
        )
        await self.store.save_vector_store(scope, created.id)
        if documents:
            states = await self._attach(created.id, [(d.name, d.file_id) for d in documents], progress, "Re-indexing")
            for doc in documents:
                status, why = states[doc.file_id]
                if status not in {"completed", "in_progress"}:
                    log.warning("dropped %s from %s on rebuilding its store: %s", doc.name, scope, why)
                    await self.store.remove_documents(scope, doc.name)
        return str(created.id)

    async def _upload(self, doc: RoutedFile) -> str:
        try:
            uploaded = await self.client.files.create(file=(doc.name, doc.data, doc.mime), purpose="assistants")
        except openai.BadRequestError as exc:
            raise AttachmentError(f"OpenAI would not accept {doc.name}: {exc.message}") from exc
        return str(uploaded.id)

    async def _attach(
        self, vector_store: str, files: Sequence[tuple[str, str]], progress: Progress, verb: str = "Indexing"
    ) -> dict[str, tuple[str, str]]:
        """Add files (name, file id) to a vector store and wait, at most ``THREADLINE_INDEXING_TIMEOUT_SECS``,
        until each is indexed. Returns file id → (status, why it failed); "gone" for a file OpenAI lost."""
        states: dict[str, tuple[str, str]] = {}
        if not files:
            return states
        step = TaskStep(f"index:{vector_store}", f"{verb} {len(files)} file{'s' if len(files) != 1 else ''}")
        await progress.step(step)
        try:
            for _name, file_id in files:
                try:
                    attached = await self.client.vector_stores.files.create(vector_store, file_id=file_id)
                except openai.NotFoundError:
                    states[file_id] = ("gone", "its uploaded copy is gone from OpenAI; send it again.")
                    continue
                states[file_id] = _state(attached)
            deadline = time.monotonic() + self.settings.indexing_timeout_secs
            interval = POLL_FIRST_SECS
            while waiting := [file_id for file_id, (status, _) in states.items() if status == "in_progress"]:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.info("%d file(s) still indexing in %s after the wait", len(waiting), vector_store)
                    break
                await asyncio.sleep(min(interval, left))
                interval = min(interval * 2, POLL_MAX_SECS)
                for file_id in waiting:
                    found = await self.client.vector_stores.files.retrieve(file_id, vector_store_id=vector_store)
                    states[file_id] = _state(found)
        finally:
            await progress.step(TaskStep(step.id, step.title, done=True))
        return states

    async def _discard(self, vector_store: str | None, file_id: str) -> None:
        """Take a file out of a vector store and delete it; best effort (it may be gone already)."""
        try:
            if vector_store is not None:
                await self.client.vector_stores.files.delete(file_id, vector_store_id=vector_store)
        except openai.OpenAIError as exc:
            log.info("could not take %s out of %s: %s", file_id, vector_store, type(exc).__name__)
        try:
            await self.client.files.delete(file_id)
        except openai.OpenAIError as exc:
            log.info("could not delete file %s: %s", file_id, type(exc).__name__)


def _state(found: VectorStoreFile) -> tuple[str, str]:
    why = found.last_error.message if found.last_error is not None else ""
    return ("failed" if found.status == "cancelled" else found.status), why
