"""An offline fake of the OpenAI API surface threadline uses (design §2, §5), served by aiohttp on 127.0.0.1.

The real ``openai`` SDK talks to it over HTTP, so the wire format is exercised: SSE events in the real order,
OpenAI-shaped errors, conversations that accumulate items, real audio and image bytes. Every request body is
checked against OpenAI's published spec (``tests.fakes.spec``); mismatches land in ``fake.violations`` and get
a 400, like the real API.

Standalone: ``python -m tests.fakes.openai_server --port 8765`` serves it until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import io
import json
import logging
import re
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import av
from aiohttp import web
from PIL import Image, UnidentifiedImageError

from tests.fakes import media, spec
from tests.fakes.containers import FakeContainers
from tests.fakes.realtime import FakeRealtime
from tests.fakes.vector_stores import FakeVectorStores, search_events

log = logging.getLogger("threadline.fake_openai")

DEFAULT_MODELS = (
    "gpt-6.2-sol",
    "gpt-6-luna",
    "gpt-6.2-astra",
    "gpt-transcribe",
    "gpt-realtime-2.1-mini",
    "gpt-image-2.6-sunburst",
    # still listed, with a shutdown date (design §2)
    "gpt-4o-mini-tts",
    "tts-1",
    "tts-1-hd",
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-image-1.5",
    "gpt-image-1-mini",
    "chatgpt-image-latest",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "o3",
)
# model id → ``shutdown_date`` as GET /v1/models sends it: an ISO date string (spec: string, format date)
DEFAULT_SHUTDOWNS: Mapping[str, str | int] = {
    **dict.fromkeys(("gpt-4o-mini-tts", "tts-1", "tts-1-hd"), "2027-01-06"),
    **dict.fromkeys(("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"), "2027-02-26"),
    **dict.fromkeys(("gpt-image-1.5", "gpt-image-1-mini", "chatgpt-image-latest"), "2026-12-01"),
    **dict.fromkeys(("gpt-5", "gpt-5-mini", "gpt-5-nano", "o3"), "2026-12-11"),
}
DEFAULT_TRANSCRIPT = "this is a voice note"
MAX_BODY_BYTES = 100 * 1024 * 1024
SPEECH_MIME = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
IMAGE_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
STATUS_ERRORS: dict[int, tuple[str, str, str | None]] = {
    400: ("Invalid request (scripted by the test).", "invalid_request_error", None),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You are not allowed to use this model or tool.", "invalid_request_error", "unsupported_country"),
    404: ("The model does not exist or you do not have access to it.", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached on requests per min (RPM). Please try again in 0s.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- what tests script and read -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """How the fake answers one ``POST /v1/responses`` (queued with ``fake.script``)."""

    text: str | None = None
    """The answer. Default: quotes the user (see ``default_text``); empty for ``end`` failed/error."""
    ttft: float = 0.0
    token_interval: float = 0.0
    chunk: int = 4
    status: int | None = None
    """Answer with this HTTP error status instead (OpenAI-shaped body; 429 adds ``retry-after: 0``)."""
    cut_after: int | None = None
    """Drop the connection after this many characters of deltas: no terminal event."""
    end: Literal["completed", "failed", "incomplete", "error"] = "completed"
    usage: tuple[int, int] | None = None
    """(input_tokens, output_tokens). Default: a rough count of the conversation so far, len(text)//4+1."""
    cached_tokens: int = 0
    """``usage.input_tokens_details.cached_tokens`` (part of the input tokens)."""
    image_b64: str | None = None
    container_file: tuple[str, str, str, bytes] | None = None
    """(container_id, file_id, filename, data): a code_interpreter_call, then a container_file_citation."""
    function_calls: tuple[tuple[str, dict[str, Any]], ...] | None = None
    """(tool name, arguments): function_call items to emit, for tools the request offers (default: the scripted
    rules of ``auto_calls``, e.g. "weather in Paris and Tokyo" → two ``get_weather`` calls)."""
    conversation_missing: bool = False
    error_code: str | None = None
    """Code for ``status``/``end`` failed/error (defaults: per status; ``server_error`` for failed/error)."""
    error_message: str | None = None
    retry_after: str | None = None
    """The error's ``retry-after`` header (default: ``0`` for 429, none otherwise)."""


@dataclass(frozen=True, slots=True)
class FormFile:
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as it arrived. ``form`` maps multipart fields to str or FormFile (lists for ``x[]``)."""

    method: str
    path: str
    json: Any
    form: dict[str, Any] | None
    headers: dict[str, str]


RECORDED = web.RequestKey("recorded", Recorded)


@dataclass(slots=True)
class FakeConversation:
    id: str
    metadata: dict[str, str]
    items: list[dict[str, Any]] = field(default_factory=list)
    created_at: int = field(default_factory=lambda: int(time.time()))


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def error_response(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    code: str | None = None,
    *,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """An error the way OpenAI answers: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def conversation_not_found(conv_id: str) -> web.Response:
    return error_response(404, f"Conversation with id '{conv_id}' not found.", param="conversation")


# --- reading requests -----------------------------------------------------------------------------


def message_text(item: Mapping[str, Any]) -> str:
    """The text of a message item: a string content, or its input_text/output_text parts joined."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    kinds = {"input_text", "output_text"}
    texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") in kinds]
    return " ".join(t for t in texts if t)


def _is_message(item: Any) -> bool:
    return isinstance(item, dict) and "role" in item and item.get("type", "message") == "message"


def input_items(value: Any) -> list[dict[str, Any]]:
    """A request's ``input`` as stored conversation items (ids, ``type`` and content parts filled in)."""
    if isinstance(value, str):
        value = [{"role": "user", "content": value}]
    items: list[dict[str, Any]] = []
    for raw in value if isinstance(value, list) else []:
        item = dict(raw) if isinstance(raw, dict) else {}
        if _is_message(item):
            item["type"] = "message"
            if isinstance(item.get("content"), str):
                part = "output_text" if item["role"] == "assistant" else "input_text"
                item["content"] = [{"type": part, "text": item["content"]}]
            item.setdefault("id", new_id("msg_"))
            item.setdefault("status", "completed")
        items.append(item)
    return items


def attachment_count(items: list[dict[str, Any]]) -> int:
    return sum(
        1
        for item in items
        if _is_message(item)
        for part in item.get("content") or []
        if isinstance(part, dict) and part.get("type") in {"input_image", "input_file", "input_audio"}
    )


