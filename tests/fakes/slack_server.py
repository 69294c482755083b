"""A fake Slack for offline tests, driven by the real slack-bolt and slack-sdk: the Web API, the Socket Mode
websocket, a file host and the upload URL, all on one aiohttp server (127.0.0.1, port 0 by default; another
instance can sit on 127.0.0.2 as a foreign file host).

It keeps what the bot posts as threads of messages (posted, streamed, updated, uploaded) and records every call
with its arguments, token and arrival time. Like Slack it checks tokens, insists on ``recipient_user_id`` and
``recipient_team_id`` when a stream starts in a channel, and answers ``message_not_in_streaming_state`` once a
stream has ended. Tests script failures (``fail``), kill a stream mid-answer (``stream_dies_after``), host files
(``host_file``), and deliver events: ``send_envelope`` over Socket Mode (returns the bot's ack), ``deliver`` as a
signed HTTP request (``X-Slack-Retry-Num`` for retries, a bad signature on request; ``deliver_raw`` for any body).
``edited_event`` and ``deleted_event`` build what Slack sends when a person edits or deletes a message;
``messages_tab_opened`` and ``session_stopped`` the agent messaging events (2026).

Rate limits are opt-in (``tier_limits``): past a method's tier for the workspace it answers 429 with Retry-After,
records the method in ``rate_limited``, and ``busiest_window`` counts what arrived in any window. It behaves as an
``agent_view`` app by default (``agent_view``): suggested prompts with a ``thread_ts`` silently do nothing, as
Slack documents; ``prompts_shown`` holds the ones that took. ``agents.sessions.setStatus``/``rename`` and
``chat.stopStream``'s ``session_status`` keep ``sessions`` (``session_warning`` adds a warning to each setStatus).
Streamed chunks other than text land in ``chunks``; like Slack it checks their shapes (a task's status is
``complete``, never ``completed``) and answers ``invalid_chunks`` for a bad one, or for any non-text chunk when
``chunks_supported`` is off (an older workspace). Blocks (``chat.postMessage``/``update``, ``chat.stopStream``)
are checked too and kept in ``blocks``, each with a ``block_id``; ``markdown_text`` with ``blocks`` or ``text`` is
refused, as Slack documents. ``feedback_click`` builds the ``block_actions`` payload of a click on a message's
feedback buttons (from the blocks the bot put there), delivered with ``send_envelope(kind="interactive")`` or
``deliver_interaction``.

Socket Mode works as with Slack for several connections (replicas): each ``apps.connections.open`` gives a new URL,
up to ``max_connections`` (10) stay open at once (one more gets a ``too_many_websockets`` disconnect). Fresh
envelopes are dealt round-robin: the n-th goes to the (n mod open)-th open connection, in connection order. One not
acked within ``ack_timeout`` goes again, with ``retry_attempt`` + 1 and ``retry_reason`` "timeout", to the next open
connection after the one it was on (the same one if it is alone), at most ``envelope_retries`` (3) times, then lands
in ``abandoned``; a connection that closes hands its unacked envelopes on at once ("connection_closed"); with no
connection open they wait for the next. The envelope id stays the same across attempts, so a late ack still counts.
``deliveries`` records every delivery, ``acked`` who acked each envelope; ``push_envelope`` sends without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import math
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import WSMsgType, web

DEFAULT_SCOPES = (
    "app_mentions:read",
    "assistant:write",
    "channels:history",
    "chat:write",
    "commands",
    "files:read",
    "files:write",
    "groups:history",
    "im:history",
    "mpim:history",
    "reactions:read",
)

SESSION_STATUSES = frozenset({"processing", "active", "suspended", "closed"})
TASK_STATUSES = frozenset({"pending", "in_progress", "complete", "error"})  # "completed" is not one of them

LOGIN_PAGE = b"<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to your workspace</body></html>"

RETRY_TIMEOUT = "timeout"  # retry_reason of an envelope redelivered because no ack came within ack_timeout
RETRY_CONNECTION_CLOSED = "connection_closed"  # … because its connection closed first (the fake's own wording)


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str | None
    at: float


@dataclass
class FakeMessage:
    """A message the bot made, as Slack would show it."""

    ts: str
    channel: str
    thread_ts: str | None
    text: str
    via: str  # "post" | "stream" | "upload"
    streaming: bool = False
    appends: int = 0
    edits: list[float] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    deleted: bool = False
    chunks: list[dict[str, Any]] = field(default_factory=list)  # streamed chunks other than text (task updates…)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    task_display_mode: str | None = None


@dataclass
class Upload:
    file_id: str
    filename: str
    length: int
    data: bytes | None = None
    title: str = ""
    channel: str | None = None
    thread_ts: str | None = None


@dataclass
class FileRequest:
    path: str
    headers: dict[str, str]


@dataclass
class HostedFile:
    data: bytes
    content_type: str
    status: int = 200
    location: str | None = None


@dataclass
class Delivery:
    """One envelope sent over one Socket Mode connection."""

    envelope_id: str
    connection: int  # the connection's number: 1 for the first to open on this fake, then 2, 3…
    attempt: int  # the envelope's retry_attempt: 0 on its first delivery
    reason: str  # its retry_reason: "" on its first delivery
    kind: str  # events_api, slash_commands, interactive


@dataclass(eq=False)
class _Connection:
    number: int
    ws: web.WebSocketResponse
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # FIFO: envelopes leave in the order dealt
    unacked: dict[str, _Envelope] = field(default_factory=dict)


@dataclass(eq=False)
class _Envelope:
    envelope_id: str
    kind: str
    payload: dict[str, Any]
    ack: asyncio.Future[dict[str, Any]]
    attempt: int
    reason: str
    connection: _Connection | None = None
    timer: asyncio.TimerHandle | None = None


@dataclass
class _Failure:
    method: str
    error: str
    status: int
    skip: int
    times: int
    when: Callable[[dict[str, Any]], bool] | None


def _feedback_ok(element: Any) -> bool:
    """A ``feedback_buttons`` element as Slack requires it (other context actions pass unchecked)."""
    if not isinstance(element, dict) or element.get("type") not in {"feedback_buttons", "icon_button"}:
        return False
    if element["type"] == "icon_button":
        return True
    buttons = (element.get("positive_button"), element.get("negative_button"))
    return all(
        isinstance(b, dict) and isinstance(b.get("value"), str) and isinstance(b.get("text"), dict) for b in buttons
    )


def _feedback_actions(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The action a click on each feedback button in ``blocks`` reports (without its ``action_ts``)."""
    actions = []
    for block in blocks:
        if block.get("type") != "context_actions":
            continue
        for element in block.get("elements") or []:
            if element.get("type") != "feedback_buttons":
                continue
            for button in (element["positive_button"], element["negative_button"]):
                actions.append(
                    {
                        "type": "feedback_buttons",
                        "action_id": element.get("action_id"),
                        "block_id": block["block_id"],
                        "text": button["text"],
                        "value": button["value"],
                    }
                )
    return actions


