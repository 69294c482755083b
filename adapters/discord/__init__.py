"""Discord: discord.py on the shared event loop; mentions open threads, answers stream by throttled edits.

This package's top level stays light (settings only), so ``threadline run`` can see which adapters are
configured without importing discord.py; ``build`` and ``doctor_checks`` import the adapter when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.discord.settings import DiscordSettings

if TYPE_CHECKING:
    from adapters.discord.adapter import DiscordAdapter
    from bot.gateway import Gateway

__all__ = ["DiscordSettings", "build", "doctor_checks", "load_settings"]


def load_settings() -> DiscordSettings:
    return DiscordSettings()


def build(gateway: Gateway, settings: DiscordSettings) -> DiscordAdapter:
    from adapters.discord.adapter import DiscordAdapter

    return DiscordAdapter(gateway, settings)


async def doctor_checks(gateway: Gateway, settings: DiscordSettings) -> list[tuple[bool, str]]:
    from adapters.discord.adapter import doctor_checks as checks

    return await checks(gateway, settings)
