"""A fake Discord for offline tests: REST and a websocket gateway on 127.0.0.1, driven by the real discord.py.

It holds one guild with a text channel, hands out threads and DM channels, and records everything the bot
does: every message send and edit (with a timestamp per channel, so a test can check the 5-per-5-seconds rule),
typing, thread creation, reactions, command registration, interaction responses, and 429s. Like Discord it
enforces a per-channel limit on sends+edits and answers 429 with ``retry_after`` when the bot goes over it, and
the global limit (50 requests per second per bot, interactions aside) with a 429 marked ``global``. A message
created with a ``nonce`` and ``enforce_nonce`` is made once: the same nonce again within ``nonce_window`` seconds
returns the message already made. ``lose_responses`` makes the next message creations happen while their answer
is lost (the connection drops, or a gateway timeout status), as when a send times out.

Tests inject gateway events: ``await fake.user_message(...)`` sends a MESSAGE_CREATE (a plain message, a reply
with ``reply_to``, a forward with ``forward``, stickers with ``stickers``), ``await fake.slash(...)``
an INTERACTION_CREATE, ``await fake.force_resume(replay=[...])`` makes the client reconnect and RESUME, and the
fake then replays the given events (as Discord does with events the client may have missed). Users edit and
delete their messages (``edit_user_message``, ``delete_user_message``) and moderators delete threads
(``delete_thread``: later writes there get 404 Unknown Channel, as on Discord). Users react
(``user_reaction``: MESSAGE_REACTION_ADD); the bot's own reactions go out as MESSAGE_REACTION_ADD too, as on
Discord. Like Discord, reaction events reach only a session that identified with the reaction intents
(GUILD_MESSAGE_REACTIONS for guild channels, DIRECT_MESSAGE_REACTIONS for DMs).

Shards: a session that identifies with ``shard: [id, count]`` gets, like on Discord, only the guilds of its shard
(``shard_of``: ``(guild_id >> 22) % count``; DMs go to shard 0): in READY and GUILD_CREATE, and every event of those
guilds. ``add_guild`` makes more guilds (one text channel each), on the shard a test asks for; ``deliveries``
records which session's shard got which event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

GUILD_MESSAGE_REACTIONS_INTENT = 1 << 10
DIRECT_MESSAGE_REACTIONS_INTENT = 1 << 13
MESSAGE_CONTENT_INTENT = 1 << 15
GATEWAY_MESSAGE_CONTENT = 1 << 18
GATEWAY_MESSAGE_CONTENT_LIMITED = 1 << 19
VOICE_MESSAGE_FLAG = 8192
HAS_SNAPSHOT_FLAG = 1 << 14


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """discord.py only decodes a body whose Content-Type is exactly ``application/json``."""
    return web.Response(
        body=json.dumps(payload).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


@dataclass
class Write:
    """One message send or edit, as the fake saw it."""

    channel_id: int
    kind: str  # "send" | "edit"
    at: float
    message_id: int
    content: str | None
    flags: int = 0
    attachments: list[dict[str, Any]] = field(default_factory=list)
    files: list[Upload] = field(default_factory=list)
    nonce: str | None = None


@dataclass
class Upload:
    field_name: str
    filename: str
    content_type: str
    data: bytes


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard Discord sends a guild's events to; a DM's (no guild) go to shard 0."""
    return 0 if guild_id is None else (guild_id >> 22) % shard_count


@dataclass
class Delivery:
    """One gateway event sent to one session: the shard it identified with (None: unsharded)."""

    shard: tuple[int, int] | None
    event: str
    data: dict[str, Any]


@dataclass
class _Gateway:
    ws: web.WebSocketResponse
    session_id: str | None = None
    seq: int = 0
    shard: list[int] | None = None
    ready: bool = False  # READY and GUILD_CREATE sent: events injected now reach a client that knows the guild
    intents: int = 0  # what the session identified with (a RESUME keeps them)

    def holds(self, guild_id: int | None) -> bool:
        """Whether this session gets the guild's events (a DM's: ``guild_id`` None)."""
        return self.shard is None or self.shard[0] == shard_of(guild_id, self.shard[1])


