"""``show work``: the code the interpreter ran for an answer, with its logs.

Asked as a message (``show work``; ``/show work`` in the console), or on Slack and Discord with a 🔍 reaction on
an answer. The store keeps, per thread, the responses that ran code (and the platform message that showed each
answer); the code and its logs are read back from OpenAI with ``include=["code_interpreter_call.outputs"]``. A
short result is posted as code blocks, a long one as ``code.py`` and ``logs.txt``. Only the asking thread's own
answers are ever read: a reaction's message is looked up within its platform and must belong to that thread.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import openai
from openai import AsyncOpenAI

from bot.store import AnswerRecord, Store
from bot.types import IncomingMessage, OutgoingFile, PartKind, ThreadKey, TurnKind

log = logging.getLogger("threadline.show_work")

SHORT_LINES = 40  # code up to this many lines (and SHORT_CHARS characters) is shown inline
SHORT_CHARS = 2500
LOGS_SHOWN = 1500
RECENT = 50  # code responses of a thread looked at for its latest answer

_REQUEST = re.compile(r"^\s*/?\s*show\s+(?:me\s+)?(?:your\s+|the\s+)?(?:work|code)\s*[.!?]*\s*$", re.IGNORECASE)


def is_show_work(text: str) -> bool:
    """``show work`` (or "show your work", "show the code"), alone in a message."""
    return bool(_REQUEST.match(text))


def wants_show_work(message: IncomingMessage) -> bool:
    """A 🔍 reaction (``TurnKind.SHOW_WORK``), or ``show work`` as a message of its own."""
    if message.kind is TurnKind.SHOW_WORK:
        return True
    return message.kind is TurnKind.CHAT and not message.attachments and is_show_work(message.text)


def answer_ref(reply: object) -> str:
    """The platform message that showed an answer (Slack's ``channel:ts``, Discord's message id), from a reply
    stream that knows it (``answer_ref``); empty elsewhere (the console)."""
    ref = getattr(reply, "answer_ref", None)
    return ref if isinstance(ref, str) else ""


@dataclass(frozen=True, slots=True)
class CodeRun:
    code: str
    logs: str
    images: int = 0


@dataclass(frozen=True, slots=True)
class Shown:
    """What to post: a text, and files when the code is too long to show inline."""

    text: str
    files: tuple[OutgoingFile, ...] = ()


async def answer_records(store: Store, key: ThreadKey, target: str) -> list[AnswerRecord]:
    """The responses of the answer ``target`` names (a platform message of this thread), or else (no target, or a
    message not kept, e.g. an earlier part of a long answer) the code responses of the thread's latest answer
    with code."""
    if target:
        records = [r for r in await store.answers_by_ref(key.platform, target) if r.key == key]
        if records:
            return records
    recent = await store.code_answers(key, RECENT)
    if not recent:
        return []
    latest = recent[0].ref
    return [r for r in recent if r.ref == latest]


async def code_runs(client: AsyncOpenAI, records: Sequence[AnswerRecord]) -> list[CodeRun]:
    """Each code_interpreter_call of the responses, oldest first (records come newest first)."""
    runs: list[CodeRun] = []
    for record in sorted(records, key=lambda r: r.at):
        response = await client.responses.retrieve(record.response_id, include=["code_interpreter_call.outputs"])
        for item in response.model_dump().get("output") or []:
            if isinstance(item, Mapping) and item.get("type") == "code_interpreter_call":
                runs.append(_run(item))
    return runs


def _run(item: Mapping[str, Any]) -> CodeRun:
    logs: list[str] = []
    images = 0
    for output in item.get("outputs") or []:
        if not isinstance(output, Mapping):
            continue
        if output.get("type") == "logs" and output.get("logs"):
            logs.append(str(output["logs"]).rstrip())
        elif output.get("type") == "image":
            images += 1
    return CodeRun(str(item.get("code") or "").rstrip(), "\n".join(logs), images)


def present(runs: Sequence[CodeRun]) -> Shown:
    """Code blocks when short, else ``code.py`` and ``logs.txt``."""
    if not runs:
        return Shown("That answer ran no code.")
    many = len(runs) > 1
    code = "\n\n".join(f"# --- step {n} ---\n{run.code}" if many else run.code for n, run in enumerate(runs, 1))
    logs = "\n".join(run.logs for run in runs if run.logs)
    images = sum(run.images for run in runs)
    pictures = f" It also drew {images} image{'s' if images > 1 else ''}." if images else ""
    what = f"{len(runs)} runs" if many else "one run"
    if code.count("\n") < SHORT_LINES and len(code) <= SHORT_CHARS and len(logs) <= LOGS_SHOWN:
        text = f"The code behind that answer ({what}):\n```python\n{code}\n```"
        text += f"\nLogs:\n```\n{logs}\n```" if logs else "\nIt printed no logs."
        return Shown(text + pictures)
    files = [OutgoingFile(PartKind.FILE, "code.py", "text/x-python", (code + "\n").encode(), title="code.py")]
    if logs:
        files.append(OutgoingFile(PartKind.FILE, "logs.txt", "text/plain", (logs + "\n").encode(), title="logs.txt"))
    named = "code.py and logs.txt" if logs else "code.py (it printed no logs)"
    return Shown(f"The code behind that answer ({what}) is in {named}.{pictures}", tuple(files))


async def show_work(client: AsyncOpenAI, store: Store, key: ThreadKey, target: str) -> Shown:
    records = await answer_records(store, key, target)
    if not records:
        return Shown("No code has run in this thread yet.")
    records = [r for r in records if r.code]
    if not records:
        return Shown("That answer ran no code.")
    try:
        return present(await code_runs(client, records))
    except openai.NotFoundError:
        return Shown("OpenAI no longer has that answer, so I can't show its code.")
    except openai.OpenAIError as exc:
        log.warning("could not read back the code of %s: %s", key, type(exc).__name__)
        return Shown(f"I couldn't read the code back from OpenAI ({type(exc).__name__}). Try again.")