def default_text(history: list[str], current: str, attachments: int = 0) -> str:
    """The fake model's answer: deterministic and aware of the conversation, so a two-turn demo makes sense."""
    said = f"You said: «{current}»." if current else "You sent no text."
    if attachments:
        said += f" You attached {attachments} file{'s' if attachments > 1 else ''}."
    if history:
        said += f" Before that you said: «{history[-1]}»."
    return said


def rough_tokens(texts: list[str]) -> int:
    return sum(len(t) for t in texts) // 4 + 1


def conversation_id(value: Any) -> str | None:
    """``conversation`` is a string id or ``{"id": …}``."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) else None


# --- one response: its plan and its events --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float


@dataclass(frozen=True, slots=True)
class Commit:
    """The response is final: store it in its conversation before the terminal event goes out."""


@dataclass(frozen=True, slots=True)
class Cut:
    """Drop the connection here; the consumer stops reading the events."""


Step = dict[str, Any] | Pause | Commit | Cut


@dataclass(slots=True)
class Turn:
    """Everything one ``POST /v1/responses`` produces, computed up front."""

    body: dict[str, Any]
    reply: Reply
    conversation: FakeConversation | None
    text: str
    inputs: list[dict[str, Any]]
    usage: dict[str, Any]
    id: str = field(default_factory=lambda: new_id("resp_"))
    message_id: str = field(default_factory=lambda: new_id("msg_"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    tool_items: list[dict[str, Any]] = field(default_factory=list)
    citations: list[dict[str, Any]] = field(default_factory=list)  # file_citation annotations, by text index
    output: list[dict[str, Any]] = field(default_factory=list)
    sent_text: str = ""  # the text deltas the client was sent
    finished: bool = False  # the whole stream was written; a response read back before that was cut short

    def response(self, status: str, **extra: Any) -> dict[str, Any]:
        body = self.body
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "completed_at": int(time.time()) if status == "completed" else None,
            "conversation": {"id": self.conversation.id} if self.conversation else None,
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") or {},
            "model": body.get("model"),
            "output": list(self.output) if status != "in_progress" else [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": [_echo_tool(t) for t in body.get("tools") or []],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": None,
            "user": None,
            **extra,
        }


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") == "function":
        return {"description": None, "parameters": None, "strict": True, **tool}
    return tool


def plan_turn(body: dict[str, Any], reply: Reply, conversation: FakeConversation | None) -> Turn:
    inputs = input_items(body.get("input", []))
    earlier = [*(conversation.items if conversation else []), *inputs]
    user_texts = [message_text(i) for i in earlier if _is_message(i) and i.get("role") == "user"]
    last = inputs[-1] if inputs else None
    current = user_texts.pop() if _is_message(last) and last and last.get("role") == "user" else ""
    tool_outputs = [i for i in inputs if i.get("type") == "function_call_output"]
    calls = [] if reply.end in {"failed", "error"} else function_call_items(body, reply, current)
    mcp = [] if reply.end in {"failed", "error"} else mcp_items(body, current, conversation)
    if reply.text is not None:
        text = reply.text
    elif reply.end in {"failed", "error"} or calls:
        text = ""
    elif tool_outputs:
        text = tool_results_text(tool_outputs, earlier)
    else:
        text = default_text([t for t in user_texts if t], current, attachment_count(inputs))
        for item in mcp:
            if item["type"] == "mcp_call":
                text += f" The {item['server_label']} tool {item['name']} answered: «{item['output']}»."
    text_format = (body.get("text") or {}).get("format") or {}
    if text and reply.text is None and text_format.get("type") in {"json_object", "json_schema"}:
        text = json_answer(text_format, text)
    all_texts = [body.get("instructions") or "", *(message_text(i) for i in earlier if _is_message(i))]
    tokens_in, tokens_out = reply.usage or (rough_tokens(all_texts), len(text) // 4 + 1)
    usage = {
        "input_tokens": tokens_in,
        "input_tokens_details": {"cached_tokens": reply.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": tokens_out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": tokens_in + tokens_out,
    }
    turn = Turn(body=body, reply=reply, conversation=conversation, text=text, inputs=inputs, usage=usage)
    turn.tool_items.extend(mcp)
    if reply.image_b64:
        turn.tool_items.append(_image_item(reply.image_b64, current))
    if reply.container_file:
        turn.tool_items.append(_code_item(reply.container_file, body))
    turn.tool_items.extend(calls)
    return turn


# --- function calls, MCP calls and JSON answers -----------------------------------------------------

# What the fake model asks for when no answer is scripted: (pattern on the user's message, the tool it calls).
AUTO_CALLS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bweather (?:in|for) (.+?)[?.!]*$", re.IGNORECASE), "get_weather"),
    (re.compile(r"\btime (?:is it )?in ([A-Za-z_]+/[\w/+-]+|UTC)\b", re.IGNORECASE), "current_time"),
    (re.compile(r"\bcalculate (.+?)\s*$", re.IGNORECASE), "calculate"),
)


def offered_functions(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"}


def auto_calls(current: str, offered: Mapping[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """The calls a tool-using model would make for ``current``: "weather in Paris and Tokyo" is two calls, in
    parallel; each goes to the tool's first parameter."""
    for pattern, name in AUTO_CALLS:
        match = pattern.search(current)
        if match is None or name not in offered:
            continue
        params = offered[name].get("parameters") or {}
        first = next(iter(params.get("required") or params.get("properties") or ["input"]))
        values = re.split(r"\s*(?:,|\band\b)\s*", match[1]) if name == "get_weather" else [match[1]]
        return [(name, {first: value.strip()}) for value in values if value.strip()]
    return []


def function_call_items(body: Mapping[str, Any], reply: Reply, current: str) -> list[dict[str, Any]]:
    offered = offered_functions(body)
    if reply.function_calls is not None:
        wanted = list(reply.function_calls)
    else:  # a scripted answer is the answer: no calls of the fake's own
        wanted = auto_calls(current, offered) if reply.text is None else []
    return [
        {
            "id": new_id("fc_"),
            "type": "function_call",
            "call_id": new_id("call_"),
            "name": name,
            "arguments": json.dumps(arguments),
            "status": "completed",
        }
        for name, arguments in wanted
        if name in offered
    ]


def tool_results_text(outputs: list[dict[str, Any]], earlier: list[dict[str, Any]]) -> str:
    """The answer after a function_call_output round: each output quoted with its call id and tool."""
    names = {i.get("call_id"): i.get("name") for i in earlier if i.get("type") == "function_call"}
    quoted = [f"[{o.get('call_id')}] {names.get(o.get('call_id'), '?')} → {o.get('output')}" for o in outputs]
    return "Tool results: " + " | ".join(quoted)


