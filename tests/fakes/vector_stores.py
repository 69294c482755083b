"""Vector stores, their files and ``file_search`` for the fake OpenAI (``tests.fakes.openai_server``).

Routes: ``POST/GET/DELETE /vector_stores[/{id}]`` and ``POST/GET/DELETE /vector_stores/{id}/files[/{file_id}]``.
A file added to a store is ``in_progress`` until it has been read ``index_polls`` times, then ``completed``
(``failed`` for a file named in ``fail_files``). ``expire(id)`` is the expiry hook: the store reads back
``expired`` and a response searching it is refused, as a store past its ``expires_after`` is.

When a response offers ``file_search`` and the user asks a question (a "?"), the fake model searches: a
``file_search_call`` item (its ``results`` only when the request includes ``file_search_call.results``: each
file's best-matching passage, read from the uploaded bytes: PDF text through pypdf, Office XML, plain text),
then an answer quoting the best files, each sentence cited with a ``file_citation`` annotation whose ``index``
is where the sentence ends, streamed right after the text it cites.
"""

from __future__ import annotations

import io
import re
import time
import uuid
import zipfile
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pypdf import PdfReader
from pypdf.errors import PyPdfError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FileLookup = Callable[[str], Any]  # file id → the fake's StoredFile (filename, purpose, data) or None

QUESTION = re.compile(r"\?")
WORD = re.compile(r"[^\W_]{3,}", re.UNICODE)
OFFICE_TEXT = {"docx": "word/document.xml", "pptx": "ppt/slides/slide1.xml"}
NO_TEXT = "This document has no text the search could read."


