"""``POST /v1/chat/completions`` for the fake OpenAI: what Ollama, vLLM, llama.cpp and LM Studio serve.

Streamed (SSE chunks, tool call deltas split across chunks, a usage chunk when ``stream_options.include_usage``)
or not. Request bodies are validated against the spec by the fake's middleware (``CreateChatCompletionRequest``).
The default answer quotes the user and the message before (``default_text``), so a test can see the history was
sent; after tool results it quotes them. ``script`` queues ``ChatReply`` behaviour.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.openai_server import auto_calls, default_text, error_response, new_id


@dataclass(frozen=True, slots=True)
class ChatReply:
    text: str | None = None
    """The answer (default: ``default_text`` of the user messages, or the tool results after tool calls)."""
    tool_calls: tuple[tuple[str, dict[str, Any]], ...] | None = None
    """(name, arguments) calls to make (default: the fake's ``auto_calls`` for tools the request offers)."""
    status: int | None = None
    """Answer with this HTTP error instead."""
    error_message: str = "The server had an error."
    chunk: int = 4


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _images(content: Any) -> int:
    return (
        sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
        if isinstance(content, list)
        else 0
    )


class FakeChatCompletions:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self._script: deque[ChatReply] = deque()

    def script(self, *replies: ChatReply) -> None:
        self._script.extend(replies)

    def routes(self) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
        return [("POST", "/chat/completions", self._create)]

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        self.bodies.append(body)
        reply = self._script.popleft() if self._script else ChatReply()
        if reply.status is not None:
            return error_response(
                reply.status, reply.error_message, "server_error" if reply.status >= 500 else "invalid_request_error"
            )
        messages = body["messages"]
        last = messages[-1]
        calls: list[tuple[str, dict[str, Any]]] = []
        if reply.text is not None:
            text = reply.text
        elif last.get("role") == "tool":
            outputs = [_text(m.get("content")) for m in messages if m.get("role") == "tool"]
            text = "Tool results: " + "; ".join(outputs)
        else:
            users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
            text = default_text(users[:-1], users[-1] if users else "", _images(last.get("content")))
            offered = {
                str(t["function"]["name"]): t["function"]
                for t in body.get("tools") or []
                if t.get("type") == "function"
            }
            calls = (
                list(reply.tool_calls)
                if reply.tool_calls is not None
                else auto_calls(users[-1] if users else "", offered)
            )
        if reply.tool_calls is not None and last.get("role") != "tool":
            calls = list(reply.tool_calls)
        if calls:
            text = ""
        prompt = sum(len(json.dumps(m)) for m in messages) // 4 + 1
        usage = {"prompt_tokens": prompt, "completion_tokens": len(text) // 4 + 1, "total_tokens": 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        base = {"id": new_id("chatcmpl-"), "created": int(time.time()), "model": body["model"]}
        tool_calls = [
            {
                "index": i,
                "id": new_id("call_"),
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for i, (name, args) in enumerate(calls)
        ]
        finish = "tool_calls" if calls else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if tool_calls:
                message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in tool_calls]
            choice = {"index": 0, "message": message, "finish_reason": finish}
            return web.json_response({**base, "object": "chat.completion", "choices": [choice], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            chunk = {**base, "object": "chat.completion.chunk", "choices": choices, **extra}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        await send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for start in range(0, len(text), reply.chunk):
            await send([{"index": 0, "delta": {"content": text[start : start + reply.chunk]}, "finish_reason": None}])
        for call in tool_calls:  # the arguments in two pieces, as servers stream them
            args = call["function"]["arguments"]
            half = len(args) // 2
            first = {**call, "function": {"name": call["function"]["name"], "arguments": args[:half]}}
            await send([{"index": 0, "delta": {"tool_calls": [first]}, "finish_reason": None}])
            rest = {"index": call["index"], "function": {"arguments": args[half:]}}
            await send([{"index": 0, "delta": {"tool_calls": [rest]}, "finish_reason": None}])
        await send([{"index": 0, "delta": {}, "finish_reason": finish}])
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], usage=usage)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