def tool_output_problem(conversation: FakeConversation | None, items: list[dict[str, Any]], *, respond: bool) -> str:
    """What the real API would refuse about function call outputs: an output for a call this conversation never
    issued (or already answered), or, for a new response, a call of the conversation still without an output."""
    issued = [
        i.get("call_id") for i in (conversation.items if conversation else []) if i.get("type") == "function_call"
    ]
    answered = {
        i.get("call_id")
        for i in (conversation.items if conversation else [])
        if i.get("type") == "function_call_output"
    }
    given: set[Any] = set()
    for item in items:
        if item.get("type") != "function_call_output":
            continue
        call_id = item.get("call_id")
        if call_id not in issued or call_id in answered or call_id in given:
            return f"No tool call found for function call output with call_id {call_id}."
        given.add(call_id)
    missing = [c for c in issued if c not in answered and c not in given]
    if respond and missing:
        return f"No tool output found for function call {missing[0]}."
    return ""


def mcp_items(body: Mapping[str, Any], current: str, conversation: FakeConversation | None) -> list[dict[str, Any]]:
    """An ``mcp_call`` (after an ``mcp_list_tools`` the first time in a conversation) for each MCP server the
    user's message names by its label."""
    items: list[dict[str, Any]] = []
    listed = {
        i.get("server_label") for i in (conversation.items if conversation else []) if i.get("type") == "mcp_list_tools"
    }
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict) or tool.get("type") != "mcp" or not current:
            continue
        label = str(tool.get("server_label"))
        if not re.search(rf"\b{re.escape(label)}\b", current, re.IGNORECASE):
            continue
        allowed = tool.get("allowed_tools")
        names = allowed if isinstance(allowed, list) and allowed else ["search"]
        if label not in listed:
            schema = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
            listing = [{"name": n, "input_schema": schema, "description": f"{n} on {label}"} for n in names]
            items.append({"id": new_id("mcpl_"), "type": "mcp_list_tools", "server_label": label, "tools": listing})
        items.append(
            {
                "id": new_id("mcp_"),
                "type": "mcp_call",
                "server_label": label,
                "name": names[0],
                "arguments": json.dumps({"query": current}),
                "output": f"{label} found 3 results for {current!r}",
                "error": None,
                "status": "completed",
                "approval_request_id": None,
            }
        )
    return items


def json_problem(body: Mapping[str, Any]) -> str:
    """JSON mode needs the word "json" in the instructions or the input, as the real API insists."""
    text_format = (body.get("text") or {}).get("format") or {}
    if text_format.get("type") != "json_object":
        return ""
    said = [body.get("instructions") or "", *(message_text(i) for i in input_items(body.get("input", [])))]
    if any("json" in text.lower() for text in said):
        return ""
    return (
        "Response input messages must contain the word 'json' in some form to use 'text.format' of type 'json_object'."
    )


def json_answer(text_format: Mapping[str, Any], text: str) -> str:
    """The fake model's JSON answer: ``{"answer": …}`` in JSON mode, a sample of the schema otherwise."""
    if text_format.get("type") == "json_schema":
        schema = text_format.get("schema") or {}
        return json.dumps(sample_of(schema, schema, text), ensure_ascii=False)
    return json.dumps({"answer": text}, ensure_ascii=False)


def sample_of(schema: Any, root: Mapping[str, Any], text: str) -> Any:
    """A value that fits ``schema`` (strings are ``text``)."""
    if not isinstance(schema, Mapping):
        return None
    if isinstance(ref := schema.get("$ref"), str):
        target: Any = root
        for part in ref.removeprefix("#/").split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return sample_of(target, root, text)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            branches = [b for b in schema[key] if isinstance(b, Mapping) and b.get("type") != "null"]
            return sample_of((branches or schema[key])[0], root, text)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        properties = schema.get("properties") or {}
        return {name: sample_of(sub, root, text) for name, sub in properties.items()}
    if kind == "array":
        return [sample_of(schema.get("items") or {}, root, text)]
    return {"string": text, "integer": 1, "number": 1.5, "boolean": True}.get(str(kind))


def _image_item(b64: str, prompt: str) -> dict[str, Any]:
    return {
        "id": new_id("ig_"),
        "type": "image_generation_call",
        "status": "completed",
        "result": b64,
        "output_format": "png",
        "revised_prompt": prompt or "an image",
    }


def _code_item(container_file: tuple[str, str, str, bytes], body: Mapping[str, Any]) -> dict[str, Any]:
    container_id, _file_id, filename, _data = container_file
    wants_outputs = "code_interpreter_call.outputs" in (body.get("include") or [])
    return {
        "id": new_id("ci_"),
        "type": "code_interpreter_call",
        "status": "completed",
        "container_id": container_id,
        "code": f"# the fake's code\nwith open({filename!r}, 'wb') as f:\n    f.write(data)\n",
        "outputs": [{"type": "logs", "logs": f"saved {filename}"}] if wants_outputs else None,
    }


def turn_events(turn: Turn) -> Iterator[Step]:
    """The SSE events of a streamed response, in the real order, with pauses, the commit point and the cut.
    Sequence numbers are added by ``numbered``."""
    reply = turn.reply
    yield {"type": "response.created", "response": turn.response("in_progress")}
    yield {"type": "response.in_progress", "response": turn.response("in_progress")}
    if reply.ttft:
        yield Pause(reply.ttft)
    for index, item in enumerate(turn.tool_items):
        yield from _tool_events(item, index)
        turn.output.append(item)
    if reply.end == "failed":
        yield from _text_deltas(turn, len(turn.output))
        error = {"code": reply.error_code or "server_error", "message": reply.error_message or "The model failed."}
        yield {"type": "response.failed", "response": turn.response("failed", error=error, usage=turn.usage)}
        return
    if reply.end == "error":
        yield from _text_deltas(turn, len(turn.output))
        message = reply.error_message or "An error occurred while processing your request."
        yield {"type": "error", "code": reply.error_code or "server_error", "message": message, "param": None}
        return
    if turn.text or not any(item["type"] == "function_call" for item in turn.tool_items):
        yield from _message_events(turn, len(turn.output))
    yield Commit()
    if reply.end == "incomplete":
        details = {"reason": "max_output_tokens"}
        response = turn.response("incomplete", incomplete_details=details, usage=turn.usage)
        yield {"type": "response.incomplete", "response": response}
    else:
        yield {"type": "response.completed", "response": turn.response("completed", usage=turn.usage)}