def _error(status: int, message: str, param: str | None = None, code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
    return web.json_response(body, status=status)


@dataclass(slots=True)
class FakeStoreFile:
    file_id: str
    created_at: int
    status: str = "in_progress"
    reads: int = 0
    last_error: dict[str, str] | None = None


@dataclass(slots=True)
class FakeVectorStore:
    id: str
    name: str
    created_at: int
    expires_after: dict[str, Any] | None
    metadata: dict[str, str]
    files: dict[str, FakeStoreFile] = field(default_factory=dict)
    expired: bool = False
    last_active_at: int = field(default_factory=lambda: int(time.time()))


@dataclass(frozen=True, slots=True)
class Passage:
    file_id: str
    filename: str
    text: str
    score: float


def document_text(filename: str, data: bytes) -> str:
    """What the fake's indexer reads in a file: a PDF's text (pypdf), an Office file's XML text, or UTF-8 text."""
    if data.startswith(b"%PDF-"):
        try:
            reader = PdfReader(io.BytesIO(data))
            return " ".join((page.extract_text() or "") for page in reader.pages).strip()
        except (PyPdfError, ValueError, KeyError):
            return ""
    suffix = filename.rsplit(".", 1)[-1].lower()
    if suffix in OFFICE_TEXT:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                xml = archive.read(OFFICE_TEXT[suffix]).decode("utf-8", "replace")
        except (zipfile.BadZipFile, KeyError):
            return ""
        return " ".join(re.sub(r"<[^>]+>", " ", xml).split())
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return ""


def best_passage(text: str, question: str) -> tuple[str, float]:
    """The sentence of ``text`` sharing most words with ``question``, and a score in [0, 1]."""
    sentences = [s.strip() for s in re.split(r"(?<=[.!?。])\s+|\n+", text) if s.strip()]
    if not sentences:
        return NO_TEXT, 0.0
    asked = {w.lower() for w in WORD.findall(question)}

    def overlap(sentence: str) -> int:
        return len(asked & {w.lower() for w in WORD.findall(sentence)})

    best = max(sentences, key=overlap)
    return best[:400], min(1.0, overlap(best) / max(1, len(asked)))


class FakeVectorStores:
    """The vector-store half of the fake OpenAI. ``files`` looks up uploaded files by id."""

    def __init__(self, files: FileLookup) -> None:
        self._files = files
        self.stores: dict[str, FakeVectorStore] = {}
        self.deleted: list[str] = []
        self.index_polls = 2
        """Reads of a file's status before its indexing is done (the first read after adding still shows it
        in progress, so a client has to wait)."""
        self.fail_files: dict[str, str] = {}
        """Filename → the error message its indexing fails with."""

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/vector_stores", self._create),
            ("GET", "/vector_stores/{vector_store_id}", self._get),
            ("DELETE", "/vector_stores/{vector_store_id}", self._delete),
            ("POST", "/vector_stores/{vector_store_id}/files", self._add_file),
            ("GET", "/vector_stores/{vector_store_id}/files", self._list_files),
            ("GET", "/vector_stores/{vector_store_id}/files/{file_id}", self._get_file),
            ("DELETE", "/vector_stores/{vector_store_id}/files/{file_id}", self._delete_file),
        ]

    # hooks and inspection

    def expire(self, vector_store_id: str) -> None:
        """The store passed its expiry: it reads back ``expired`` and can no longer be searched."""
        self.stores[vector_store_id].expired = True

    def filenames(self, vector_store_id: str) -> list[str]:
        """The names of the files in a store, in the order they were added."""
        store = self.stores[vector_store_id]
        return [getattr(self._files(f), "filename", "?") for f in store.files]

    # routes

    async def _create(self, request: web.Request) -> web.Response:
        body = await request.json()
        store = FakeVectorStore(
            id=f"vs_{uuid.uuid4().hex}",
            name=str(body.get("name") or ""),
            created_at=int(time.time()),
            expires_after=body.get("expires_after"),
            metadata=dict(body.get("metadata") or {}),
        )
        for file_id in body.get("file_ids") or []:
            if (problem := self._attach(store, str(file_id))) is not None:
                return problem
        self.stores[store.id] = store
        return web.json_response(self._store_json(store))

    def _store(self, request: web.Request) -> FakeVectorStore | web.Response:
        vector_store_id = request.match_info["vector_store_id"]
        store = self.stores.get(vector_store_id)
        if store is None:
            return _error(404, f"No vector store found with id '{vector_store_id}'.", "vector_store_id")
        return store

    async def _get(self, request: web.Request) -> web.Response:
        store = self._store(request)
        if isinstance(store, web.Response):
            return store
        return web.json_response(self._store_json(store))

    async def _delete(self, request: web.Request) -> web.Response:
        store = self._store(request)
        if isinstance(store, web.Response):
            return store
        del self.stores[store.id]
        self.deleted.append(store.id)
        return web.json_response({"id": store.id, "object": "vector_store.deleted", "deleted": True})

    def _attach(self, store: FakeVectorStore, file_id: str) -> web.Response | None:
        stored = self._files(file_id)
        if stored is None:
            return _error(404, f"No file found with id '{file_id}'.", "file_id")
        if stored.purpose not in {"assistants", "user_data"}:
            return _error(400, f"File {file_id} has purpose '{stored.purpose}'; file search needs 'assistants'.")
        store.files[file_id] = FakeStoreFile(file_id, int(time.time()))
        return None

    async def _add_file(self, request: web.Request) -> web.Response:
        store = self._store(request)
        if isinstance(store, web.Response):
            return store
        if store.expired:
            return _error(400, f"Vector store {store.id} is expired.", "vector_store_id")
        file_id = str((await request.json()).get("file_id"))
        if (problem := self._attach(store, file_id)) is not None:
            return problem
        return web.json_response(self._file_json(store, store.files[file_id]))

    async def _list_files(self, request: web.Request) -> web.Response:
        store = self._store(request)
        if isinstance(store, web.Response):
            return store
        data = [self._file_json(store, f) for f in store.files.values()]
        first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
        return web.json_response(
            {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": False}
        )

    async def _get_file(self, request: web.Request) -> web.Response:
        store = self._store(request)
        if isinstance(store, web.Response):
            return store
        entry = store.files.get(request.match_info["file_id"])
        if entry is None:
            return _error(404, f"No file found with id '{request.match_info['file_id']}' in {store.id}.", "file_id")
        entry.reads += 1
        if entry.status == "in_progress" and entry.reads >= self.index_polls:
            stored = self._files(entry.file_id)
            failure = self.fail_files.get(getattr(stored, "filename", ""))
            entry.status = "failed" if failure else "completed"
            entry.last_error = {"code": "invalid_file", "message": failure} if failure else None
        return web.json_response(self._file_json(store, entry))

    async def _delete_file(self, request: web.Request) -> web.Response:
        store = self._store(request)
        if isinstance(store, web.Response):
            return store
        file_id = request.match_info["file_id"]
        if store.files.pop(file_id, None) is None:
            return _error(404, f"No file found with id '{file_id}' in {store.id}.", "file_id")
        return web.json_response({"id": file_id, "object": "vector_store.file.deleted", "deleted": True})

    def _store_json(self, store: FakeVectorStore) -> dict[str, Any]:
        counts = {status: 0 for status in ("in_progress", "completed", "failed", "cancelled")}
        for entry in store.files.values():
            counts[entry.status] += 1
        days = (store.expires_after or {}).get("days")
        expires_at = store.last_active_at + int(days) * 86400 if days else None
        status = "expired" if store.expired else ("in_progress" if counts["in_progress"] else "completed")
        return {
            "id": store.id,
            "object": "vector_store",
            "created_at": store.created_at,
            "name": store.name,
            "usage_bytes": sum(len(getattr(self._files(f), "data", b"")) for f in store.files),
            "file_counts": {**counts, "total": len(store.files)},
            "status": status,
            "expires_after": store.expires_after,
            "expires_at": expires_at,
            "last_active_at": store.last_active_at,
            "metadata": store.metadata,
        }

    def _file_json(self, store: FakeVectorStore, entry: FakeStoreFile) -> dict[str, Any]:
        stored = self._files(entry.file_id)
        return {
            "id": entry.file_id,
            "object": "vector_store.file",
            "usage_bytes": len(getattr(stored, "data", b"")),
            "created_at": entry.created_at,
            "vector_store_id": store.id,
            "status": entry.status,
            "last_error": entry.last_error,
            "chunking_strategy": {
                "type": "static",
                "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400},
            },
        }

    # responses

    def tool_problem(self, body: Mapping[str, Any]) -> web.Response | None:
        """A ``file_search`` tool naming a store that does not exist, or has expired, is refused."""
        for tool in body.get("tools") or []:
            if not isinstance(tool, dict) or tool.get("type") != "file_search":
                continue
            for vector_store_id in tool.get("vector_store_ids") or []:
                store = self.stores.get(vector_store_id)
                if store is None:
                    return _error(404, f"Vector store with id '{vector_store_id}' not found.", "tools")
                if store.expired:
                    return _error(400, f"Vector store {vector_store_id} is expired.", "tools")
        return None

    def search(self, body: Mapping[str, Any], question: str) -> tuple[dict[str, Any], str, list[dict[str, Any]]] | None:
        """The fake model's file search for ``question``: (the ``file_search_call`` item, the answer's text, its
        ``file_citation`` annotations), or None when the response offers no file search or nothing is asked."""
        tool = next(
            (t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "file_search"), None
        )
        if tool is None or not QUESTION.search(question):
            return None
        passages: list[Passage] = []
        for vector_store_id in tool.get("vector_store_ids") or []:
            store = self.stores[vector_store_id]
            store.last_active_at = int(time.time())
            for entry in store.files.values():
                stored = self._files(entry.file_id)
                if entry.status != "completed" or stored is None:
                    continue
                text, score = best_passage(document_text(stored.filename, stored.data), question)
                passages.append(Passage(entry.file_id, stored.filename, text, score))
        passages.sort(key=lambda p: -p.score)
        passages = passages[: int(tool.get("max_num_results") or 10)]
        wants_results = "file_search_call.results" in (body.get("include") or [])
        item = {
            "id": f"fs_{uuid.uuid4().hex}",
            "type": "file_search_call",
            "status": "completed",
            "queries": [question],
            "results": (
                [
                    {"file_id": p.file_id, "filename": p.filename, "text": p.text, "score": p.score, "attributes": {}}
                    for p in passages
                ]
                if wants_results
                else None
            ),
        }
        if not passages:
            return item, "I searched the files but found nothing about that.", []
        text = ""
        annotations: list[dict[str, Any]] = []
        for passage in passages[:2]:
            text += f"{' ' if text else ''}{passage.filename} says: «{passage.text[:160]}»"
            annotations.append(
                {"type": "file_citation", "file_id": passage.file_id, "filename": passage.filename, "index": len(text)}
            )
            text += "."
        return item, text, annotations


def search_events(item: Mapping[str, Any], index: int) -> Iterator[dict[str, Any]]:
    """The events of a ``file_search_call`` before its ``output_item.done``."""
    ids = {"item_id": item["id"], "output_index": index}
    yield {
        "type": "response.output_item.added",
        "output_index": index,
        "item": {**item, "status": "in_progress", "results": None},
    }
    yield {"type": "response.file_search_call.in_progress", **ids}
    yield {"type": "response.file_search_call.searching", **ids}
    yield {"type": "response.file_search_call.completed", **ids}
