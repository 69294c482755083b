"""Slack: slack-bolt on the shared event loop (Socket Mode or HTTP), native streaming, files in and out.

This package's top level stays light (settings only), so ``threadline run`` can see which adapters are
configured without importing slack-bolt; ``build`` and ``doctor_checks`` import the adapter when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.slack.settings import SlackSettings

if TYPE_CHECKING:
    from adapters.slack.adapter import SlackAdapter
    from bot.gateway import Gateway

__all__ = ["SlackSettings", "build", "doctor_checks", "load_settings"]


def load_settings() -> SlackSettings:
    return SlackSettings()


def build(gateway: Gateway, settings: SlackSettings) -> SlackAdapter:
    from adapters.slack.adapter import SlackAdapter

    return SlackAdapter(gateway, settings)


async def doctor_checks(gateway: Gateway, settings: SlackSettings) -> list[tuple[bool, str]]:
    from adapters.slack.adapter import doctor_checks as checks

    return await checks(gateway, settings)
