"""A fake Realtime API endpoint (``GET /v1/realtime?model=…`` as a WebSocket) that reads text aloud.

It answers the way the real service does for speech: ``session.created`` on connect, ``session.updated`` for
``session.update``, and for each out-of-band ``response.create`` a response whose audio is REAL 16-bit mono
24 kHz PCM (a sine tone, ``chars_per_second`` characters of text per second, so tests can check durations) with
a transcript that echoes the text. Faults are scripted with ``fake.fault``; ``fake.reword`` makes the transcript
differ from the text. Everything the client sent is in ``fake.events``; problems with its shape in
``fake.violations``.

Mount ``FakeRealtime.handle`` on ``/v1/realtime`` in any aiohttp app, or run it alone with ``start()`` (which
also serves ``POST /v1/audio/speech`` as raw PCM, for the endpoint speaker).
"""

from __future__ import annotations

import asyncio
import base64
import enum
import json
import math
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes import media

PCM_RATE = 24_000
DELTA_SECONDS = 0.2  # audio per response.output_audio.delta
STALL_SECONDS = 30.0  # a stalled handler gives up after this (the runner's cleanup cancels it sooner)

CLIENT_EVENTS = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "conversation.item.delete",
        "response.create",
        "response.cancel",
        "output_audio_buffer.clear",
    }
)
VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"})


class Fault(enum.Enum):
    """What goes wrong on the next connections (until ``fake.fault`` is set back to None)."""

    REFUSE_403 = "refuse_403"  # the upgrade is answered with HTTP 403
    REFUSE_500 = "refuse_500"  # the upgrade is answered with HTTP 500
    ERROR = "error"  # an `error` event instead of audio
    STALL = "stall"  # the socket opens, then nothing is ever sent (client events are still read)
    STALL_HANDSHAKE = "stall_handshake"  # the HTTP upgrade is never answered
    CUT = "cut"  # the TCP connection drops right after the first audio delta
    NO_AUDIO = "no_audio"  # a completed response with a transcript but not one audio delta


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def read_seconds(text: str, chars_per_second: float) -> float:
    """How long the fake "reads" ``text``: proportional to its length, at least one audio delta."""
    return max(DELTA_SECONDS, len(text) / chars_per_second)


def tone_pcm(seconds: float) -> bytes:
    return media.pcm_tone(seconds, PCM_RATE)