class FakeDiscord:
    def __init__(
        self,
        *,
        token: str = "fake-discord-token",
        message_content_intent: bool = True,
        rate_limit: tuple[int, float] | None = (5, 5.0),
        global_limit: tuple[int, float] | None = (50, 1.0),
        premium_tier: int = 0,
        voice_messages_allowed: bool = True,
        threads_allowed: bool = True,
        bot_id: int | None = None,
        guild_id: int | None = None,
    ) -> None:
        self.token = token
        self.message_content_intent = message_content_intent
        self.rate_limit = rate_limit
        self.global_limit = global_limit  # (requests, seconds) for the whole bot; None: no global limit
        self.nonce_window = 300.0  # "a few minutes": how long an enforced nonce returns its message
        self.premium_tier = premium_tier
        self.voice_messages_allowed = voice_messages_allowed
        self.threads_allowed = threads_allowed  # False: the bot lacks Create Public Threads (403)
        self.bot_gateway_url: str | None = None  # what GET /gateway/bot recommends (default: this fake)
        self._ids = itertools.count(1_300_000_000_000_000_000)
        self.bot_id = self.new_id() if bot_id is None else bot_id
        self.app_id = self.bot_id
        self.guild_id = self.new_id() if guild_id is None else guild_id
        self.bot_role_id = self.new_id()
        self.helper_role_id = self.new_id()  # a plain role users can have (for access lists)
        # Guild permissions of @everyone and of the other roles (role id → bits): everything unless a test says
        # otherwise (0x20 is Manage Server; the owner, alice, has every permission whatever the roles say).
        self.everyone_permissions = 0x1_FFFF_FFFF
        self.role_permissions: dict[int, int] = {}
        self.guilds: dict[int, dict[str, Any]] = {  # guild id → name and the bot's role there
            self.guild_id: {"name": "Test Guild", "bot_role_id": self.bot_role_id, "roles": [self.helper_role_id]}
        }
        self.channel_id = self.new_id()  # #general, a text channel
        self.voice_channel_id = self.new_id()
        self.bot_user = {
            "id": str(self.bot_id),
            "username": "threadline",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "verified": True,
            "flags": 0,
            "mfa_enabled": False,
        }
        self.alice = self.make_user("alice")
        self.bob = self.make_user("bob")
        self.other_bot = self.make_user("otherbot", bot=True)
        self.channels: dict[int, dict[str, Any]] = {
            self.channel_id: self._guild_channel(self.channel_id, "general", 0),
            self.voice_channel_id: self._guild_channel(self.voice_channel_id, "Lounge", 2),
        }
        self.messages: dict[int, dict[str, Any]] = {}
        self.cdn: dict[str, bytes] = {}
        # what the bot did
        self.writes: list[Write] = []
        self.typing: list[tuple[int, float]] = []
        self.threads_created: list[dict[str, Any]] = []
        self.reactions: list[tuple[int, int, str]] = []
        self.command_puts: list[tuple[str, list[dict[str, Any]]]] = []
        self.interaction_callbacks: list[dict[str, Any]] = []
        self.cdn_hits: list[str] = []
        self.rate_limited = 0  # every 429, per channel or global
        self.global_rate_limited = 0
        self.nonce_hits = 0  # creations answered with the message an earlier one with the same nonce made
        self._nonces: dict[str, tuple[float, int]] = {}  # nonce → (made at, message id)
        self._lost: list[tuple[int | None, bool]] = []  # answers to lose: (status or None to drop, voice only)
        self._global_stamps: deque[float] = deque()
        self.identifies: list[dict[str, Any]] = []
        self.deliveries: list[Delivery] = []  # every event sent to a session after it identified or resumed
        self.resumes: list[dict[str, Any]] = []
        self.rest_log: list[tuple[str, str]] = []
        self._replay: list[tuple[str, dict[str, Any]]] = []
        self._token_channels: dict[str, int] = {}
        self._gateways: list[_Gateway] = []
        self._sessions: dict[str, int] = {}
        self._session_intents: dict[str, int] = {}  # session id → the intents it identified with
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/{name:.+}", self._cdn)
        app.router.add_route("*", "/api/v10/{path:.+}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        for gw in list(self._gateways):
            with contextlib.suppress(Exception):
                await gw.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.origin}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def new_id(self) -> int:
        return next(self._ids)

    # --- world builders -------------------------------------------------------------------------------------
    def make_user(self, name: str, *, bot: bool = False) -> dict[str, Any]:
        user = {"id": str(self.new_id()), "username": name, "discriminator": "0", "global_name": name.title()}
        user.update({"avatar": None, "bot": bot})
        return user

    def add_guild(self, name: str = "Other Guild", *, shard: tuple[int, int] | None = None) -> tuple[int, int]:
        """Another guild the bot is in, with one text channel: (guild id, channel id). ``shard`` (id, count): an id
        that Discord would send to that shard. Add guilds before the bot connects (they arrive in GUILD_CREATE)."""
        guild_id = self.new_id()
        if shard is not None:
            shard_id, count = shard
            high = guild_id >> 22
            high += (shard_id - high) % count
            guild_id = high << 22 | guild_id & (1 << 22) - 1
        self.guilds[guild_id] = {"name": name, "bot_role_id": self.new_id(), "roles": []}
        channel_id = self.new_id()
        self.channels[channel_id] = self._guild_channel(channel_id, "general", 0, guild_id=guild_id)
        return guild_id, channel_id

    def guild_of(self, channel_id: int) -> int | None:
        guild = self.channels.get(channel_id, {}).get("guild_id")
        return int(guild) if guild else None

    def _guild_channel(self, cid: int, name: str, ctype: int, *, guild_id: int | None = None) -> dict[str, Any]:
        return {
            "id": str(cid),
            "type": ctype,
            "guild_id": str(guild_id or self.guild_id),
            "name": name,
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            **({"bitrate": 64000, "user_limit": 0, "rtc_region": None} if ctype == 2 else {}),
        }

    def add_thread(self, *, owner_id: int, parent_id: int | None = None, name: str = "a thread") -> int:
        """A thread that exists before the bot connects (it arrives in GUILD_CREATE)."""
        tid = self.new_id()
        self.channels[tid] = self._thread(tid, parent_id or self.channel_id, owner_id, name)
        return tid

    def _thread(self, tid: int, parent_id: int, owner_id: int, name: str) -> dict[str, Any]:
        return {
            "id": str(tid),
            "type": 11,
            "guild_id": str(self.guild_of(parent_id) or self.guild_id),
            "parent_id": str(parent_id),
            "owner_id": str(owner_id),
            "name": name,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": _now_iso(),
                "locked": False,
                "create_timestamp": _now_iso(),
            },
        }

    def dm_channel(self, user: dict[str, Any]) -> int:
        for cid, channel in self.channels.items():
            if channel["type"] == 1 and channel["recipients"][0]["id"] == user["id"]:
                return cid
        cid = self.new_id()
        self.channels[cid] = {"id": str(cid), "type": 1, "last_message_id": None, "recipients": [user]}
        return cid

    def guild_payload(self, guild_id: int | None = None) -> dict[str, Any]:
        guild_id = guild_id or self.guild_id
        guild = self.guilds[guild_id]
        everyone = {"id": str(guild_id), "name": "@everyone", "permissions": str(self.everyone_permissions)}
        bot_role = {"id": str(guild["bot_role_id"]), "name": "threadline", "tags": {"bot_id": str(self.bot_id)}}
        others = [
            {"id": str(rid), "name": "helpers", "permissions": str(self.role_permissions.get(rid, 0))}
            for rid in guild["roles"]
        ]
        roles = [
            {"permissions": "0", **role, "color": 0, "hoist": False, "position": pos, "mentionable": False}
            for pos, role in enumerate([everyone, bot_role, *others])
        ]
        for role in roles:
            role["managed"] = "tags" in role
        in_guild = [c for c in self.channels.values() if c.get("guild_id") == str(guild_id)]
        return {
            "id": str(guild_id),
            "name": guild["name"],
            "icon": None,
            "owner_id": self.alice["id"],
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": self.premium_tier,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "features": [],
            "emojis": [],
            "stickers": [],
            "roles": roles,
            "channels": [c for c in in_guild if c["type"] != 11],
            "threads": [c for c in in_guild if c["type"] == 11],
            "members": [
                {
                    "user": self.bot_user,
                    "roles": [str(guild["bot_role_id"])],
                    "joined_at": _now_iso(),
                    "deaf": False,
                    "mute": False,
                    "flags": 0,
                }
            ],
            "member_count": 3,
            "large": False,
            "unavailable": False,
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "system_channel_id": None,
            "rules_channel_id": None,
            "application_id": None,
            "joined_at": _now_iso(),
        }

    def application(self) -> dict[str, Any]:
        flags = GATEWAY_MESSAGE_CONTENT_LIMITED if self.message_content_intent else 0
        return {
            "id": str(self.app_id),
            "name": "threadline",
            "icon": None,
            "description": "",
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.alice,
            "team": None,
            "verify_key": "0" * 64,
            "flags": flags,
            "interactions_endpoint_url": None,
            "bot": self.bot_user,
        }

    # --- CDN ------------------------------------------------------------------------------------------------
    def host_file(self, data: bytes, filename: str) -> str:
        name = f"{uuid.uuid4().hex}/{filename}"
        self.cdn[name] = data
        return f"{self.origin}/cdn/{name}"

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.cdn_hits.append(name)
        if name not in self.cdn:
            return web.Response(status=404)
        return web.Response(body=self.cdn[name], content_type="application/octet-stream")

    def attachment(
        self,
        data: bytes,
        filename: str,
        content_type: str,
        *,
        size: int | None = None,
        duration_secs: float | None = None,
        waveform: str | None = None,
    ) -> dict[str, Any]:
        """An attachment payload for an incoming message; its bytes are served from the fake CDN."""
        url = self.host_file(data, filename)
        att: dict[str, Any] = {
            "id": str(self.new_id()),
            "filename": filename,
            "size": len(data) if size is None else size,
            "url": url,
            "proxy_url": url,
            "content_type": content_type,
        }
        if duration_secs is not None:
            att["duration_secs"] = duration_secs
        if waveform is not None:
            att["waveform"] = waveform
        return att

    # --- gateway --------------------------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        gw = _Gateway(ws)
        self._gateways.append(gw)
        try:
            await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None})
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                payload = json.loads(msg.data)
                op, data = payload.get("op"), payload.get("d")
                if op == 1:
                    await ws.send_json({"op": 11})
                elif op == 2:
                    await self._identify(gw, data)
                elif op == 6:
                    await self._resume(gw, data)
        finally:
            self._gateways.remove(gw)
        return ws

    async def _identify(self, gw: _Gateway, data: dict[str, Any]) -> None:
        self.identifies.append(data)
        if data.get("token") != self.token:
            await gw.ws.close(code=4004, message=b"Authentication failed.")
            return
        if data.get("intents", 0) & MESSAGE_CONTENT_INTENT and not self.message_content_intent:
            await gw.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        gw.session_id = uuid.uuid4().hex
        gw.shard = data.get("shard")
        gw.intents = self._session_intents[gw.session_id] = int(data.get("intents") or 0)
        guilds = [gid for gid in self.guilds if gw.holds(gid)]
        ready = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": str(gid), "unavailable": True} for gid in guilds],
            "session_id": gw.session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.app_id), "flags": self.application()["flags"]},
            "private_channels": [],
            "relationships": [],
        }
        if gw.shard is not None:
            ready["shard"] = gw.shard
        await self._send_event(gw, "READY", ready)
        for gid in guilds:
            await self._send_event(gw, "GUILD_CREATE", self.guild_payload(gid))
        gw.ready = True

    async def _resume(self, gw: _Gateway, data: dict[str, Any]) -> None:
        self.resumes.append(data)
        gw.session_id = data["session_id"]
        gw.intents = self._session_intents.get(gw.session_id, 0)
        gw.seq = int(data.get("seq") or 0)
        gw.ready = True
        replay, self._replay = self._replay, []
        for event, payload in replay:
            await self._send_event(gw, event, payload)
        await self._send_event(gw, "RESUMED", {})

    async def _send_event(self, gw: _Gateway, event: str, data: dict[str, Any]) -> None:
        gw.seq += 1
        if gw.session_id is not None:
            shard = (gw.shard[0], gw.shard[1]) if gw.shard else None
            self.deliveries.append(Delivery(shard, event, data))
        await gw.ws.send_json({"op": 0, "t": event, "s": gw.seq, "d": data})

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a gateway event to every identified session whose shard holds its guild (DMs: shard 0) and that
        asked for it: reaction events need the reaction intents."""
        needed = 0
        if event.startswith("MESSAGE_REACTION_"):
            needed = GUILD_MESSAGE_REACTIONS_INTENT if data.get("guild_id") else DIRECT_MESSAGE_REACTIONS_INTENT
        guild = data.get("guild_id")
        guild_id = int(guild) if guild else None
        for gw in list(self._gateways):
            wanted = gw.intents & needed == needed
            if wanted and gw.ready and gw.holds(guild_id) and not gw.ws.closed:
                await self._send_event(gw, event, data)

    async def wait_connected(self, within: float = 10.0) -> None:
        await self.wait_for(lambda: any(gw.ready for gw in self._gateways), within, "a gateway session")

    async def force_resume(self, replay: list[tuple[str, dict[str, Any]]]) -> None:
        """Ask the client to reconnect (op 7); on its RESUME, replay these events, then send RESUMED."""
        self._replay = list(replay)
        for gw in list(self._gateways):
            if gw.session_id and not gw.ws.closed:
                await gw.ws.send_json({"op": 7, "d": None, "s": None, "t": None})

    # --- event helpers --------------------------------------------------------------------------------------
    def message_payload(
        self,
        channel_id: int,
        content: str,
        *,
        author: dict[str, Any] | None = None,
        mention_bot: bool = False,
        attachments: list[dict[str, Any]] | None = None,
        flags: int = 0,
        roles: list[str] | None = None,
        message_type: int = 0,
        reply_to: dict[str, Any] | None = None,
        ping: bool = False,
        forward: dict[str, Any] | None = None,
        stickers: list[str] | None = None,
    ) -> dict[str, Any]:
        """A MESSAGE_CREATE payload. ``reply_to``: the message replied to (``ping``: the reply mentions its author,
        Discord's default); ``forward``: a message forwarded (its snapshot is the content); ``stickers``: names."""
        author = author or self.alice
        mid = self.new_id()
        channel = self.channels[channel_id]
        mentions = [self.bot_user] if mention_bot else []
        if mention_bot and f"<@{self.bot_id}>" not in content:
            content = f"<@{self.bot_id}> {content}"
        if reply_to is not None and ping and reply_to["author"] not in mentions:
            mentions.append(reply_to["author"])
        payload: dict[str, Any] = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "author": author,
            "content": content,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": mentions,
            "mention_roles": [],
            "attachments": attachments or [],
            "embeds": [],
            "pinned": False,
            "type": message_type,
            "flags": flags,
        }
        if reply_to is not None:
            payload["type"] = 19
            payload["message_reference"] = self._reference(reply_to, kind=0)
            payload["referenced_message"] = reply_to
        if forward is not None:
            payload["message_reference"] = self._reference(forward, kind=1)
            payload["flags"] = flags | HAS_SNAPSHOT_FLAG
            keep = ("type", "content", "mentions", "mention_roles", "attachments", "embeds", "timestamp", "flags")
            snapshot = {k: forward[k] for k in keep if k in forward}
            snapshot |= {"edited_timestamp": None, "components": [], "sticker_items": forward.get("sticker_items", [])}
            payload["message_snapshots"] = [{"message": snapshot}]
        if stickers:
            payload["sticker_items"] = [{"id": str(self.new_id()), "name": n, "format_type": 1} for n in stickers]
        if channel.get("guild_id"):
            payload["guild_id"] = channel["guild_id"]
            payload["member"] = {
                "roles": roles or [],
                "joined_at": _now_iso(),
                "deaf": False,
                "mute": False,
                "flags": 0,
            }
        return payload

    @staticmethod
    def _reference(message: dict[str, Any], *, kind: int) -> dict[str, Any]:
        reference = {"type": kind, "message_id": message["id"], "channel_id": message["channel_id"]}
        if message.get("guild_id"):
            reference["guild_id"] = message["guild_id"]
        return reference

    async def user_message(self, channel_id: int, content: str, **kwargs: Any) -> dict[str, Any]:
        """A user posts a message: MESSAGE_CREATE on the gateway. Returns the payload (for a later replay)."""
        payload = self.message_payload(channel_id, content, **kwargs)
        self.messages[int(payload["id"])] = payload
        await self.dispatch("MESSAGE_CREATE", payload)
        return payload

    async def edit_user_message(self, message: dict[str, Any], content: str) -> None:
        """The user edits a message they posted: MESSAGE_UPDATE on the gateway."""
        message["content"], message["edited_timestamp"] = content, _now_iso()
        await self.dispatch("MESSAGE_UPDATE", dict(message))

    async def delete_user_message(self, message: dict[str, Any]) -> None:
        """The user deletes a message: it is gone (a thread can no longer start from it) and MESSAGE_DELETE."""
        self.messages.pop(int(message["id"]), None)
        gone = {"id": message["id"], "channel_id": message["channel_id"]}
        if message.get("guild_id"):
            gone["guild_id"] = message["guild_id"]
        await self.dispatch("MESSAGE_DELETE", gone)

    def reaction_payload(
        self, message: dict[str, Any], emoji: str, *, user: dict[str, Any], roles: list[str] | None = None
    ) -> dict[str, Any]:
        """A MESSAGE_REACTION_ADD payload: ``user`` reacts with the unicode ``emoji`` to ``message``."""
        payload: dict[str, Any] = {
            "user_id": user["id"],
            "channel_id": message["channel_id"],
            "message_id": message["id"],
            "emoji": {"id": None, "name": emoji},
            "message_author_id": message["author"]["id"],
            "burst": False,
            "burst_colors": [],
            "type": 0,
        }
        if message.get("guild_id"):
            payload["guild_id"] = message["guild_id"]
            payload["member"] = {
                "user": user,
                "roles": roles or [],
                "joined_at": _now_iso(),
                "deaf": False,
                "mute": False,
                "flags": 0,
            }
        return payload

    async def user_reaction(
        self, message: dict[str, Any], emoji: str, *, user: dict[str, Any] | None = None, roles: list[str] | None = None
    ) -> dict[str, Any]:
        """A user (alice unless told) reacts to a message (a user's payload or one of ``self.messages``)."""
        payload = self.reaction_payload(message, emoji, user=user or self.alice, roles=roles)
        await self.dispatch("MESSAGE_REACTION_ADD", payload)
        return payload

    def reactions_on(self, message_id: int) -> list[str]:
        """The emoji the bot has added to this message, in order."""
        return [emoji for _, mid, emoji in self.reactions if mid == message_id]

    async def delete_thread(self, thread_id: int) -> None:
        """A moderator deletes a thread: every later send, edit or typing there gets 404 Unknown Channel (10003),
        and THREAD_DELETE goes out on the gateway."""
        thread = self.channels.pop(thread_id)
        gone = {k: thread[k] for k in ("id", "guild_id", "parent_id", "type")}
        await self.dispatch("THREAD_DELETE", gone)

    async def slash(
        self,
        name: str,
        options: list[dict[str, Any]] | None = None,
        *,
        channel_id: int | None = None,
        user: dict[str, Any] | None = None,
        resolved: dict[str, Any] | None = None,
        roles: list[str] | None = None,
    ) -> dict[str, Any]:
        """A user runs a slash command: INTERACTION_CREATE on the gateway (``roles``: the member's role ids)."""
        channel_id = channel_id or self.channel_id
        channel = self.channels[channel_id]
        user = user or self.alice
        command = next((c for _, cmds in self.command_puts for c in cmds if c["name"] == name), None)
        data: dict[str, Any] = {
            "id": command["id"] if command else str(self.new_id()),
            "name": name,
            "type": 1,
            "options": options or [],
        }
        if resolved:
            data["resolved"] = resolved
        payload: dict[str, Any] = {
            "id": str(self.new_id()),
            "application_id": str(self.app_id),
            "type": 2,
            "data": data,
            "channel_id": str(channel_id),
            "channel": channel,
            "token": f"itoken-{uuid.uuid4().hex}",
            "version": 1,
            "locale": "en-US",
            "app_permissions": str(0x1_FFFF_FFFF),
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(channel.get("guild_id") or self.guild_id)},
            "context": 0 if channel.get("guild_id") else 1,
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if channel.get("guild_id"):
            payload["guild_id"] = channel["guild_id"]
            payload["guild_locale"] = "en-US"
            payload["member"] = {
                "user": user,
                "roles": roles or [],
                "joined_at": _now_iso(),
                "deaf": False,
                "mute": False,
                "flags": 0,
                "permissions": str(0x1_FFFF_FFFF),
            }
        else:
            payload["user"] = user
        self._token_channels[payload["token"]] = channel_id
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    # --- REST -----------------------------------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bot {self.token}"

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        self.rest_log.append((request.method, path))
        parts = path.split("/")
        method = request.method
        if parts[0] == "interactions" and method == "POST":
            return await self._interaction_callback(request, int(parts[1]), parts[2])
        if parts[0] == "webhooks":
            return await self._webhook(request, parts)
        if not self._authorized(request):
            return json_response({"message": "401: Unauthorized", "code": 0}, status=401)
        retry = self._over_global_limit()
        if retry is not None:
            return self._rate_limited_response(retry, is_global=True)
        match method, parts:
            case "GET", ["users", "@me"]:
                return json_response(self.bot_user)
            case "GET", ["oauth2", "applications", "@me"] | ["applications", "@me"]:
                return json_response(self.application())
            case "GET", ["gateway"]:
                return json_response({"url": self.gateway_url})
            case "GET", ["gateway", "bot"]:
                limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
                url = self.bot_gateway_url or self.gateway_url
                return json_response({"url": url, "shards": 1, "session_start_limit": limit})
            case "PUT", ["applications", _, "commands"]:
                return await self._put_commands(request, "global")
            case "PUT", ["applications", _, "guilds", gid, "commands"]:
                return await self._put_commands(request, gid)
            case "GET", ["channels", cid]:
                channel = self.channels.get(int(cid))
                return json_response(channel) if channel else self._not_found("Unknown Channel", 10003)
            case "POST", ["channels", cid, "typing"]:
                if int(cid) not in self.channels:
                    return self._not_found("Unknown Channel", 10003)
                self.typing.append((int(cid), time.monotonic()))
                return web.Response(status=204)
            case "POST", ["channels", cid, "messages"]:
                return await self._create_message(request, int(cid))
            case "PATCH", ["channels", cid, "messages", mid]:
                return await self._edit_message(request, int(cid), int(mid))
            case "POST", ["channels", cid, "messages", mid, "threads"]:
                return await self._create_thread(request, int(cid), int(mid))
            case "PUT", ["channels", cid, "messages", mid, "reactions", emoji, "@me"]:
                return await self._add_reaction(int(cid), int(mid), emoji)
        return self._not_found(f"no fake route for {method} /{path}", 0)

    @staticmethod
    def _not_found(message: str, code: int) -> web.Response:
        return json_response({"message": message, "code": code}, status=404)

    def _over_limit(self, channel_id: int) -> float | None:
        """Seconds to wait if one more send/edit in this channel would break the limit, else None."""
        if self.rate_limit is None:
            return None
        count, window = self.rate_limit
        now = time.monotonic()
        recent = [w.at for w in self.writes if w.channel_id == channel_id and now - w.at < window]
        if len(recent) < count:
            return None
        return max(0.05, recent[-count] + window - now)

    def _over_global_limit(self) -> float | None:
        """Seconds to wait if this request breaks the bot's global limit (it is counted when let through)."""
        if self.global_limit is None:
            return None
        count, window = self.global_limit
        now = time.monotonic()
        stamps = self._global_stamps
        while stamps and now - stamps[0] >= window:
            stamps.popleft()
        if len(stamps) >= count:
            return max(0.01, stamps[0] + window - now)
        stamps.append(now)
        return None

    def _rate_limited_response(self, retry_after: float, *, is_global: bool = False) -> web.Response:
        self.rate_limited += 1
        self.global_rate_limited += is_global
        body = {"message": "You are being rate limited.", "retry_after": retry_after, "global": is_global}
        headers = {"Retry-After": f"{retry_after:.3f}", "Via": "1.1 google"}
        headers["X-RateLimit-Scope"] = "global" if is_global else "shared"
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        return json_response(body, status=429, headers=headers)

    def lose_responses(self, count: int = 1, *, status: int | None = None, voice_only: bool = False) -> None:
        """The next ``count`` message creations (voice messages only, with ``voice_only``) are made, but the bot
        never learns it: the connection drops (``status`` None), or the answer is that status (504: the gateway
        timed out waiting for Discord)."""
        self._lost.extend([(status, voice_only)] * count)

    def _already_made(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        """The message an earlier creation with this nonce made, if the nonce is enforced and recent."""
        nonce = payload.get("nonce")
        if nonce is None or not payload.get("enforce_nonce"):
            return None
        made = self._nonces.get(str(nonce))
        if made is None or time.monotonic() - made[0] >= self.nonce_window:
            return None
        return self.messages.get(made[1])

    async def _read_message_body(self, request: web.Request) -> tuple[dict[str, Any], list[Upload]]:
        if request.content_type.startswith("multipart/"):
            payload: dict[str, Any] = {}
            uploads: list[Upload] = []
            reader = await request.multipart()
            async for part in reader:
                data = await part.read()  # type: ignore[union-attr]
                if part.name == "payload_json":
                    payload = json.loads(data)
                else:
                    ctype = part.headers.get("Content-Type", "application/octet-stream")
                    uploads.append(Upload(part.name or "", part.filename or "", ctype, bytes(data)))
            return payload, uploads
        return await request.json(), []

    def _stored_message(
        self, channel_id: int, payload: dict[str, Any], uploads: list[Upload], author: dict[str, Any]
    ) -> dict[str, Any]:
        mid = self.new_id()
        attachments = []
        meta = {str(a.get("id")): a for a in payload.get("attachments") or []}
        for index, upload in enumerate(uploads):
            info = meta.get(str(index), {})
            url = self.host_file(upload.data, upload.filename)
            att = {
                "id": str(self.new_id()),
                "filename": upload.filename,
                "size": len(upload.data),
                "url": url,
                "proxy_url": url,
                "content_type": upload.content_type,
            }
            for key in ("duration_secs", "waveform", "description"):
                if key in info:
                    att[key] = info[key]
            attachments.append(att)
        channel = self.channels.get(channel_id, {})
        message = {
            "id": str(mid),
            "channel_id": str(channel_id),
            "author": author,
            "content": payload.get("content") or "",
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": attachments,
            "embeds": [],
            "pinned": False,
            "type": 19 if payload.get("message_reference") else 0,
            "flags": int(payload.get("flags") or 0),
        }
        if payload.get("nonce") is not None:
            message["nonce"] = str(payload["nonce"])
        if channel.get("guild_id"):
            message["guild_id"] = channel["guild_id"]
        self.messages[mid] = message
        return message

    async def _create_message(self, request: web.Request, channel_id: int) -> web.Response:
        if channel_id not in self.channels:
            return self._not_found("Unknown Channel", 10003)
        payload, uploads = await self._read_message_body(request)
        retry = self._over_limit(channel_id)
        if retry is not None:
            return self._rate_limited_response(retry)
        reference = payload.get("message_reference") or {}
        missing = reference.get("message_id") and int(reference["message_id"]) not in self.messages
        if missing and reference.get("fail_if_not_exists", True):
            body = {"message": "Invalid Form Body", "code": 50035, "errors": {"message_reference": "Unknown message"}}
            return json_response(body, status=400)
        content = payload.get("content")
        if content is not None and len(content) > 2000:
            return json_response({"message": "Invalid Form Body", "code": 50035}, status=400)
        flags = int(payload.get("flags") or 0)
        if flags & VOICE_MESSAGE_FLAG and not self.voice_messages_allowed:
            return json_response({"message": "Missing Permissions", "code": 50013}, status=403)
        if flags & VOICE_MESSAGE_FLAG and (content or len(uploads) != 1):
            return json_response({"message": "Cannot send a voice message with content", "code": 50161}, 400)
        made = self._already_made(payload)
        if made is not None:
            self.nonce_hits += 1
            return json_response(made)
        message = self._stored_message(channel_id, payload, uploads, self.bot_user)
        nonce = message.get("nonce")
        if nonce is not None:
            self._nonces[nonce] = (time.monotonic(), int(message["id"]))
        self.writes.append(
            Write(
                channel_id,
                "send",
                time.monotonic(),
                int(message["id"]),
                content,
                flags,
                list(payload.get("attachments") or []),
                uploads,
                nonce,
            )
        )
        if self._lost and (flags & VOICE_MESSAGE_FLAG or not self._lost[0][1]):
            status, _ = self._lost.pop(0)
            if status is not None:
                return json_response({"message": "upstream request timeout", "code": 0}, status=status)
            request.transport.close()  # type: ignore[union-attr]
            raise asyncio.CancelledError  # the handler ends without an answer; the client sees the connection drop
        return json_response(message)

    async def _edit_message(self, request: web.Request, channel_id: int, message_id: int) -> web.Response:
        if channel_id not in self.channels:
            return self._not_found("Unknown Channel", 10003)
        message = self.messages.get(message_id)
        if message is None or message["channel_id"] != str(channel_id):
            return self._not_found("Unknown Message", 10008)
        payload, _ = await self._read_message_body(request)
        retry = self._over_limit(channel_id)
        if retry is not None:
            return self._rate_limited_response(retry)
        if "content" in payload:
            if payload["content"] is not None and len(payload["content"]) > 2000:
                return json_response({"message": "Invalid Form Body", "code": 50035}, status=400)
            message["content"] = payload["content"] or ""
            message["edited_timestamp"] = _now_iso()
        self.writes.append(Write(channel_id, "edit", time.monotonic(), message_id, payload.get("content")))
        return json_response(message)

    async def _add_reaction(self, channel_id: int, message_id: int, emoji: str) -> web.Response:
        """The bot reacts: recorded, and (as Discord does) dispatched as MESSAGE_REACTION_ADD by the bot."""
        if channel_id not in self.channels:
            return self._not_found("Unknown Channel", 10003)
        message = self.messages.get(message_id)
        if message is None or message["channel_id"] != str(channel_id):
            return self._not_found("Unknown Message", 10008)
        self.reactions.append((channel_id, message_id, emoji))
        await self.dispatch("MESSAGE_REACTION_ADD", self.reaction_payload(message, emoji, user=self.bot_user))
        return web.Response(status=204)

    async def _create_thread(self, request: web.Request, channel_id: int, message_id: int) -> web.Response:
        body = await request.json()
        if not self.threads_allowed:
            return json_response({"message": "Missing Permissions", "code": 50013}, status=403)
        if message_id in self.channels:
            return json_response(
                {"message": "A thread has already been created for this message", "code": 160004}, status=400
            )
        if message_id not in self.messages:
            return self._not_found("Unknown Message", 10008)
        thread = self._thread(message_id, channel_id, self.bot_id, body["name"])
        thread["thread_metadata"]["auto_archive_duration"] = body.get("auto_archive_duration", 1440)
        self.channels[message_id] = thread
        self.threads_created.append(thread)
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return json_response(thread)

    async def _put_commands(self, request: web.Request, scope: str) -> web.Response:
        commands = await request.json()
        stored = [{**c, "id": str(self.new_id()), "application_id": str(self.app_id), "version": "1"} for c in commands]
        self.command_puts.append((scope, stored))
        return json_response(stored)

    async def _interaction_callback(self, request: web.Request, interaction_id: int, token: str) -> web.Response:
        payload, uploads = await self._read_message_body(request)
        self.interaction_callbacks.append({"id": interaction_id, "token": token, **payload})
        kind = payload.get("type")
        data = payload.get("data") or {}
        interaction = {"id": str(interaction_id), "type": 2}
        channel_id = self._channel_of_token(token)
        if kind == 4:
            message = self._stored_message(channel_id, data, uploads, self.bot_user)
            message["interaction_token"] = token
            message["flags"] = int(data.get("flags") or 0)
            interaction["response_message_id"] = message["id"]
            interaction["response_message_ephemeral"] = bool(message["flags"] & 64)
            return json_response({"interaction": interaction, "resource": {"type": 4, "message": message}})
        interaction["response_message_loading"] = kind == 5
        return json_response({"interaction": interaction, "resource": {"type": kind}})

    def _channel_of_token(self, token: str) -> int:
        return self._token_channels.get(token, self.channel_id)

    async def _webhook(self, request: web.Request, parts: list[str]) -> web.Response:
        token = parts[2] if len(parts) > 2 else ""
        if request.method == "GET" and parts[3:] == ["messages", "@original"]:
            for message in reversed(list(self.messages.values())):
                if message.get("interaction_token") == token:
                    return json_response(message)
            return self._not_found("Unknown Message", 10008)
        if request.method == "POST" and len(parts) == 3:
            payload, uploads = await self._read_message_body(request)
            message = self._stored_message(self._channel_of_token(token), payload, uploads, self.bot_user)
            message["interaction_token"] = token
            return json_response(message)
        return self._not_found("no fake webhook route", 0)

    # --- assertions -----------------------------------------------------------------------------------------
    def writes_in(self, channel_id: int) -> list[Write]:
        return [w for w in self.writes if w.channel_id == channel_id]

    def max_writes_in_window(self, channel_id: int, window: float = 5.0) -> int:
        """The most sends+edits this channel saw within any ``window`` seconds."""
        stamps = [w.at for w in self.writes_in(channel_id)]
        best = 0
        for i, start in enumerate(stamps):
            best = max(best, sum(1 for t in stamps[i:] if t - start < window))
        return best

    def bot_messages_in(self, channel_id: int) -> list[dict[str, Any]]:
        return [
            m
            for m in self.messages.values()
            if m["channel_id"] == str(channel_id) and m["author"]["id"] == str(self.bot_id)
        ]

    def text_in(self, channel_id: int) -> str:
        """The bot's messages in a channel, current content, joined in order."""
        return "\n\n".join(m["content"] for m in self.bot_messages_in(channel_id) if m["content"])

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.01)