class FakeSlack:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        bot_token: str = "xoxb-fake-bot-token",
        app_token: str = "xapp-fake-app-token",
        signing_secret: str = "fake-signing-secret",
        team_id: str = "T0TEAM",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        ack_timeout: float = 3.0,
    ) -> None:
        self.host = host
        self.bot_token = bot_token
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.scopes = scopes
        self.port = 0
        self.calls: list[Call] = []
        self.messages: list[FakeMessage] = []
        self.uploads: dict[str, Upload] = {}
        self.file_requests: list[FileRequest] = []
        self.files: dict[str, HostedFile] = {}
        self.file_info: dict[str, dict[str, Any]] = {}
        self.acks: list[dict[str, Any]] = []
        self.status_error_in_channels: str | None = None  # e.g. "not_allowed": setStatus only in DMs
        self.stream_dies_after: int | None = None  # appends a stream survives before Slack ends it
        # The app's AI surface: agent_view (new apps since 2026) or the older assistant_view. Like Slack, an agent
        # app's setSuggestedPrompts with a thread_ts silently does nothing; ``prompts_shown`` holds those that took.
        self.agent_view = True
        self.prompts_shown: list[dict[str, Any]] = []
        self.sessions: dict[tuple[str, str], dict[str, Any]] = {}  # agents.sessions.*: (channel, thread) → state
        self.session_warning: str | None = None  # e.g. "missing_agent_session_stopped_event_subscription"
        self.chunks_supported = True  # False: streams take markdown_text chunks only (invalid_chunks otherwise)
        # Opt-in rate-limit tiers, per method for the workspace: method → (calls, window seconds); a call over it
        # gets 429 + Retry-After, like Slack (e.g. {"chat.appendStream": (100, 60.0)} for Tier 4). Off: {}.
        self.tier_limits: dict[str, tuple[int, float]] = {}
        self.rate_limited: list[str] = []  # the methods answered 429 by tier_limits, in order
        self._tier_stamps: dict[str, list[float]] = {}
        self._failures: list[_Failure] = []
        self._ts = itertools.count(1)
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        # Socket Mode (see the module docstring); tests may change these before sending.
        self.ack_timeout = ack_timeout  # seconds Slack waits for an envelope's ack before sending it again
        self.envelope_retries = 3  # redeliveries of one envelope before Slack gives up
        self.max_connections = 10
        self.deliveries: list[Delivery] = []
        self.acked: dict[str, int] = {}  # envelope id → number of the connection whose ack came first
        self.abandoned: list[str] = []  # envelopes still unacked after envelope_retries redeliveries
        self._connections: list[_Connection] = []  # open, in connection order
        self._numbers = itertools.count(1)
        self._envelopes: dict[str, _Envelope] = {}
        self._waiting: list[_Envelope] = []  # dealt while no connection was open
        self._dealt = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._changed = asyncio.Condition()

    # --- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> FakeSlack:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_get("/files/{path:.*}", self._file)
        app.router.add_get("/ws", self._websocket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def close(self) -> None:
        self._closing = True
        for envelope in self._envelopes.values():
            if envelope.timer is not None:
                envelope.timer.cancel()
        for connection in list(self._connections):
            await connection.ws.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.origin}/api/"

    # --- what the bot did ------------------------------------------------------------------------------------
    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def busiest_window(self, method: str, window: float) -> int:
        """The most ``method`` calls that arrived within any ``window`` seconds: what Slack's tiers count."""
        stamps = sorted(c.at for c in self.calls_to(method))
        most, first = 0, 0
        for last, stamp in enumerate(stamps):
            while stamp - stamps[first] >= window:
                first += 1
            most = max(most, last - first + 1)
        return most

    def thread(self, channel: str, thread_ts: str) -> list[FakeMessage]:
        """The bot's messages in one thread, oldest first (deleted ones left out)."""
        return [m for m in self.messages if m.channel == channel and m.thread_ts == thread_ts and not m.deleted]

    def texts(self, channel: str, thread_ts: str) -> list[str]:
        return [m.text for m in self.thread(channel, thread_ts) if m.via != "upload"]

    async def wait_for(self, condition: Callable[[], bool], within: float = 10.0) -> None:
        """Wait until ``condition()`` holds; it is re-checked after every call the bot makes."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(condition)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- scripting -------------------------------------------------------------------------------------------
    def fail(
        self,
        method: str,
        error: str,
        *,
        status: int = 200,
        skip: int = 0,
        times: int = 1,
        when: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Answer the next ``times`` calls to ``method`` (after ``skip`` good ones) with ``error``; status 429
        adds ``Retry-After: 0``."""
        self._failures.append(_Failure(method, error, status, skip, times, when))

    def host_file(
        self,
        name: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        status: int = 200,
        location: str | None = None,
    ) -> str:
        """Serve ``data`` at a files.slack.com-like URL on this host and return the URL."""
        path = f"files-pri/{self.team_id}-F{next(self._ids):07d}/download/{name}"
        self.files[path] = HostedFile(data, content_type, status, location)
        return f"{self.origin}/files/{path}"

    def file_object(self, name: str, mimetype: str, url: str, size: int, **extra: Any) -> dict[str, Any]:
        """A Slack file object as it appears in ``message`` events."""
        file_id = extra.pop("id", f"F{next(self._ids):09d}")
        return {
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1],
            "size": size,
            "mode": "hosted",
            "is_external": False,
            "url_private": url,
            "url_private_download": url,
            **extra,
        }

    # --- events, as Slack sends them --------------------------------------------------------------------------
    def next_ts(self) -> str:
        return f"{1_700_000_000 + next(self._ts)}.{next(self._ids):06d}"

    def event_callback(self, event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        return {
            "token": "legacy-verification-token",
            "team_id": self.team_id,
            "api_app_id": "A0APP",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {"team_id": self.team_id, "user_id": self.bot_user_id, "is_bot": True, "is_enterprise_install": False}
            ],
            "is_ext_shared_channel": False,
        }

    def user_event(
        self,
        text: str,
        *,
        channel: str = "C0GENERAL",
        user: str = "U0ALICE",
        kind: str = "message",
        ts: str | None = None,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A person's ``message`` or ``app_mention`` event."""
        event: dict[str, Any] = {
            "type": kind,
            "user": user,
            "text": text,
            "ts": ts or self.next_ts(),
            "channel": channel,
            "team": self.team_id,
            "event_ts": ts or "",
        }
        if kind == "message":
            event["channel_type"] = "im" if channel.startswith("D") else "channel"
        if thread_ts:
            event["thread_ts"] = thread_ts
        if files:
            event["files"] = files
            if kind == "message":
                event["subtype"] = "file_share"
        event.update(extra)
        event["event_ts"] = event["ts"]
        return event

    def edited_event(self, original: dict[str, Any], text: str) -> dict[str, Any]:
        """The ``message_changed`` event Slack sends when a person edits ``original`` (a ``user_event``)."""
        edited = {**original, "type": "message", "text": text}
        edited["edited"] = {"user": original["user"], "ts": self.next_ts()}
        edited.pop("channel", None)
        return self._about(original, "message_changed", message=edited, previous_message=dict(original))

    def deleted_event(self, original: dict[str, Any]) -> dict[str, Any]:
        """The ``message_deleted`` event Slack sends when a person deletes ``original`` (a ``user_event``)."""
        return self._about(original, "message_deleted", deleted_ts=original["ts"], previous_message=dict(original))

    def _about(self, original: dict[str, Any], subtype: str, **fields: Any) -> dict[str, Any]:
        ts = self.next_ts()
        event = {"type": "message", "subtype": subtype, "hidden": True, "channel": original["channel"], "ts": ts}
        event |= {"event_ts": ts, "channel_type": "im" if original["channel"].startswith("D") else "channel"}
        return event | fields

    def messages_tab_opened(self, *, user: str = "U0ALICE", channel: str | None = "D0ALICE") -> dict[str, Any]:
        """The ``app_home_opened`` event of someone opening the bot's Messages tab (agent_view's new conversation)."""
        event: dict[str, Any] = {"type": "app_home_opened", "user": user, "tab": "messages", "event_ts": self.next_ts()}
        if channel is not None:
            event["channel"] = channel
        return event

    def session_stopped(self, channel: str, thread_ts: str, streaming: list[str]) -> dict[str, Any]:
        """The ``agent_session_stopped`` event: someone pressed the stop button of an agent session."""
        return {
            "type": "agent_session_stopped",
            "channel": channel,
            "thread_ts": thread_ts,
            "streaming_message_ts": streaming,
            "event_ts": self.next_ts(),
        }

    def reaction_added(
        self, message: FakeMessage | dict[str, Any], *, reaction: str = "mag", user: str = "U0ALICE"
    ) -> dict[str, Any]:
        """The ``reaction_added`` event: ``user`` reacted ``reaction`` to ``message`` (one of the bot's, or a user
        event); Slack names the message by channel and ts only, not its thread."""
        if isinstance(message, FakeMessage):
            channel, ts, author = message.channel, message.ts, self.bot_user_id
        else:
            channel, ts, author = message["channel"], message["ts"], message["user"]
        return {
            "type": "reaction_added",
            "user": user,
            "reaction": reaction,
            "item_user": author,
            "item": {"type": "message", "channel": channel, "ts": ts},
            "event_ts": self.next_ts(),
        }

    def feedback_click(self, message: FakeMessage, *, value: str = "good", user: str = "U0ALICE") -> dict[str, Any]:
        """The ``block_actions`` payload Slack sends when ``user`` presses the button of ``message``'s feedback
        buttons whose value is ``value``; fails if the message shows no such button."""
        action = next((a for a in _feedback_actions(message.blocks) if a["value"] == value), None)
        if action is None:
            raise AssertionError(f"message {message.ts} has no feedback button with the value {value!r}")
        where: dict[str, Any] = {"message_ts": message.ts, "channel_id": message.channel, "is_ephemeral": False}
        shown: dict[str, Any] = {"type": "message", "user": self.bot_user_id, "bot_id": self.bot_id}
        shown |= {"text": message.text, "ts": message.ts, "blocks": message.blocks}
        if message.thread_ts:
            where["thread_ts"] = shown["thread_ts"] = message.thread_ts
        channel_name = "directmessage" if message.channel.startswith("D") else "general"
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": self.team_id},
            "api_app_id": "A0APP",
            "token": "legacy-verification-token",
            "container": {"type": "message", **where},
            "trigger_id": f"{next(self._ids)}.{next(self._ids)}.fake",
            "team": {"id": self.team_id, "domain": "fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": message.channel, "name": channel_name},
            "message": shown,
            "state": {"values": {}},
            "response_url": f"{self.origin}/actions/response",
            "actions": [action | {"action_ts": self.next_ts()}],
        }

    def slash_command(self, text: str, *, channel: str = "C0GENERAL", user: str = "U0ALICE") -> dict[str, str]:
        return {
            "token": "legacy-verification-token",
            "team_id": self.team_id,
            "team_domain": "fake",
            "channel_id": channel,
            "channel_name": "directmessage" if channel.startswith("D") else "general",
            "user_id": user,
            "user_name": user.lower(),
            "command": "/threadline",
            "text": text,
            "api_app_id": "A0APP",
            "response_url": f"{self.origin}/commands/response",
            "trigger_id": "1.2.3",
        }

    # --- Socket Mode ---------------------------------------------------------------------------------------------
    @property
    def connections(self) -> int:
        """How many Socket Mode connections are open now."""
        return len(self._open())

    async def wait_connections(self, count: int, within: float = 10.0) -> None:
        """Wait until at least ``count`` Socket Mode connections are open (e.g. one per replica)."""
        await self.wait_for(lambda: self.connections >= count, within)

    async def wait_connected(self, within: float = 5.0) -> None:
        await self.wait_connections(1, within)

    def deliveries_of(self, envelope_id: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.envelope_id == envelope_id]

    def push_envelope(
        self, payload: dict[str, Any], *, kind: str = "events_api", retry_attempt: int = 0, retry_reason: str = ""
    ) -> str:
        """Hand one envelope to Socket Mode delivery (round-robin, redelivered until acked) and return its id at
        once; ``acked``, ``deliveries`` and ``abandoned`` tell what became of it."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        envelope = _Envelope(str(uuid.uuid4()), kind, payload, future, retry_attempt, retry_reason)
        self._envelopes[envelope.envelope_id] = envelope
        opened = self._open()
        if opened:
            target = opened[self._dealt % len(opened)]
            self._dealt += 1
            self._deliver(envelope, target)
        else:
            self._waiting.append(envelope)
        return envelope.envelope_id

    def push_event(self, event: dict[str, Any], *, event_id: str | None = None) -> str:
        """``push_envelope`` of the event callback around ``event`` (e.g. a ``user_event``)."""
        return self.push_envelope(self.event_callback(event, event_id=event_id))

    async def send_envelope(
        self,
        payload: dict[str, Any],
        *,
        kind: str = "events_api",
        retry_attempt: int = 0,
        retry_reason: str = "",
        within: float = 5.0,
    ) -> dict[str, Any]:
        """Send one envelope and return its ack (``{}`` when the ack has no payload), whichever delivery it acks."""
        envelope_id = self.push_envelope(payload, kind=kind, retry_attempt=retry_attempt, retry_reason=retry_reason)
        async with asyncio.timeout(within):
            return await asyncio.shield(self._envelopes[envelope_id].ack)

    def _open(self) -> list[_Connection]:
        return [c for c in self._connections if not c.ws.closed]

    def _deliver(self, envelope: _Envelope, connection: _Connection) -> None:
        """Record and send one delivery, and start its ack clock (all before the send, so records keep order)."""
        envelope.connection = connection
        connection.unacked[envelope.envelope_id] = envelope
        self.deliveries.append(
            Delivery(envelope.envelope_id, connection.number, envelope.attempt, envelope.reason, envelope.kind)
        )
        loop = asyncio.get_running_loop()
        envelope.timer = loop.call_later(self.ack_timeout, self._ack_timed_out, envelope, connection)
        message = {
            "envelope_id": envelope.envelope_id,
            "type": envelope.kind,
            "accepts_response_payload": envelope.kind != "events_api",
            "payload": envelope.payload,
            "retry_attempt": envelope.attempt,
            "retry_reason": envelope.reason,
        }
        self._spawn(self._send(connection, message))
        self._spawn(self._notify())

    async def _send(self, connection: _Connection, message: dict[str, Any]) -> None:
        async with connection.lock:
            with contextlib.suppress(ConnectionError):  # it is closing: it hands its unacked envelopes on
                await connection.ws.send_json(message)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ack_timed_out(self, envelope: _Envelope, connection: _Connection) -> None:
        if envelope.connection is connection and envelope.envelope_id not in self.acked:
            self._redeliver(envelope, RETRY_TIMEOUT)

    def _redeliver(self, envelope: _Envelope, reason: str) -> None:
        """Take ``envelope`` off its connection and send it to the next open one after it (wrapping round; the
        same one if it is alone), or keep it for the next connection; give up after ``envelope_retries``."""
        previous = envelope.connection
        envelope.connection = None
        if envelope.timer is not None:
            envelope.timer.cancel()
        if previous is not None:
            previous.unacked.pop(envelope.envelope_id, None)
        if envelope.attempt >= self.envelope_retries:
            self.abandoned.append(envelope.envelope_id)
            self._spawn(self._notify())
            return
        envelope.attempt += 1
        envelope.reason = reason
        opened = self._open()
        others = [c for c in opened if c is not previous] or opened
        if not others:
            self._waiting.append(envelope)
            return
        after = previous.number if previous is not None else 0
        self._deliver(envelope, next((c for c in others if c.number > after), others[0]))

    def _ack(self, envelope_id: str, connection: _Connection, payload: dict[str, Any]) -> None:
        envelope = self._envelopes.get(envelope_id)
        if envelope is None or envelope_id in self.acked:
            return
        self.acked[envelope_id] = connection.number
        if envelope.timer is not None:
            envelope.timer.cancel()
        if envelope.connection is not None:
            envelope.connection.unacked.pop(envelope_id, None)
            envelope.connection = None
        if envelope in self._waiting:
            self._waiting.remove(envelope)
        if not envelope.ack.done():
            envelope.ack.set_result(payload)

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        if self.connections >= self.max_connections:
            await ws.send_json({"type": "disconnect", "reason": "too_many_websockets", "debug_info": {}})
            await ws.close()
            return ws
        hello = {"type": "hello", "num_connections": self.connections + 1, "connection_info": {"app_id": "A0APP"}}
        await ws.send_json(hello | {"debug_info": {}})
        connection = _Connection(next(self._numbers), ws)
        self._connections.append(connection)
        waiting, self._waiting = self._waiting, []
        for envelope in waiting:
            self._deliver(envelope, connection)
        try:
            await self._notify()
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                data = json.loads(message.data)
                self.acks.append(data)
                self._ack(str(data.get("envelope_id")), connection, data.get("payload") or {})
                await self._notify()
        finally:
            self._connections.remove(connection)
            if not self._closing:
                for envelope in list(connection.unacked.values()):
                    self._redeliver(envelope, RETRY_CONNECTION_CLOSED)
                self._spawn(self._notify())  # not awaited: the handler may be cancelled here
        return ws

    # --- HTTP mode ---------------------------------------------------------------------------------------------
    async def deliver(
        self,
        url: str,
        payload: dict[str, Any],
        *,
        form: bool = False,
        retry_num: int | None = None,
        secret: str | None = None,
    ) -> tuple[int, str]:
        """POST an event (JSON) or a slash command (form) to the bot, signed like Slack signs it."""
        body = urlencode(payload) if form else json.dumps(payload)
        content_type = "application/x-www-form-urlencoded" if form else "application/json"
        return await self.deliver_raw(url, body, content_type=content_type, retry_num=retry_num, secret=secret)

    async def deliver_interaction(self, url: str, payload: dict[str, Any]) -> tuple[int, str]:
        """POST an interaction (``block_actions``…) to the bot as Slack does: a form with one JSON ``payload``."""
        return await self.deliver(url, {"payload": json.dumps(payload)}, form=True)

    async def deliver_raw(
        self,
        url: str,
        body: str,
        *,
        content_type: str = "application/json",
        retry_num: int | None = None,
        secret: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> tuple[int, str]:
        """POST any body, signed with ``secret`` (default: the real signing secret), e.g. one that is not JSON."""
        stamp = str(int(time.time()))
        key = (secret if secret is not None else self.signing_secret).encode()
        signature = "v0=" + hmac.new(key, f"v0:{stamp}:{body}".encode(), hashlib.sha256).hexdigest()
        headers = {"Content-Type": content_type, "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature}
        if retry_num is not None:
            headers |= {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
        async with contextlib.AsyncExitStack() as stack:
            if session is None:
                session = await stack.enter_async_context(aiohttp.ClientSession())
            async with session.post(url, data=body.encode(), headers=headers) as response:
                return response.status, await response.text()

    # --- files -------------------------------------------------------------------------------------------------
    async def _file(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.file_requests.append(FileRequest(path, dict(request.headers)))
        await self._notify()
        hosted = self.files.get(path)
        if hosted is None:
            return web.Response(status=404, text="not found")
        if hosted.location:
            return web.Response(status=hosted.status, headers={"Location": hosted.location})
        if request.headers.get("Authorization") != f"Bearer {self.bot_token}":
            return web.Response(body=LOGIN_PAGE, content_type="text/html")
        return web.Response(body=hosted.data, status=hosted.status, content_type=hosted.content_type)

    async def _upload(self, request: web.Request) -> web.Response:
        upload = self.uploads.get(request.match_info["file_id"])
        if upload is None:
            return web.Response(status=404, text="unknown upload")
        upload.data = await request.read()
        await self._notify()
        return web.Response(text=f"OK - {len(upload.data)}", content_type="text/plain")

    # --- Web API -----------------------------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            args.update(await request.json())
        elif request.can_read_body:
            form = await request.post()
            args.update({k: v for k, v in form.items() if isinstance(v, str)})
        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else args.pop("token", None)
        self.calls.append(Call(method, args, token, time.monotonic()))
        try:
            return self._answer(method, args, token)
        finally:
            await self._notify()

    def _answer(self, method: str, args: dict[str, Any], token: str | None) -> web.Response:
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        for failure in self._failures:
            if failure.method != method or failure.times <= 0 or (failure.when and not failure.when(args)):
                continue
            if failure.skip > 0:
                failure.skip -= 1
                continue
            failure.times -= 1
            headers = {"Retry-After": "0"} if failure.status == 429 else {}
            return web.json_response({"ok": False, "error": failure.error}, status=failure.status, headers=headers)
        retry_after = self._over_tier(method)
        if retry_after is not None:
            self.rate_limited.append(method)
            headers = {"Retry-After": str(retry_after)}
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers=headers)
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        result = handler(args)
        if isinstance(result, web.Response):
            return result
        return web.json_response({"ok": True, **result} if "error" not in result else {"ok": False, **result})

    def _over_tier(self, method: str) -> int | None:
        """Whole seconds to wait if one more ``method`` call breaks its ``tier_limits`` entry, else None (and the
        call is counted)."""
        limit = self.tier_limits.get(method)
        if limit is None:
            return None
        count, window = limit
        now = time.monotonic()
        stamps = [t for t in self._tier_stamps.get(method, []) if now - t < window]
        self._tier_stamps[method] = stamps
        if len(stamps) >= count:
            return max(1, math.ceil(stamps[-count] + window - now))
        stamps.append(now)
        return None

    def _find(self, channel: str, ts: str) -> FakeMessage | None:
        return next((m for m in self.messages if m.channel == channel and m.ts == ts and not m.deleted), None)

    def _new(self, args: dict[str, Any], text: str, via: str, **kw: Any) -> FakeMessage:
        message = FakeMessage(self.next_ts(), str(args.get("channel")), args.get("thread_ts"), text, via, **kw)
        self.messages.append(message)
        return message

    @staticmethod
    def _stream_text(args: dict[str, Any]) -> str:
        text = args.get("markdown_text") or ""
        chunks = args.get("chunks") or []
        if isinstance(chunks, str):
            chunks = json.loads(chunks)
        return text + "".join(c.get("text", "") for c in chunks if c.get("type") == "markdown_text")

    @staticmethod
    def _other_chunks(args: dict[str, Any]) -> list[dict[str, Any]]:
        chunks = args.get("chunks") or []
        if isinstance(chunks, str):
            chunks = json.loads(chunks)
        return [c for c in chunks if c.get("type") != "markdown_text"]

    def _chunk_error(self, args: dict[str, Any]) -> dict[str, Any] | None:
        """Slack's checks of a stream call's chunks (and of ``task_display_mode``), or None when they pass."""
        mode = args.get("task_display_mode")
        if mode is not None and mode not in {"timeline", "plan"}:
            return {"error": "invalid_arguments"}
        chunks = args.get("chunks") or []
        if isinstance(chunks, str):
            chunks = json.loads(chunks)
        if not isinstance(chunks, list):
            return {"error": "invalid_chunks"}
        for chunk in chunks:
            kind = chunk.get("type") if isinstance(chunk, dict) else None
            if kind == "markdown_text":
                ok = isinstance(chunk.get("text"), str)
            elif not self.chunks_supported:
                ok = False
            elif kind == "task_update":
                ok = bool(chunk.get("id")) and bool(chunk.get("title")) and chunk.get("status") in TASK_STATUSES
            elif kind == "plan_update":
                ok = bool(chunk.get("title"))
            elif kind == "blocks":
                ok = isinstance(chunk.get("blocks"), list) and self._blocks_error(chunk["blocks"]) is None
            else:
                ok = False
            if not ok:
                return {"error": "invalid_chunks"}
        return None

    @staticmethod
    def _blocks(args: dict[str, Any]) -> list[dict[str, Any]] | None:
        blocks = args.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        return blocks

    def _blocks_error(self, blocks: Any) -> dict[str, Any] | None:
        """Slack's checks of the blocks the bot uses (markdown, context_actions with feedback_buttons), or None."""
        if not isinstance(blocks, list) or len(blocks) > 50:
            return {"error": "invalid_blocks"}
        for block in blocks:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "markdown":
                ok = isinstance(block.get("text"), str) and 0 < len(block["text"]) <= 12_000
            elif kind == "context_actions":
                elements = block.get("elements")
                ok = isinstance(elements, list) and 0 < len(elements) <= 5 and all(map(_feedback_ok, elements))
            else:
                ok = kind in {"section", "context", "divider", "actions", "rich_text", "image", "header"}
            if not ok:
                return {"error": "invalid_blocks"}
        return None

    def _with_ids(self, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The blocks as Slack keeps them: each with a block_id (made up where the app gave none)."""
        return [{"block_id": f"b{next(self._ids)}", **block} for block in blocks]

    def _message_content(self, args: dict[str, Any]) -> tuple[str, list[dict[str, Any]]] | dict[str, Any]:
        """(text, blocks) of a chat.postMessage/chat.update, or Slack's error. With blocks, what shows is the
        blocks: the text is their markdown blocks' text (``text`` is only the notification's fallback)."""
        blocks = self._blocks(args)
        if args.get("markdown_text") and (blocks or args.get("text")):
            return {"error": "invalid_arguments"}  # markdown_text is not to be used with blocks or text
        if blocks is None:
            return str(args.get("markdown_text") or args.get("text") or ""), []
        error = self._blocks_error(blocks)
        if error is not None:
            return error
        shown = [b["text"] for b in blocks if b.get("type") == "markdown"]
        return ("\n".join(shown) if shown else str(args.get("text") or "")), self._with_ids(blocks)

    def _m_auth_test(self, args: dict[str, Any]) -> web.Response:
        body = {
            "ok": True,
            "url": "https://fake.slack.com/",
            "team": "Fake Team",
            "user": "threadline",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }
        return web.json_response(body, headers={"x-oauth-scopes": ",".join(self.scopes)})

    def _m_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"ws://{self.host}:{self.port}/ws?ticket={uuid.uuid4()}&app_id=A0APP"}

    def _m_chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        content = self._message_content(args)
        if isinstance(content, dict):
            return content
        text, blocks = content
        if not text and not blocks:
            return {"error": "no_text"}
        message = self._new(args, text, "post", blocks=blocks)
        return {"channel": message.channel, "ts": message.ts, "message": {"text": text, "ts": message.ts}}

    def _m_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(str(args.get("channel")), str(args.get("ts")))
        if message is None:
            return {"error": "message_not_found"}
        content = self._message_content(args)
        if isinstance(content, dict):
            return content
        message.text, blocks = content
        if blocks or self._blocks(args) is not None:  # without blocks, Slack keeps the message's blocks
            message.blocks = blocks
        message.edits.append(time.monotonic())
        return {"channel": message.channel, "ts": message.ts, "text": message.text}

    def _m_chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._find(str(args.get("channel")), str(args.get("ts")))
        if message is None:
            return {"error": "message_not_found"}
        message.deleted = True
        return {"channel": message.channel, "ts": message.ts}

    def _m_chat_startStream(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = str(args.get("channel") or "")
        if not args.get("thread_ts"):
            return {"error": "invalid_arguments"}
        if not channel.startswith("D") and not (args.get("recipient_user_id") and args.get("recipient_team_id")):
            return {"error": "missing_recipient_user_id"}
        if (error := self._chunk_error(args)) is not None:
            return error
        message = self._new(args, self._stream_text(args), "stream", streaming=True, chunks=self._other_chunks(args))
        message.task_display_mode = args.get("task_display_mode")
        return {"channel": channel, "ts": message.ts}

    def _streaming(self, args: dict[str, Any]) -> FakeMessage | dict[str, Any]:
        message = self._find(str(args.get("channel")), str(args.get("ts")))
        if message is None:
            return {"error": "message_not_found"}
        if not message.streaming:
            return {"error": "message_not_in_streaming_state"}
        return message

    def _m_chat_appendStream(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._streaming(args)
        if isinstance(message, dict):
            return message
        if self.stream_dies_after is not None and message.appends >= self.stream_dies_after:
            message.streaming = False
            return {"error": "message_not_in_streaming_state"}
        if (error := self._chunk_error(args)) is not None:
            return error
        message.appends += 1
        message.text += self._stream_text(args)
        message.chunks += self._other_chunks(args)
        return {"channel": message.channel, "ts": message.ts}

    def _m_chat_stopStream(self, args: dict[str, Any]) -> dict[str, Any]:
        message = self._streaming(args)
        if isinstance(message, dict):
            return message
        if (error := self._chunk_error(args)) is not None:
            return error
        status = args.get("session_status")
        if status is not None and status not in SESSION_STATUSES:
            return {"error": "invalid_arguments"}
        blocks = self._blocks(args)
        if blocks is not None and (error := self._blocks_error(blocks)) is not None:
            return error
        message.text += self._stream_text(args)
        message.chunks += self._other_chunks(args)
        message.blocks = self._with_ids(blocks) if blocks else message.blocks
        message.streaming = False
        if status:
            session = self._session(message.channel, str(message.thread_ts))
            session["status"] = status
            session["history"].append(status)
        return {"channel": message.channel, "ts": message.ts, "message": {"text": message.text}}

    def _m_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        file_id = f"F{next(self._ids):09d}"
        self.uploads[file_id] = Upload(file_id, str(args.get("filename")), int(args.get("length") or 0))
        return {"file_id": file_id, "upload_url": f"{self.origin}/upload/{file_id}"}

    def _m_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        listed = json.loads(args.get("files") or "[]")
        done = []
        for item in listed:
            upload = self.uploads.get(item.get("id"))
            if upload is None or upload.data is None:
                return {"error": "file_not_found"}
            upload.title, upload.channel = item.get("title") or upload.filename, args.get("channel_id")
            upload.thread_ts = args.get("thread_ts")
            info = {"id": upload.file_id, "name": upload.filename, "title": upload.title, "size": len(upload.data)}
            done.append(info)
            if upload.channel:
                self._new(
                    {"channel": upload.channel, "thread_ts": upload.thread_ts},
                    args.get("initial_comment") or "",
                    "upload",
                    files=[info],
                )
        return {"files": done}

    def _m_files_info(self, args: dict[str, Any]) -> dict[str, Any]:
        info = self.file_info.get(str(args.get("file")))
        return {"file": info} if info else {"error": "file_not_found"}

    def _m_assistant_threads_setStatus(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.status_error_in_channels and not str(args.get("channel_id")).startswith("D"):
            return {"error": self.status_error_in_channels}
        return {}

    def _m_assistant_threads_setSuggestedPrompts(self, args: dict[str, Any]) -> dict[str, Any]:
        if not (self.agent_view and args.get("thread_ts")):  # an agent app's call with thread_ts silently fails
            self.prompts_shown.append(args)
        return {}

    def _session(self, channel: str, thread_ts: str) -> dict[str, Any]:
        return self.sessions.setdefault((channel, thread_ts), {"status": None, "title": None, "history": []})

    def _m_agents_sessions_setStatus(self, args: dict[str, Any]) -> dict[str, Any]:
        status = args.get("status")
        if status not in SESSION_STATUSES or not args.get("channel_id"):
            return {"error": "invalid_arguments"}
        where = (str(args["channel_id"]), str(args.get("thread_ts") or ""))
        created = where not in self.sessions
        session = self._session(*where)
        session["status"] = status
        session["history"].append(status)
        if args.get("title") and created:  # like Slack: a title only names a session it creates
            session["title"] = args["title"]
        answer = {"status": status, "title": session["title"]}
        if self.session_warning:
            answer |= {"warning": self.session_warning, "response_metadata": {"warnings": [self.session_warning]}}
        return answer

    def _m_agents_sessions_rename(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("channel_id") or not args.get("title"):
            return {"error": "invalid_arguments"}
        self._session(str(args["channel_id"]), str(args.get("thread_ts") or ""))["title"] = args["title"]
        return {"title": args["title"]}

    def _m_assistant_threads_setTitle(self, args: dict[str, Any]) -> dict[str, Any]:
        return {}
