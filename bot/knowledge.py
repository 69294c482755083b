"""A channel's knowledge base: documents every thread of the channel searches (``file_search``).

``kb add`` (with files attached), ``kb list`` and ``kb remove NAME`` are shared commands. ``kb add`` needs the
message's attachments, so a message whose text starts with ``kb`` is run here by the engine, in its thread's
turn, instead of going to the model; ``kb list``/``kb remove`` also come as plain commands (Slack's
``/threadline kb list``, the console's ``/kb list``). Who may change a knowledge base is one predicate,
``may_manage_knowledge``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.attachments_in import AttachmentReader
from bot.errors import AttachmentError
from bot.retrieval import Progress, Retrieval, checked_document, kb_scope
from bot.settings import Settings
from bot.store import Store
from bot.types import IncomingMessage, ThreadKey
from bot.upload_routing import Route, RoutedFile, UploadRoutes

_KB = re.compile(r"^\s*/?kb\s+(add|list|ls|remove|rm|delete)\b[ \t]*(.*?)\s*$", re.IGNORECASE | re.DOTALL)
_ACTIONS = {"add": "add", "list": "list", "ls": "list", "remove": "remove", "rm": "remove", "delete": "remove"}
KB_HELP = "`kb add` with files attached (documents every thread of this channel searches), `kb list`, `kb remove NAME`"
ADD_HOW = (
    "Attach the documents to a message that starts with `kb add` (in the console: `/attach FILE`, then `/kb add`)."
)


@dataclass(frozen=True, slots=True)
class KbCommand:
    action: str  # "add", "list" or "remove"
    argument: str = ""


def parse_kb(text: str) -> KbCommand | None:
    """A knowledge-base command at the start of a message (``kb add``, ``kb list``, ``kb remove NAME``)."""
    found = _KB.match(text)
    return KbCommand(_ACTIONS[found[1].lower()], found[2]) if found else None


def may_manage_knowledge(settings: Settings, key: ThreadKey, user_id: str) -> bool:
    """Whether this user may add to or remove from the channel's knowledge base. For now anyone who may use the
    bot here (the gateway checked that); the one place to make it admins only."""
    return True


class KnowledgeBase:
    def __init__(self, *, settings: Settings, store: Store, retrieval: Retrieval, reader: AttachmentReader) -> None:
        self.settings = settings
        self.store = store
        self.retrieval = retrieval
        self.reader = reader
        self.routes = UploadRoutes(settings.upload_routes)

    async def run(self, command: KbCommand, message: IncomingMessage, progress: Progress) -> str:
        """Run a command that came as a message (``kb add`` gets its attachments); returns the reply text."""
        if command.action == "add":
            if not may_manage_knowledge(self.settings, message.key, message.user_id):
                return "Sorry, you may not change this channel's knowledge base."
            return await self.add(message, progress)
        return await self.command(command, key=message.key, user_id=message.user_id)

    async def command(self, command: KbCommand, *, key: ThreadKey, user_id: str) -> str:
        """``kb list`` and ``kb remove NAME`` (``kb add`` needs a message with files: its reply says how)."""
        if command.action == "list":
            return await self.list(key)
        if not may_manage_knowledge(self.settings, key, user_id):
            return "Sorry, you may not change this channel's knowledge base."
        if command.action == "remove":
            return await self.remove(key, command.argument)
        return ADD_HOW

    async def add(self, message: IncomingMessage, progress: Progress) -> str:
        if not message.attachments:
            return ADD_HOW
        documents: list[RoutedFile] = []
        for attachment in message.attachments:  # every file is checked before any is uploaded
            if not self.routes.is_document(attachment.filename):
                kinds = ", ".join(self.routes.accepted(Route.RETRIEVAL))
                raise AttachmentError(f"{attachment.filename} is not a document I can add. I take: {kinds}.")
            self.reader.check_size(attachment)
        for attachment in message.attachments:
            data = await self.reader.read(attachment)
            max_bytes = self.settings.max_attachment_bytes
            documents.append(await checked_document(attachment.filename, data, attachment.mime, max_bytes=max_bytes))
        _store, indexed = await self.retrieval.add(kb_scope(message.key), documents, progress)
        lines: list[str] = []
        if added := [*indexed.ready, *indexed.pending]:
            lines.append(
                f"Added {_names(added)} to this channel's knowledge base: every thread here searches "
                f"{'it' if len(added) == 1 else 'them'} now."
            )
        if indexed.known:
            lines.append(f"{_names(indexed.known)} {'was' if len(indexed.known) == 1 else 'were'} there already.")
        lines += indexed.notes()
        return "\n".join(lines)

    async def list(self, key: ThreadKey) -> str:
        documents = await self.store.documents(kb_scope(key))
        if not documents:
            return f"This channel's knowledge base is empty. {ADD_HOW}"
        lines = [f"This channel's knowledge base ({len(documents)} document{'s' if len(documents) != 1 else ''}):"]
        for doc in documents:
            added = datetime.fromtimestamp(doc.added_at, UTC).strftime("%Y-%m-%d")
            lines.append(f"• {doc.name} (added {added})")
        return "\n".join(lines)

    async def remove(self, key: ThreadKey, name: str) -> str:
        name = name.strip().strip("`\"'")
        if not name:
            return "Say which document: `kb remove NAME` (`kb list` shows the names)."
        scope = kb_scope(key)
        exact = {doc.name for doc in await self.store.documents(scope)}
        if name not in exact:  # a name typed in another case still finds its document
            name = next((known for known in exact if known.lower() == name.lower()), name)
        removed = await self.retrieval.remove(scope, name)
        if not removed:
            return f"This channel's knowledge base has no document named {name}. `kb list` shows what it has."
        return f"Removed {name} from this channel's knowledge base."


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]}"