def _tool_events(item: dict[str, Any], index: int) -> Iterator[Step]:
    ids = {"item_id": item["id"], "output_index": index}
    if item["type"] == "image_generation_call":
        added = {**item, "status": "in_progress", "result": None}
        yield {"type": "response.output_item.added", "output_index": index, "item": added}
        yield {"type": "response.image_generation_call.in_progress", **ids}
        yield {"type": "response.image_generation_call.generating", **ids}
        partial = {"partial_image_b64": item["result"], "partial_image_index": 0}
        yield {"type": "response.image_generation_call.partial_image", **ids, **partial}
        yield {"type": "response.image_generation_call.completed", **ids}
    elif item["type"] == "function_call":
        added = {**item, "status": "in_progress", "arguments": ""}
        yield {"type": "response.output_item.added", "output_index": index, "item": added}
        yield {"type": "response.function_call_arguments.delta", **ids, "delta": item["arguments"]}
        done = {"arguments": item["arguments"], "name": item["name"]}
        yield {"type": "response.function_call_arguments.done", **ids, **done}
    elif item["type"] == "mcp_list_tools":
        yield {"type": "response.output_item.added", "output_index": index, "item": {**item, "tools": []}}
        yield {"type": "response.mcp_list_tools.in_progress", **ids}
        yield {"type": "response.mcp_list_tools.completed", **ids}
    elif item["type"] == "mcp_call":
        added = {**item, "status": "in_progress", "arguments": "", "output": None}
        yield {"type": "response.output_item.added", "output_index": index, "item": added}
        yield {"type": "response.mcp_call_arguments.delta", **ids, "delta": item["arguments"]}
        yield {"type": "response.mcp_call_arguments.done", **ids, "arguments": item["arguments"]}
        yield {"type": "response.mcp_call.in_progress", **ids}
        yield {"type": "response.mcp_call.completed", **ids}
    elif item["type"] == "file_search_call":
        yield from search_events(item, index)
    else:
        added = {**item, "status": "in_progress", "code": "", "outputs": None}
        yield {"type": "response.output_item.added", "output_index": index, "item": added}
        yield {"type": "response.code_interpreter_call.in_progress", **ids}
        yield {"type": "response.code_interpreter_call_code.delta", **ids, "delta": item["code"]}
        yield {"type": "response.code_interpreter_call_code.done", **ids, "code": item["code"]}
        yield {"type": "response.code_interpreter_call.interpreting", **ids}
        yield {"type": "response.code_interpreter_call.completed", **ids}
    yield {"type": "response.output_item.done", "output_index": index, "item": item}


def _text_deltas(turn: Turn, index: int) -> Iterator[Step]:
    reply = turn.reply
    text = turn.text if reply.cut_after is None else turn.text[: reply.cut_after]
    size = max(1, reply.chunk)
    cited = {int(c["index"]) for c in turn.citations if 0 < int(c["index"]) < len(text)}  # a citation ends a delta
    starts = sorted(set(range(0, len(text), size)) | cited)
    for start, end in zip(starts, [*starts[1:], len(text)][: len(starts)], strict=True):
        if start and reply.token_interval:
            yield Pause(reply.token_interval)
        delta = text[start:end]
        ids = {"item_id": turn.message_id, "output_index": index, "content_index": 0}
        yield {"type": "response.output_text.delta", **ids, "delta": delta, "logprobs": []}
    if reply.cut_after is not None:
        yield Cut()


