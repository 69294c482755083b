"""Console adapter: try threadline with only an OpenAI key. Same core path as the chat platforms.

Each input line is a message in the current thread. ``/new`` starts a new thread, ``/attach PATH`` adds a file
to the next message, ``/imagine PROMPT`` draws an image, ``/quit`` exits; a message starting with ``json:`` asks
for a JSON answer; ``/show work`` (or ``show work``) prints the code behind the latest answer; ``/reset``,
``/model``, ``/usage``, ``/kb`` and
``/help`` are the shared commands (``/kb add`` takes the files attached with ``/attach``).
With stdin not a terminal, it answers each line in order and exits 0 at end of input. The current thread is the
console thread used last, so a restart with the same database continues the same conversation.
"""

from __future__ import annotations

import asyncio
import getpass
import mimetypes
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from bot.answer_format import TEXT, split_answer_format
from bot.audio_encode import AudioFormat
from bot.errors import AttachmentError
from bot.gateway import Gateway
from bot.protocols import ReplyStream
from bot.types import Attachment, Fetch, IncomingMessage, OutgoingFile, TaskStep, ThreadKey, TurnKind, kind_for_mime

PLATFORM = "console"


class ConsoleReply:
    """Renders one answer: text streams to stdout, status lines and preview notes go to stderr."""

    audio_format = AudioFormat.OGG_OPUS

    def __init__(
        self, out: TextIO, err: TextIO, files_dir: Path, *, show_status: bool, prompt: str = "threadline> "
    ) -> None:
        self.out, self.err, self.files_dir, self.show_status = out, err, files_dir, show_status
        self.prompt = prompt
        self._started = False

    async def start(self) -> None:
        if not self._started:
            self._started = True
            self.out.write(self.prompt)
            self.out.flush()

    async def append(self, delta: str) -> None:
        self.out.write(delta)
        self.out.flush()

    async def attach(self, part: OutgoingFile) -> None:
        path = await self._save(part)
        self.out.write(f"\n[{part.kind.value} saved to {path}]")
        self.out.flush()

    async def step(self, step: TaskStep) -> None:
        if not step.done:
            await self.set_status(step.status)

    async def preview(self, part: OutgoingFile) -> None:
        path = await self._save(part, "preview-")
        self.err.write(f"… preview saved to {path}\n")
        self.err.flush()

    async def _save(self, part: OutgoingFile, prefix: str = "") -> Path:
        self.files_dir.mkdir(parents=True, exist_ok=True)
        path = self.files_dir / f"{prefix}{uuid.uuid4().hex[:8]}-{Path(part.filename).name}"
        await asyncio.to_thread(path.write_bytes, part.data)
        return path

    async def set_status(self, status: str) -> None:
        if self.show_status:
            self.err.write(f"… {status}\n")
            self.err.flush()

    async def finish(self) -> None:
        self.out.write("\n")
        self.out.flush()

    async def fail(self, message: str) -> None:
        prefix = "\n" if self._started else self.prompt
        self.out.write(f"{prefix}⚠ {message}\n")
        self.out.flush()


def file_attachment(path_text: str) -> Attachment:
    """An attachment that reads the file only when the engine needs it (its path is its source)."""
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise AttachmentError(f"No such file: {path}")
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Attachment(kind_for_mime(mime), mime, path.name, path.stat().st_size, read_file(str(path)), source=str(path))


def read_file(source: str) -> Fetch:
    path = Path(source)

    async def fetch() -> bytes:
        try:
            return await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise AttachmentError(f"I can no longer read {path.name}: {exc.strerror or exc}.") from exc

    return fetch


class ConsoleResumer:
    """Answers left by a previous run of the console (a crash mid-answer) are printed here."""

    def __init__(self, adapter: ConsoleAdapter) -> None:
        self.adapter = adapter

    def reply_for(self, key: ThreadKey, address: Mapping[str, str], *, posted: str | None) -> ReplyStream:
        a = self.adapter
        return ConsoleReply(a.out, a.err, a.files_dir, show_status=a.interactive)

    def fetch_for(self, key: ThreadKey, source: str) -> Fetch:
        return read_file(source)


