"""Admins: who may change the bot at run time.

An admin is listed in ``THREADLINE_ADMINS`` by platform-prefixed id (``slack:U0123ABCD``, ``discord:1234…``,
``console:<login name>``), or, on Discord, is a member with Manage Server (the adapter says so; off with
``THREADLINE_MANAGE_SERVER_ADMINS=false``). Admin commands are gated by this alone, not by the access rules, so an
admin can always undo a rule that shut them out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from bot.settings import Settings

# Commands only admins may run → how many leading words of their arguments an audit line keeps: keywords, ids and
# numbers, never free text (a persona, say), which comes later on the line if at all.
ADMIN_COMMANDS: Mapping[str, int] = {"access": 4, "budget": 5, "channel": 2}  # channel: "set KEY", never the value

_AUDITABLE_WORD = re.compile(r"^[\w.:@#&<>|!/+-]{1,80}$")


def admin_id(platform: str, user: str) -> str:
    """How ``THREADLINE_ADMINS`` (and audit lines) name a user: ``slack:U0123ABCD``."""
    return f"{platform}:{user}"


def is_admin(settings: Settings, platform: str, user: str, *, manage_guild: bool = False) -> bool:
    """Listed in ``THREADLINE_ADMINS``, or a Discord member with Manage Server (``manage_guild``)."""
    if admin_id(platform, user) in settings.admins:
        return True
    return platform == "discord" and manage_guild and settings.manage_server_admins


def not_admin(name: str) -> str:
    """The one line a non-admin gets for an admin command."""
    return f"Sorry, `{name}` is for admins only."


def audit_arguments(name: str, arg: str) -> list[str]:
    """What an audit line may say of an admin command's arguments (see ``ADMIN_COMMANDS``)."""
    words = arg.split()[: ADMIN_COMMANDS.get(name, 0)]
    return [word if _AUDITABLE_WORD.match(word) else "?" for word in words]