def _message_events(turn: Turn, index: int) -> Iterator[Step]:
    reply = turn.reply
    ids = {"item_id": turn.message_id, "output_index": index, "content_index": 0}
    message = {"id": turn.message_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    yield {"type": "response.output_item.added", "output_index": index, "item": message}
    empty = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    yield {"type": "response.content_part.added", **ids, "part": empty}
    annotations: list[dict[str, Any]] = []
    cites, sent = list(turn.citations), 0
    for step in _text_deltas(turn, index):  # each citation right after the text it cites, as the API streams them
        yield step
        if isinstance(step, dict) and step["type"] == "response.output_text.delta":
            sent += len(step["delta"])
            while cites and cites[0]["index"] <= sent:
                annotations.append(cites.pop(0))
                note = {"annotation_index": len(annotations) - 1, "annotation": annotations[-1]}
                yield {"type": "response.output_text.annotation.added", **ids, **note}
    if reply.container_file:
        container_id, file_id, filename, _data = reply.container_file
        annotations.append(
            {
                "type": "container_file_citation",
                "container_id": container_id,
                "file_id": file_id,
                "filename": filename,
                "start_index": 0,
                "end_index": len(turn.text),
            }
        )
        annotation = {"annotation_index": len(annotations) - 1, "annotation": annotations[-1]}
        yield {"type": "response.output_text.annotation.added", **ids, **annotation}
    yield {"type": "response.output_text.done", **ids, "text": turn.text, "logprobs": []}
    part = {"type": "output_text", "text": turn.text, "annotations": annotations, "logprobs": []}
    yield {"type": "response.content_part.done", **ids, "part": part}
    status = "incomplete" if reply.end == "incomplete" else "completed"
    done = {**message, "status": status, "content": [part]}
    turn.output.append(done)
    yield {"type": "response.output_item.done", "output_index": index, "item": done}


def numbered(steps: Iterator[Step]) -> Iterator[Step]:
    """Add ``sequence_number`` to every event, counting from 0."""
    number = 0
    for step in steps:
        if isinstance(step, dict):
            step = {**step, "sequence_number": number}
            number += 1
        yield step


def sse(event: Mapping[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


# --- media answers --------------------------------------------------------------------------------


def audio_seconds(data: bytes) -> float | None:
    """Decoded length of an audio file, or None if PyAV can't decode it."""
    try:
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.audio[0]
            samples = sum(frame.samples for frame in container.decode(stream))
            return samples / stream.rate if stream.rate else None
    except (av.FFmpegError, EOFError, IndexError, ValueError):
        return None


def speech_audio(text: str, fmt: str) -> bytes:
    """A sine tone about as long as reading ``text`` aloud (15 chars a second, at most 10 s)."""
    seconds = min(10.0, max(0.5, len(text) / 15))
    return media.audio(seconds, fmt)


def prompt_color(prompt: str) -> media.Color:
    digest = hashlib.sha256(prompt.encode()).digest()
    return digest[0], digest[1], digest[2]


def image_size(size: Any) -> tuple[int, int]:
    try:
        width, height = (int(n) for n in str(size).split("x"))
    except ValueError:
        return 1024, 1024
    return width, height


def encode_image(image: Image.Image, fmt: str) -> str:
    out = io.BytesIO()
    (image.convert("RGB") if fmt == "jpeg" else image).save(out, format=IMAGE_FORMATS.get(fmt, "PNG"))
    return base64.b64encode(out.getvalue()).decode()


def image_stream_events(body: Mapping[str, Any], final: Image.Image) -> Iterator[dict[str, Any]]:
    """The events of a streamed ``POST /v1/images/generations``: partial_image × ``partial_images``, then
    completed. Partial k of N is the final picture blended (k+1)/(N+1) of the way from grey."""
    fmt = body.get("output_format") or "png"
    count = body.get("partial_images") or 0
    size = body.get("size") if body.get("size") not in {None, "auto"} else "{}x{}".format(*final.size)
    common = {
        "created_at": int(time.time()),
        "size": size,
        "quality": body.get("quality") or "auto",
        "background": body.get("background") or "auto",
        "output_format": fmt,
    }
    grey = Image.new("RGB", final.size, (128, 128, 128))
    for index in range(count):
        partial = Image.blend(grey, final.convert("RGB"), (index + 1) / (count + 1))
        b64 = encode_image(partial, fmt)
        yield {"type": "image_generation.partial_image", "b64_json": b64, "partial_image_index": index, **common}
    text_tokens = rough_tokens([body.get("prompt") or ""])
    usage = {
        "input_tokens": text_tokens,
        "input_tokens_details": {"image_tokens": 0, "text_tokens": text_tokens},
        "output_tokens": 272,
        "total_tokens": text_tokens + 272,
    }
    yield {"type": "image_generation.completed", "b64_json": encode_image(final, fmt), "usage": usage, **common}


def _open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def mask_problem(upload: Any, size: tuple[int, int]) -> tuple[str, str] | None:
    """(code, message) when an edit's ``mask`` is unusable, as the real API checks it: a PNG, with an alpha
    channel (its transparent pixels mark what to edit), the size of the first image."""
    if not isinstance(upload, FormFile):
        return "invalid_image", "Invalid mask image: 'mask' must be a PNG file upload."
    try:
        mask = _open_image(upload.data)
    except (UnidentifiedImageError, OSError) as exc:
        return "invalid_image", f"Invalid mask image: the file could not be read as a PNG ({exc})."
    if mask.format != "PNG":
        return "invalid_mask_format", f"Invalid mask image format - mask must be a PNG, got {mask.format}."
    if mask.mode not in {"RGBA", "LA", "PA"} and "transparency" not in mask.info:
        message = f"Invalid mask image format - mask must have an alpha channel (RGBA or LA), got mode {mask.mode}."
        return "invalid_mask_format", message
    if mask.size != size:
        (mw, mh), (iw, ih) = mask.size, size
        message = f"Invalid mask image format - mask size {mw}x{mh} does not match image size {iw}x{ih}."
        return "invalid_mask_format", message
    return None


# --- the server -----------------------------------------------------------------------------------


class FakeOpenAI:
    """The fake OpenAI API. ``base_url = await fake.start()``; script replies; read what arrived."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        models: list[str] | None = None,
        shutdowns: Mapping[str, str | int] | None = None,
        transcript: str = DEFAULT_TRANSCRIPT,
        valid_keys: set[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.models: list[str] = list(models or DEFAULT_MODELS)
        self.shutdowns: dict[str, str | int] = dict(DEFAULT_SHUTDOWNS if shutdowns is None else shutdowns)
        """Model id → ``shutdown_date`` served for it (a str as the real API sends; an int to test odd values)."""
        self.transcript = transcript
        self.valid_keys = valid_keys
        """None accepts any non-empty key; a set accepts only those keys (others get 401)."""
        self.requests: list[Recorded] = []
        self.conversations: dict[str, FakeConversation] = {}
        self.violations: list[str] = []
        self.files: dict[str, StoredFile] = {}
        self.container_files: dict[tuple[str, str], bytes] = {}
        self._script: deque[Reply] = deque()
        self.default_reply = Reply()
        """How unscripted responses are answered (e.g. a slow stream for tests that kill a process mid-answer)."""
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self.responses_by_id: dict[str, Turn] = {}
        self.realtime = FakeRealtime(valid_keys=valid_keys)
        """The Realtime API's WebSocket at ``/v1/realtime`` (spoken replies)."""
        self.conversation_latency = 0.0
        """Seconds a conversation create or update takes (the round trip to OpenAI, for the benchmarks)."""
        self.conversation_create_status: int | None = None
        """While set, every ``POST /v1/conversations`` answers this HTTP error status (an outage)."""
        self.vector_stores = FakeVectorStores(self.files.get)
        self.containers = FakeContainers(self)
        from tests.fakes.chat_completions import FakeChatCompletions  # it uses this module's helpers

        self.chat = FakeChatCompletions()
        """``POST /v1/chat/completions`` (local providers' API): its bodies and scripted replies."""
        self.context_lengths: dict[str, int] = {}
        """Model id → ``max_model_len`` listed by GET /v1/models (as vLLM lists it)."""
        """Code-interpreter containers and their files; code the model runs in one (``tests.fakes.containers``)."""
        """Vector stores and their files; ``file_search`` in responses (``tests.fakes.vector_stores``)."""

    # lifecycle

    async def start(self) -> str:
        app = web.Application(middlewares=[self._middleware], client_max_size=MAX_BODY_BYTES)
        self._routes(app.router)
        self._runner = web.AppRunner(app, shutdown_timeout=0.25, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        host, port = self._runner.addresses[0][:2]
        self._base_url = f"http://{host}:{port}/v1"
        return self._base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("FakeOpenAI.start() has not been awaited")
        return self._base_url

    # scripting and inspection

    def script(self, *replies: Reply) -> None:
        """Queue behaviour for the next ``POST /v1/responses`` calls, first in first out."""
        self._script.extend(replies)

    def responses_for(self, conv_id: str) -> list[dict[str, Any]]:
        return [
            r.json
            for r in self.requests
            if r.path == "/v1/responses" and isinstance(r.json, dict)
            if conversation_id(r.json.get("conversation")) == conv_id
        ]

    def forget_conversation(self, conv_id: str) -> None:
        """The server no longer knows this conversation: later use answers 404."""
        self.conversations.pop(conv_id, None)

    def add_container_file(self, container_id: str, file_id: str, data: bytes) -> None:
        self.container_files[(container_id, file_id)] = data

    # plumbing

    def _routes(self, router: web.UrlDispatcher) -> None:
        routes: list[tuple[str, str, Handler]] = [
            ("GET", "/models", self._list_models),
            ("GET", "/models/{model}", self._get_model),
            ("POST", "/conversations", self._create_conversation),
            ("GET", "/conversations/{conversation_id}", self._get_conversation),
            ("POST", "/conversations/{conversation_id}", self._update_conversation),
            ("DELETE", "/conversations/{conversation_id}", self._delete_conversation),
            ("GET", "/conversations/{conversation_id}/items", self._list_items),
            ("POST", "/conversations/{conversation_id}/items", self._add_items),
            ("POST", "/responses", self._responses),
            ("GET", "/responses/{response_id}", self._get_response),
            ("POST", "/files", self._upload_file),
            ("GET", "/files/{file_id}", self._get_file),
            ("DELETE", "/files/{file_id}", self._delete_file),
            ("POST", "/audio/transcriptions", self._transcribe),
            ("POST", "/audio/speech", self._speech),
            ("POST", "/images/generations", self._generate_image),
            ("POST", "/images/edits", self._edit_image),
            *self.containers.routes(),
            *self.chat.routes(),
            *self.vector_stores.routes(),
        ]
        for method, path, handler in routes:
            router.add_route(method, "/v1" + path, handler)
        router.add_get("/v1/realtime", self.realtime.handle)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        recorded = await self._record(request)
        request[RECORDED] = recorded
        response = self._reject(request, recorded) or await handler(request)
        conv = conversation_id((recorded.json or {}).get("conversation") if isinstance(recorded.json, dict) else None)
        log.info("%s %s%s -> %d", request.method, request.path, f" conv={conv}" if conv else "", response.status)
        return response

    async def _record(self, request: web.Request) -> Recorded:
        body: Any = None
        form: dict[str, Any] | None = None
        if request.content_type == "multipart/form-data":
            form = await _read_form(request)
        elif request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
        recorded = Recorded(request.method, request.path, body, form, dict(request.headers))
        self.requests.append(recorded)
        return recorded

    def _reject(self, request: web.Request, recorded: Recorded) -> web.Response | None:
        """The answer for a request that never reaches its handler: unknown route, bad auth, bad body."""
        if request.match_info.http_exception is not None:
            self._violation(f"{request.method} {request.path}: no such endpoint in the fake OpenAI")
            return error_response(404, f"Invalid URL ({request.method} {request.path})")
        key = request.headers.get("Authorization", "").removeprefix("Bearer").strip()
        if not key:
            message = "You didn't provide an API key. Provide it in the Authorization header (Bearer auth)."
            return error_response(401, message)
        if self.valid_keys is not None and key not in self.valid_keys:
            return error_response(401, "Incorrect API key provided.", code="invalid_api_key")
        return self._check_body(request, recorded)

    def _check_body(self, request: web.Request, recorded: Recorded) -> web.Response | None:
        if request.method != "POST":
            return None
        resource = request.match_info.route.resource
        path = resource.canonical.removeprefix("/v1") if resource else ""
        kind = "multipart" if recorded.form is not None else "json"
        schema = spec.schema_for(request.method, path, kind)
        if schema is None:
            if any(key[:2] == (request.method, path) for key in spec.REQUEST_SCHEMAS):
                return self._bad_body(request, "-", spec.Problem("$", f"unexpected body type ({request.content_type})"))
            return None
        if kind == "json" and not isinstance(recorded.json, dict):
            return self._bad_body(request, schema, spec.Problem("$", "the body must be a JSON object"))
        validator = spec.validator()
        if recorded.form is not None:
            problems = validator.check_form(schema, _form_for_validation(recorded.form))
        else:
            problems = validator.check(schema, recorded.json)
        return self._bad_body(request, schema, *problems) if problems else None

    def _bad_body(self, request: web.Request, schema: str, *problems: spec.Problem) -> web.Response:
        for problem in problems:
            self._violation(f"{request.method} {request.path} ({schema}): {problem}")
        first = problems[0]
        return error_response(400, f"Invalid request body: {first}", code=first.code, param=first.param)

    def _violation(self, text: str) -> None:
        log.warning("spec violation: %s", text)
        self.violations.append(text)

    # models

    async def _list_models(self, request: web.Request) -> web.Response:
        data = [_model(m, self.shutdowns.get(m)) for m in self.models]
        for entry in data:
            if entry["id"] in self.context_lengths:
                entry["max_model_len"] = self.context_lengths[entry["id"]]
        return web.json_response({"object": "list", "data": data})

    async def _get_model(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        if model not in self.models:
            message = f"The model '{model}' does not exist or you do not have access to it."
            return error_response(404, message, code="model_not_found")
        return web.json_response(_model(model, self.shutdowns.get(model)))

    # conversations

    def _conversation_json(self, conv: FakeConversation) -> dict[str, Any]:
        return {"id": conv.id, "object": "conversation", "created_at": conv.created_at, "metadata": conv.metadata}

    async def _create_conversation(self, request: web.Request) -> web.Response:
        await asyncio.sleep(self.conversation_latency)
        if self.conversation_create_status is not None:
            return _status_error(Reply(status=self.conversation_create_status), {})
        body = request[RECORDED].json or {}
        conv = FakeConversation(new_id("conv_"), dict(body.get("metadata") or {}), input_items(body.get("items") or []))
        self.conversations[conv.id] = conv
        log.info("created %s %s", conv.id, conv.metadata)
        return web.json_response(self._conversation_json(conv))

    async def _get_conversation(self, request: web.Request) -> web.Response:
        conv = self.conversations.get(request.match_info["conversation_id"])
        if conv is None:
            return conversation_not_found(request.match_info["conversation_id"])
        return web.json_response(self._conversation_json(conv))

    async def _update_conversation(self, request: web.Request) -> web.Response:
        """``conversations.update``: replaces the metadata (the body is checked against ``UpdateConversationBody``)."""
        await asyncio.sleep(self.conversation_latency)
        conv = self.conversations.get(request.match_info["conversation_id"])
        if conv is None:
            return conversation_not_found(request.match_info["conversation_id"])
        conv.metadata = dict(request[RECORDED].json.get("metadata") or {})
        return web.json_response(self._conversation_json(conv))

    async def _delete_conversation(self, request: web.Request) -> web.Response:
        conv_id = request.match_info["conversation_id"]
        if self.conversations.pop(conv_id, None) is None:
            return conversation_not_found(conv_id)
        return web.json_response({"id": conv_id, "object": "conversation.deleted", "deleted": True})

    async def _list_items(self, request: web.Request) -> web.Response:
        conv = self.conversations.get(request.match_info["conversation_id"])
        if conv is None:
            return conversation_not_found(request.match_info["conversation_id"])
        items = conv.items if request.query.get("order") == "asc" else conv.items[::-1]
        first, last = (items[0].get("id"), items[-1].get("id")) if items else (None, None)
        page = {"object": "list", "data": items, "first_id": first, "last_id": last, "has_more": False}
        return web.json_response(page)

    async def _add_items(self, request: web.Request) -> web.Response:
        """``conversations.items.create``: each item is checked against the spec's ``InputItem``, at most 20."""
        conv = self.conversations.get(request.match_info["conversation_id"])
        if conv is None:
            return conversation_not_found(request.match_info["conversation_id"])
        body = request[RECORDED].json
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= 20:
            return self._bad_body(request, "InputItem", spec.Problem("$.items", "1 to 20 items are required"))
        for index, item in enumerate(items):
            problems = spec.validator().check("InputItem", item)
            if problems:
                moved = [spec.Problem(f"$.items[{index}]{p.param[1:]}", p.message, p.code) for p in problems]
                return self._bad_body(request, "InputItem", *moved)
        added = input_items(items)
        if problem := tool_output_problem(conv, added, respond=False):
            return self._bad_body(request, "InputItem", spec.Problem("$.items", problem))
        conv.items.extend(added)
        return web.json_response(
            {
                "object": "list",
                "data": added,
                "first_id": added[0].get("id"),
                "last_id": added[-1].get("id"),
                "has_more": False,
            }
        )

    # responses

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = request[RECORDED].json
        conv_id = conversation_id(body.get("conversation"))
        if body.get("previous_response_id") and conv_id:
            problem = spec.Problem("$.previous_response_id", "cannot be used together with 'conversation'.")
            return self._bad_body(request, "CreateResponse", problem)
        conversation = self.conversations.get(conv_id) if conv_id else None
        if conv_id and conversation is None:
            return conversation_not_found(conv_id)  # checked before a scripted reply is used up
        inputs = input_items(body.get("input", []))
        if problem := tool_output_problem(conversation, inputs, respond=True):
            return self._bad_body(request, "CreateResponse", spec.Problem("$.input", problem))
        if problem := json_problem(body):
            return self._bad_body(request, "CreateResponse", spec.Problem("$.input", problem))
        if refused := self.vector_stores.tool_problem(body):
            return refused
        if refused := self.containers.refusal(body):
            return refused
        reply = self._script.popleft() if self._script else self.default_reply
        if reply.status:
            return _status_error(reply, body)
        if reply.conversation_missing:
            return conversation_not_found(conv_id or "conv_unknown")
        reply = self.containers.scripted(reply, body)
        if reply.container_file:
            container_id, file_id, _name, data = reply.container_file
            self.add_container_file(container_id, file_id, data)
        turn = plan_turn(body, reply, conversation)
        self._search(turn)
        last = turn.inputs[-1] if turn.inputs else None
        self.containers.plan(turn, message_text(last) if _is_message(last) and last else "")
        self.responses_by_id[turn.id] = turn
        steps = numbered(turn_events(turn))
        if body.get("stream"):
            return await self._stream(request, turn, steps)
        return await self._complete(request, turn, steps)

    def _search(self, turn: Turn) -> None:
        """A question with ``file_search`` offered (and no scripted answer): search, and answer with citations."""
        reply, last = turn.reply, turn.inputs[-1] if turn.inputs else None
        if reply.text is not None or reply.end in {"failed", "error"} or not _is_message(last) or last is None:
            return
        text_format = (turn.body.get("text") or {}).get("format") or {}
        calls = any(item["type"] == "function_call" for item in turn.tool_items)
        if calls or last.get("role") != "user" or text_format.get("type") in {"json_object", "json_schema"}:
            return
        if found := self.vector_stores.search(turn.body, message_text(last)):
            item, turn.text, turn.citations = found
            turn.tool_items.insert(0, item)

    def _commit(self, turn: Turn) -> None:
        if turn.conversation is not None:
            turn.conversation.items.extend([*turn.inputs, *turn.output])

    async def _stream(self, request: web.Request, turn: Turn, steps: Iterator[Step]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        pending = bytearray()
        try:
            for step in steps:
                if isinstance(step, dict):
                    pending += sse(step)
                    if step.get("type") == "response.output_text.delta":
                        turn.sent_text += str(step.get("delta") or "")
                    continue
                if pending:
                    await response.write(bytes(pending))
                    pending.clear()
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, Commit):
                    self._commit(turn)
                else:
                    _drop_connection(request)
                    return response
            await response.write(bytes(pending))
            await response.write_eof()
            turn.finished = True
        except (ConnectionError, asyncio.CancelledError):
            log.info("client went away during the stream of %s", turn.id)
        return response

    async def _get_response(self, request: web.Request) -> web.Response:
        """``responses.retrieve``: a stream the client closed early is ``cancelled``, billed for what was sent."""
        turn = self.responses_by_id.get(request.match_info["response_id"])
        if turn is None:
            return error_response(404, f"No response found with id '{request.match_info['response_id']}'.")
        include = [*request.query.getall("include", []), *request.query.getall("include[]", [])]
        if turn.finished or not turn.body.get("stream"):
            return web.json_response(self.containers.read_back(turn.response("completed", usage=turn.usage), include))
        usage = {**turn.usage, "output_tokens": rough_tokens([turn.sent_text])}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        return web.json_response(turn.response("cancelled", usage=usage))

    async def _complete(self, request: web.Request, turn: Turn, steps: Iterator[Step]) -> web.StreamResponse:
        """A non-streamed response: the same steps, answered as one JSON body at the end."""
        last: dict[str, Any] = {}
        for step in steps:
            if isinstance(step, dict):
                last = step
            elif isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, Commit):
                self._commit(turn)
            else:
                _drop_connection(request)
                return web.Response()
        if last.get("type") == "error":
            return error_response(500, last["message"], "server_error", last.get("code"))
        return web.json_response(last["response"])

    # files

    def _uploaded(self, request: web.Request, name: str) -> FormFile | None:
        """The (first) file sent in multipart field ``name``; a text field there is a violation."""
        value = (request[RECORDED].form or {}).get(name)
        value = value[0] if isinstance(value, list) and value else value
        if isinstance(value, FormFile):
            return value
        self._violation(f"{request.method} {request.path}: '{name}' is not a file upload")
        return None

    async def _upload_file(self, request: web.Request) -> web.Response:
        form = request[RECORDED].form
        if (upload := self._uploaded(request, "file")) is None:
            return error_response(400, "'file' must be a file upload.", param="file")
        stored = StoredFile(
            id=new_id("file-"),
            filename=upload.filename or "upload",
            purpose=form["purpose"],
            data=upload.data,
            created_at=int(time.time()),
        )
        self.files[stored.id] = stored
        return web.json_response(_file_json(stored))

    async def _get_file(self, request: web.Request) -> web.Response:
        stored = self.files.get(request.match_info["file_id"])
        if stored is None:
            return error_response(404, f"No such File object: {request.match_info['file_id']}", param="id")
        return web.json_response(_file_json(stored))

    async def _delete_file(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        if self.files.pop(file_id, None) is None:
            return error_response(404, f"No such File object: {file_id}", param="id")
        return web.json_response({"id": file_id, "object": "file", "deleted": True})

    # audio

    async def _transcribe(self, request: web.Request) -> web.Response:
        form = request[RECORDED].form
        if (upload := self._uploaded(request, "file")) is None:
            return error_response(400, "'file' must be a file upload.", param="file")
        if await asyncio.to_thread(audio_seconds, upload.data) is None:
            message = "Audio file might be corrupted or unsupported"
            return error_response(400, message, code="invalid_value", param="file")
        if form.get("response_format") in {"text", "srt", "vtt"}:
            return web.Response(text=self.transcript, content_type="text/plain")
        return web.json_response({"text": self.transcript})

    async def _speech(self, request: web.Request) -> web.Response:
        body = request[RECORDED].json
        fmt = body.get("response_format", "mp3")
        data = await asyncio.to_thread(speech_audio, body["input"], fmt)
        return web.Response(body=data, headers={"Content-Type": SPEECH_MIME[fmt]})

    # images

    async def _generate_image(self, request: web.Request) -> web.StreamResponse:
        body = request[RECORDED].json
        image = Image.new("RGB", image_size(body.get("size")), prompt_color(body.get("prompt", "")))
        if body.get("stream"):
            return await self._stream_image(request, body, image)
        b64 = encode_image(image, body.get("output_format") or "png")
        return web.json_response({"created": int(time.time()), "data": [{"b64_json": b64}] * (body.get("n") or 1)})

    async def _stream_image(self, request: web.Request, body: dict[str, Any], final: Image.Image) -> web.StreamResponse:
        """``stream: true``: ``partial_images`` partial_image events (the picture emerging from grey, same size),
        then ``image_generation.completed`` with the final picture, as the real API streams them."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        try:
            for event in image_stream_events(body, final):
                await response.write(sse(event))
            await response.write_eof()
        except ConnectionError:
            log.info("client went away during an image stream")
        return response

    async def _edit_image(self, request: web.Request) -> web.Response:
        recorded: Recorded = request[RECORDED]
        if recorded.form is None:  # JSON edits name images by file id or URL: answer a fresh image
            prompt = recorded.json.get("prompt", "")
            image = Image.new("RGB", (1024, 1024), prompt_color(prompt))
            return web.json_response({"created": int(time.time()), "data": [{"b64_json": encode_image(image, "png")}]})
        if self._uploaded(request, "image") is None:
            return error_response(400, "'image' must be a file upload.", param="image")
        uploads = recorded.form.get("image")
        images: list[Image.Image] = []
        for number, upload in enumerate(uploads if isinstance(uploads, list) else [uploads], start=1):
            try:
                if not isinstance(upload, FormFile):
                    raise OSError("not a file upload")
                images.append(_open_image(upload.data))
            except (UnidentifiedImageError, OSError) as exc:
                message = f"Invalid image file or mode for image {number}: {exc}"
                return error_response(400, message, code="invalid_image_format", param="image")
        if "mask" in recorded.form and (problem := mask_problem(recorded.form["mask"], images[0].size)):
            return error_response(400, problem[1], code=problem[0], param="mask")
        edited = Image.eval(images[0].convert("RGB"), lambda value: 255 - value)  # visibly changed, same size
        fmt = recorded.form.get("output_format") or "png"
        return web.json_response({"created": int(time.time()), "data": [{"b64_json": encode_image(edited, fmt)}]})


def _model(model_id: str, shutdown_date: str | int | None = None) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": 1_760_000_000,
        "owned_by": "openai",
        "shutdown_date": shutdown_date,
    }


def _file_json(stored: StoredFile) -> dict[str, Any]:
    return {
        "id": stored.id,
        "object": "file",
        "bytes": len(stored.data),
        "created_at": stored.created_at,
        "expires_at": None,
        "filename": stored.filename,
        "purpose": stored.purpose,
        "status": "processed",
    }


def _status_error(reply: Reply, body: Mapping[str, Any]) -> web.Response:
    status = reply.status or 500
    message, kind, code = STATUS_ERRORS.get(status, (f"Scripted HTTP {status}.", "server_error", None))
    if status == 404:
        message = f"The model '{body.get('model')}' does not exist or you do not have access to it."
    retry_after = reply.retry_after or ("0" if status == 429 else None)
    headers = {"retry-after": retry_after} if retry_after is not None else None
    return error_response(status, reply.error_message or message, kind, reply.error_code or code, headers=headers)


def _drop_connection(request: web.Request) -> None:
    """Close the socket mid-body: the client sees a chunked body that never ends properly."""
    if request.transport is not None:
        request.transport.abort()


async def _read_form(request: web.Request) -> dict[str, Any]:
    form: dict[str, Any] = {}
    for name, value in (await request.post()).items():
        if isinstance(value, web.FileField):
            value = FormFile(value.filename, value.content_type, value.file.read())
        key = name.removesuffix("[]")
        if name.endswith("[]") or key in form:
            previous = form.get(key, [])
            form[key] = [*(previous if isinstance(previous, list) else [previous]), value]
        else:
            form[key] = value
    return form


def _form_for_validation(form: Mapping[str, Any]) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, list):
            return [plain(v) for v in value]
        return spec.BINARY if isinstance(value, FormFile) else value

    return {key: plain(value) for key, value in form.items()}


# --- standalone -----------------------------------------------------------------------------------


async def serve(host: str, port: int) -> None:
    fake = FakeOpenAI(host=host, port=port)
    base_url = await fake.start()
    print(f"fake OpenAI at {base_url}  (spec check: {spec.validator().source})", flush=True)
    print(f"try: OPENAI_BASE_URL={base_url} OPENAI_API_KEY=x threadline run", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the offline fake OpenAI API until Ctrl-C.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