class ConsoleAdapter:
    name = PLATFORM

    def __init__(
        self, gateway: Gateway, *, stdin: TextIO | None = None, out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        self.gateway = gateway
        self.stdin = stdin or sys.stdin
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.interactive = self.stdin.isatty()
        self.user = _user_name()
        self.files_dir = Path.cwd() / "threadline-files"
        self.thread = "main"  # until run() finds the console thread used last
        self._pending: list[Attachment] = []
        self._closed = False
        self._answering = False
        self._stops: set[asyncio.Task[bool]] = set()
        gateway.register(PLATFORM, ConsoleResumer(self))

    def interrupt(self) -> bool:
        """Ctrl-C: while an answer streams it stops that answer (True); otherwise the CLI quits as usual."""
        if not self._answering:
            return False
        task = asyncio.ensure_future(self.gateway.stop(self.key()))
        self._stops.add(task)
        task.add_done_callback(self._stops.discard)
        return True

    def key(self) -> ThreadKey:
        return ThreadKey(PLATFORM, "local", "console", self.thread)

    async def run(self) -> None:
        self.thread = await self.gateway.latest_thread(PLATFORM) or self.thread
        self.gateway.connected(PLATFORM, True)  # reading its input: /healthz counts it as connected
        if self.interactive:
            self.err.write("threadline console: type a message, /help for commands, /quit to exit.\n")
        while not self._closed:
            if self.interactive:
                self.err.write("you> ")
                self.err.flush()
            line = await asyncio.to_thread(self.stdin.readline)
            if not line:
                break
            text = line.rstrip("\n")
            if not text.strip():
                continue
            if text.startswith("/"):
                if not await self._command(text):
                    break
                continue
            await self._turn(text)
        await self.gateway.wait_idle()
        self.gateway.connected(PLATFORM, False)

    async def _turn(self, text: str, kind: TurnKind = TurnKind.CHAT) -> None:
        attachments, self._pending = tuple(self._pending), []
        answer_format, text = split_answer_format(text) if kind is TurnKind.CHAT else (TEXT, text)
        message = IncomingMessage(
            key=self.key(),
            user_id=self.user,
            text=text,
            attachments=attachments,
            kind=kind,
            answer_format=answer_format,
        )
        reply = ConsoleReply(self.out, self.err, self.files_dir, show_status=self.interactive)
        submission = await self.gateway.submit(message, reply)
        if submission.done is not None:
            self._answering = True
            try:
                await submission.done
            finally:
                self._answering = False

    async def _command(self, text: str) -> bool:
        """Run a slash command; False means quit."""
        name, _, arg = text[1:].partition(" ")
        name = name.lower()
        if name in {"quit", "exit"}:
            return False
        if name == "new":
            self.thread = uuid.uuid4().hex[:12]
            self._pending = []
            self.out.write("(new thread started)\n")
        elif name == "imagine":
            await self._turn(arg.strip(), kind=TurnKind.IMAGINE)
        elif name == "show":
            await self._turn(text[1:], kind=TurnKind.SHOW_WORK)  # /show work: the code behind the latest answer
        elif name == "kb" and arg.strip().lower().startswith("add"):
            await self._turn(text[1:])  # a message, so it carries the files attached with /attach
        elif name == "attach":
            try:
                self._pending.append(await asyncio.to_thread(file_attachment, arg.strip()))
                self.out.write(f"(attached {arg.strip()} to your next message)\n")
            except AttachmentError as exc:
                self.out.write(f"⚠ {exc}\n")
        else:
            reply = ConsoleReply(self.out, self.err, self.files_dir, show_status=False, prompt="")
            await self.gateway.command(text[1:], key=self.key(), user=self.user, reply=reply)
        self.out.flush()
        return True

    async def close(self) -> None:
        self._closed = True


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "console-user"


def load_settings() -> None:
    """The console has no settings of its own."""
    return None


def build(gateway: Gateway, settings: None = None) -> ConsoleAdapter:
    return ConsoleAdapter(gateway)


async def doctor_checks(gateway: Gateway, settings: None = None) -> list[tuple[bool, str]]:
    return [(True, "console adapter needs no credentials")]