def reworded(text: str) -> str:
    """What a voice model that wandered off script might say instead."""
    words = text.split()
    return "Sure! Here is the gist: " + " ".join(words[: max(1, len(words) // 3)])


def response_text(response: dict[str, Any]) -> str:
    """The text in a response.create's ``input`` items (user/system messages' input_text parts)."""
    parts: list[str] = []
    for item in response.get("input") or []:
        if isinstance(item, dict) and item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "input_text":
                    parts.append(str(part.get("text", "")))
    return "\n".join(parts)


def check_client_event(event: Any) -> list[str]:
    """Loose shape check of one client event; the problems found (empty when fine)."""
    if not isinstance(event, dict):
        return ["a client event must be a JSON object"]
    kind = event.get("type")
    if kind not in CLIENT_EVENTS:
        return [f"unknown client event type {kind!r}"]
    problems: list[str] = []
    if kind == "session.update":
        session = event.get("session")
        if not isinstance(session, dict) or session.get("type") != "realtime":
            problems.append("session.update: session.type must be 'realtime'")
        else:
            output = (session.get("audio") or {}).get("output") or {}
            voice = output.get("voice")
            if voice is not None and voice not in VOICES and not isinstance(voice, dict):
                problems.append(f"session.update: unknown voice {voice!r}")
            fmt = output.get("format")
            if fmt is not None and fmt not in ({"type": "audio/pcm", "rate": 24000}, {"type": "audio/pcm"}):
                problems.append(f"session.update: this fake only speaks audio/pcm at 24 kHz, not {fmt!r}")
            modalities = session.get("output_modalities")
            if modalities is not None and modalities not in (["audio"], ["text"]):
                problems.append(f"session.update: output_modalities must be ['audio'] or ['text'], not {modalities}")
    elif kind == "response.create":
        response = event.get("response")
        if not isinstance(response, dict):
            problems.append("response.create: response must be an object")
        else:
            if response.get("conversation") != "none":
                problems.append("response.create: speech must be out of band (response.conversation == 'none')")
            if response.get("output_modalities", ["audio"]) != ["audio"]:
                problems.append("response.create: output_modalities must be ['audio'] to get speech")
            if not isinstance(response.get("input"), list):
                problems.append("response.create: an out-of-band response needs an input list")
            if not response_text(response).strip():
                problems.append("response.create: no input_text to read")
    return problems


def _error_json(status: int, message: str, kind: str, code: str | None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status)


class FakeRealtime:
    """The fake Realtime endpoint. Scriptable through attributes; see the module docstring."""

    def __init__(self, *, valid_keys: set[str] | None = None, chars_per_second: float = 15.0) -> None:
        self.valid_keys = valid_keys
        """None accepts any non-empty key; a set accepts only those keys (others get 401)."""
        self.chars_per_second = chars_per_second
        self.fault: Fault | None = None
        self.reword = False
        self.events: list[dict[str, Any]] = []
        """Every client event received, in order, across connections."""
        self.violations: list[str] = []
        self.connections = 0
        """WebSocket sessions opened (refused upgrades are not counted; see ``attempts``)."""
        self.attempts = 0
        self.models: list[str] = []
        """The ``model`` query parameter of each opened session."""
        self.headers: list[dict[str, str]] = []
        self.speech_requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # standalone serving

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve ``/v1/realtime`` and ``/v1/audio/speech`` alone; returns the base URL (``http://…/v1``)."""
        app = web.Application()
        app.router.add_get("/v1/realtime", self.handle)
        app.router.add_post("/v1/audio/speech", self.handle_speech)
        self._runner = web.AppRunner(app, shutdown_timeout=0.25, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self._base_url = f"http://{bound_host}:{bound_port}/v1"
        return self._base_url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("FakeRealtime.start() has not been awaited (mounted fakes use their host's URL)")
        return self._base_url

    # inspection

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event.get("type") == kind]

    # the WebSocket endpoint

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        if (refused := self._auth_error(request)) is not None:
            return refused
        if self.fault is Fault.REFUSE_403:
            return _error_json(403, "You are not allowed to use this model.", "invalid_request_error", "forbidden")
        if self.fault is Fault.REFUSE_500:
            return _error_json(500, "The server had an error.", "server_error", None)
        model = request.query.get("model", "")
        if not model:
            return _error_json(400, "Missing required parameter: 'model'.", "invalid_request_error", None)
        if self.fault is Fault.STALL_HANDSHAKE:
            await asyncio.sleep(STALL_SECONDS)
            return _error_json(504, "Gateway timeout.", "server_error", None)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        self.models.append(model)
        self.headers.append(dict(request.headers))
        await _Session(self, ws, request, model).run()
        return ws

    def _auth_error(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("Authorization", "").removeprefix("Bearer").strip()
        if not key:
            message = "You didn't provide an API key. Provide it in the Authorization header (Bearer auth)."
            return _error_json(401, message, "invalid_request_error", None)
        if self.valid_keys is not None and key not in self.valid_keys:
            return _error_json(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return None

    async def handle_speech(self, request: web.Request) -> web.Response:
        """``POST /v1/audio/speech`` answered with a raw PCM tone as long as reading the input."""
        if (refused := self._auth_error(request)) is not None:
            return refused
        body = await request.json()
        self.speech_requests.append(body)
        if body.get("response_format") != "pcm":
            return _error_json(400, "This fake only answers response_format 'pcm'.", "invalid_request_error", None)
        text = str(body.get("input", ""))
        if not text or len(text) > 4096:
            return _error_json(400, "input must be 1 to 4096 characters.", "invalid_request_error", "invalid_value")
        pcm = await asyncio.to_thread(tone_pcm, read_seconds(text, self.chars_per_second))
        return web.Response(body=pcm, headers={"Content-Type": "audio/pcm"})


class _Session:
    """One WebSocket session."""

    def __init__(self, fake: FakeRealtime, ws: web.WebSocketResponse, request: web.Request, model: str) -> None:
        self.fake = fake
        self.ws = ws
        self.request = request
        self.id = new_id("sess")
        self.voice = "alloy"
        self.model = model
        self.session_known = False

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps({"event_id": new_id("event"), **event}))

    async def run(self) -> None:
        stalled = self.fake.fault is Fault.STALL
        if not stalled:
            await self.send({"type": "session.created", "session": self.session_json()})
        async for message in self.ws:
            if message.type is not WSMsgType.TEXT:
                continue
            try:
                event = json.loads(message.data)
            except ValueError:
                self.fake.violations.append("a client message was not JSON")
                continue
            self.fake.events.append(event)
            problems = check_client_event(event)
            self.fake.violations.extend(problems)
            if stalled:
                continue
            if problems:
                await self.error("invalid_request_error", "invalid_event", "; ".join(problems), event)
                continue
            if not await self.answer(event):
                return

    async def answer(self, event: dict[str, Any]) -> bool:
        """React to one valid client event; False when the connection is gone."""
        kind = event["type"]
        if kind == "session.update":
            self.session_known = True
            voice = ((event["session"].get("audio") or {}).get("output") or {}).get("voice")
            self.voice = voice or self.voice
            await self.send({"type": "session.updated", "session": self.session_json()})
        elif kind == "response.create":
            if not self.session_known:  # legal, but then the voice and format are the server's defaults
                self.fake.violations.append("response.create before any session.update")
            if self.fake.fault is Fault.ERROR:
                await self.error("server_error", "server_error", "The server had an error while processing.", event)
                return True
            return await self.respond(response_text(event["response"]))
        return True

    async def error(self, kind: str, code: str, message: str, cause: dict[str, Any]) -> None:
        error = {"type": kind, "code": code, "message": message, "param": None, "event_id": cause.get("event_id")}
        await self.send({"type": "error", "error": error})

    def session_json(self) -> dict[str, Any]:
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.id,
            "model": self.model,
            "output_modalities": ["audio"],
            "instructions": "You are a helpful assistant.",
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": PCM_RATE}, "turn_detection": None},
                "output": {"format": {"type": "audio/pcm", "rate": PCM_RATE}, "voice": self.voice, "speed": 1.0},
            },
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
        }

    async def respond(self, text: str) -> bool:
        """One spoken response: created, audio + transcript deltas, done events, response.done with usage."""
        response_id, item_id = new_id("resp"), new_id("item")
        transcript = reworded(text) if self.fake.reword else text
        pcm = await asyncio.to_thread(tone_pcm, read_seconds(text, self.fake.chars_per_second))
        step = int(DELTA_SECONDS * PCM_RATE) * 2
        chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
        words = transcript.split(" ")
        per_chunk = math.ceil(len(words) / max(1, len(chunks)))
        slot = {"response_id": response_id, "output_index": 0}
        ids = {**slot, "item_id": item_id, "content_index": 0}
        item = {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant"}
        base = {"id": response_id, "object": "realtime.response", "conversation_id": None}
        base |= {"output_modalities": ["audio"], "audio": {"output": {"voice": self.voice}}}
        await self.send({"type": "response.created", "response": {**base, "status": "in_progress", "output": []}})
        added = {**item, "status": "in_progress", "content": []}
        await self.send({"type": "response.output_item.added", **slot, "item": added})
        await self.send({"type": "response.content_part.added", **ids, "part": {"type": "audio", "transcript": ""}})
        if self.fake.fault is Fault.NO_AUDIO:
            chunks = []
        for index, chunk in enumerate(chunks):
            if self.ws.closed:  # the client hung up (it may stop listening mid-reply)
                return False
            await self.send({"type": "response.output_audio.delta", **ids, "delta": base64.b64encode(chunk).decode()})
            if self.fake.fault is Fault.CUT:
                if self.request.transport is not None:
                    self.request.transport.abort()
                return False
            spoken = " ".join(words[index * per_chunk : (index + 1) * per_chunk])
            if spoken:
                delta = spoken if index == 0 else " " + spoken
                await self.send({"type": "response.output_audio_transcript.delta", **ids, "delta": delta})
        await self.send({"type": "response.output_audio.done", **ids})
        await self.send({"type": "response.output_audio_transcript.done", **ids, "transcript": transcript})
        part = {"type": "audio", "transcript": transcript}
        await self.send({"type": "response.content_part.done", **ids, "part": part})
        done_item = {**item, "status": "completed", "content": [{"type": "output_audio", "transcript": transcript}]}
        await self.send({"type": "response.output_item.done", **slot, "item": done_item})
        audio_tokens = math.ceil(len(pcm) / 2 / PCM_RATE * 20)  # about 20 audio tokens a second
        text_tokens = math.ceil(len(transcript) / 4)
        input_tokens = math.ceil(len(text) / 4) + 60
        usage = {
            "total_tokens": input_tokens + audio_tokens + text_tokens,
            "input_tokens": input_tokens,
            "output_tokens": audio_tokens + text_tokens,
            "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
        }
        done = {**base, "status": "completed", "status_details": None, "output": [done_item], "usage": usage}
        await self.send({"type": "response.done", "response": done})
        return True
