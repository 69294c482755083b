"""Chat commands shared by every adapter: help, reset, model, voice, usage, and the admins' budget.

Slack's ``/threadline``, Discord's slash commands and the console's ``/…`` lines all land here, so the answers
are the same everywhere.
"""

from __future__ import annotations

import re

from bot.admins import admin_id, not_admin
from bot.budget_commands import budget_command
from bot.channel_settings import ChannelCommand
from bot.engines import EngineRouter
from bot.knowledge import KB_HELP, KnowledgeBase, parse_kb
from bot.protocols import TurnEngine
from bot.settings import Settings
from bot.store import Store
from bot.types import ThreadKey
from bot.usage_report import usage_command
from bot.voice_mode import set_voice

HELP = (
    "*threadline* answers when you mention it, in its threads and in DMs. Attach images, voice notes or files.\n"
    "Commands: `help` (this text), `reset` (the next message starts a fresh conversation), "
    "`model` (show the model) or `model NAME` (set it for this channel), `usage` (your tokens today and this month), "
    '`imagine PROMPT` (draw an image; reply "make it blue" to edit it, or attach an image with an instruction), '
    "`voice on|off` (spoken replies in this thread), "
    "`show work` (the code behind the latest answer; on Slack and Discord also a 🔍 reaction on an answer), "
    f"{KB_HELP}. Admins: `access` (who may use the bot), "
    "`budget` (token limits), `usage channel|all` (usage and cost), "
    "`channel show|set|reset` (this channel's model, instructions, tools, voice, MCP servers, knowledge base)."
)

SHOW_WORK_WHERE = "Send `show work` as a message in the thread (or react 🔍 to an answer) to see the code behind it."
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


class Commands:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        engine: TurnEngine,
        knowledge: KnowledgeBase | None = None,
        channel: ChannelCommand | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.engine = engine
        self.knowledge = knowledge
        self.channel = channel

    async def run(self, text: str, *, key: ThreadKey, user_id: str, admin: bool = False) -> str:
        """Run one command line (``reset``, ``model gpt-x``…) and return the reply text. ``admin``: the sender is an
        admin (``bot.admins``); the gateway has already refused ``ADMIN_COMMANDS`` to everyone else."""
        name, _, arg = text.strip().partition(" ")
        name, arg = name.lower().lstrip("/"), arg.strip()
        if name in {"", "help"}:
            return HELP
        if name == "reset":
            await self.engine.forget(key)
            return "Done: the next message here starts a new conversation."
        if name == "model":
            return await self._model(key, arg)
        if name == "voice":
            return await set_voice(self.store, key, arg)
        if name == "kb" and self.knowledge is not None and (kb := parse_kb(text.strip().lstrip("/"))) is not None:
            return await self.knowledge.command(kb, key=key, user_id=user_id)
        if name == "show":
            return SHOW_WORK_WHERE
        if name == "usage":  # bot/usage_report.py
            return await usage_command(
                arg, settings=self.settings, store=self.store, key=key, user_id=user_id, is_admin=admin
            )
        if name == "budget":  # bot/budget_commands.py (the gateway refuses it to non-admins first)
            return await budget_command(arg, settings=self.settings, store=self.store, key=key, is_admin=admin)
        if name == "channel" and self.channel is not None:  # bot/channel_settings.py (admins only, as budget)
            if not admin:
                return not_admin(name)
            return await self.channel.run(arg, key=key, actor=admin_id(key.platform, user_id))
        return f"Unknown command `{name}`. {HELP}"

    async def _model(self, key: ThreadKey, arg: str) -> str:
        if not arg:
            if isinstance(self.engine, EngineRouter):  # a provider's model: with its seed and temperature
                return f"This channel uses {await self.engine.describe_model(key.platform, key.channel)}."
            return f"This channel uses `{await self.engine.model_for(key.platform, key.channel)}`."
        if not _MODEL_ID.match(arg):
            return "That doesn't look like a model id (letters, digits, `.`, `-`, `_`, `:` and `/` only)."
        await self.store.set_channel_model(key.platform, key.channel, arg)
        return f"This channel now uses `{arg}` for new turns."
