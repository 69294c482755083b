"""Backend-neutral stream events, and the decoder that makes them from Responses API server-sent events.

The engine's turn loop and the renderer (``bot.render``) only see these dataclasses, so a backend without the
Responses API (chat completions on a local server) reuses rendering, tool calls and usage by producing the same
events from its own stream.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bot.openai_errors import terminal_event_error
from bot.types import OutgoingFile, PartKind


@dataclass(frozen=True, slots=True)
class Started:
    """The server opened a response (its id lets a stopped turn read back its usage)."""

    response_id: str


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class Status:
    """A passing state with no step of its own ("thinking…")."""

    text: str


@dataclass(frozen=True, slots=True)
class Step:
    """Tool work started (``done=False``) or finished; ``id`` ties the two together."""

    id: str
    title: str
    done: bool = False


@dataclass(frozen=True, slots=True)
class FileOut:
    """A file the answer carries inline (a generated image)."""

    file: OutgoingFile


@dataclass(frozen=True, slots=True)
class Citation:
    """A source or output named in the answer: ``container_file_citation`` (a file the code made, fetched when the
    answer is complete), ``file_citation`` (a searched document; ``index`` is where in the answer's text it is
    cited, ``quote`` what the search found in it) or ``url_citation``."""

    kind: str
    file_id: str = ""
    filename: str = ""
    container_id: str = ""
    url: str = ""
    title: str = ""
    index: int | None = None
    quote: str = ""


@dataclass(frozen=True, slots=True)
class SearchResult:
    """A passage a file search found (a ``file_search_call``'s results, when the request includes them): the
    quote a later ``file_citation`` of the same file shows."""

    file_id: str
    filename: str
    text: str


@dataclass(frozen=True, slots=True)
class CodeRan:
    """The code interpreter ran in this response, in ``container_id`` (``show work`` reads the code back; files
    the code left there are looked for when the answer is complete)."""

    container_id: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asks the client to run a function; the answer goes back as a ``function_call_output``."""

    call_id: str
    name: str
    arguments: str
    item_id: str = ""

    @property
    def step_id(self) -> str:
        return self.item_id or self.call_id


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0  # of input_tokens, those served from the prompt cache (cheaper)


@dataclass(frozen=True, slots=True)
class Completed:
    """The response ended: fully, or cut short (``incomplete_reason``, e.g. ``max_output_tokens``)."""

    response_id: str | None
    model: str | None
    usage: Usage | None
    incomplete_reason: str | None = None


StreamEvent = Started | TextDelta | Status | Step | FileOut | Citation | SearchResult | CodeRan | ToolCall | Completed

# Tool work shown as steps (titles); reasoning is a plain status.
STEP_BY_ITEM = {
    "code_interpreter_call": "Running code",
    "image_generation_call": "Drawing",
    "file_search_call": "Searching the files",
    "web_search_call": "Searching the web",
}
STATUS_BY_ITEM = {"reasoning": "thinking…"}


def call_title(name: str) -> str:
    """The step shown while a function tool runs."""
    return f"Calling {name}"


def step_title(item: Mapping[str, Any]) -> str | None:
    """The step title of an output item, or None for items that are not tool work."""
    kind = str(item.get("type"))
    if kind == "function_call":
        return call_title(str(item.get("name") or "a tool"))
    if kind == "mcp_call":
        return f"Calling {item.get('name') or 'a tool'} on {item.get('server_label') or 'a server'}"
    if kind == "mcp_list_tools":
        return f"Listing the tools of {item.get('server_label') or 'a server'}"
    return STEP_BY_ITEM.get(kind)


def completed_from(response: Mapping[str, Any], incomplete_reason: str | None = None) -> Completed:
    """A response object (from a terminal event, or read back) as a ``Completed`` event."""
    usage = response.get("usage")
    return Completed(
        response_id=response.get("id"),
        model=response.get("model"),
        usage=(
            Usage(
                int(usage.get("input_tokens") or 0),
                int(usage.get("output_tokens") or 0),
                int(((usage.get("input_tokens_details") or {}).get("cached_tokens")) or 0),
            )
            if isinstance(usage, Mapping)
            else None
        ),
        incomplete_reason=incomplete_reason,
    )


def decode(event: Mapping[str, Any]) -> Iterator[StreamEvent]:
    """The neutral events of one Responses stream event (decoded JSON). ``response.failed`` and ``error`` raise
    a ``UserFacingError``; events that change nothing the user sees yield nothing."""
    kind = event.get("type")
    if kind == "response.created":
        response_id = (event.get("response") or {}).get("id")
        if response_id:
            yield Started(str(response_id))
    elif kind == "response.output_text.delta":
        if delta := event.get("delta"):
            yield TextDelta(str(delta))
    elif kind == "response.output_item.added":
        item = event.get("item") or {}
        if title := step_title(item):
            yield Step(str(item.get("id") or event.get("output_index")), title)
        elif status := STATUS_BY_ITEM.get(str(item.get("type"))):
            yield Status(status)
    elif kind == "response.output_item.done":
        yield from _item_done(event.get("item") or {}, event.get("output_index"))
    elif kind == "response.output_text.annotation.added":
        if citation := _citation(event.get("annotation") or {}):
            yield citation
    elif kind == "response.completed":
        yield completed_from(event.get("response") or {})
    elif kind == "response.incomplete":
        response = event.get("response") or {}
        reason = (response.get("incomplete_details") or {}).get("reason") or "unknown"
        yield completed_from(response, str(reason))
    elif kind == "response.failed":
        error = (event.get("response") or {}).get("error") or {}
        raise terminal_event_error("failed", error.get("code"), error.get("message"))
    elif kind == "error":
        raise terminal_event_error("reported an error", event.get("code"), event.get("message"))


def _item_done(item: Mapping[str, Any], index: Any) -> Iterator[StreamEvent]:
    kind = item.get("type")
    step_id = str(item.get("id") or index)
    if kind == "function_call":  # its step ends when the client has run it
        call_id, name, arguments = (str(item.get(key) or "") for key in ("call_id", "name", "arguments"))
        yield ToolCall(call_id, name, arguments, item_id=step_id)
        return
    if title := step_title(item):
        yield Step(step_id, title, done=True)
    if kind == "file_search_call":
        for result in item.get("results") or []:
            if isinstance(result, Mapping) and result.get("text"):
                file_id, filename = str(result.get("file_id") or ""), str(result.get("filename") or "")
                yield SearchResult(file_id, filename, str(result["text"]))
    if kind == "code_interpreter_call":
        yield CodeRan(str(item.get("container_id") or ""))
    if kind == "image_generation_call" and item.get("result"):
        fmt = item.get("output_format") or "png"
        data = base64.b64decode(item["result"])
        yield FileOut(OutgoingFile(PartKind.IMAGE, f"image.{fmt}", f"image/{fmt}", data))


def _citation(annotation: Mapping[str, Any]) -> Citation | None:
    kind = str(annotation.get("type") or "")
    if kind == "container_file_citation":
        return Citation(
            kind,
            file_id=str(annotation.get("file_id") or ""),
            filename=str(annotation.get("filename") or "file"),
            container_id=str(annotation.get("container_id") or ""),
        )
    if kind == "file_citation":
        index = annotation.get("index")
        return Citation(
            kind,
            file_id=str(annotation.get("file_id") or ""),
            filename=str(annotation.get("filename") or ""),
            index=index if isinstance(index, int) else None,
        )
    if kind == "url_citation":
        return Citation(kind, url=str(annotation.get("url") or ""), title=str(annotation.get("title") or ""))
    return None
