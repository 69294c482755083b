"""Access lists, checked before any model call."""

from __future__ import annotations

from bot.settings import Settings
from bot.types import IncomingMessage


def access_denied_reason(settings: Settings, message: IncomingMessage) -> str | None:
    """Why this message may not reach the model, or None when it may."""
    if message.is_dm and not settings.allow_dms:
        return "Direct messages are turned off for this bot. Mention me in a channel instead."
    if settings.allowed_users or settings.allowed_roles:
        by_user = message.user_id in settings.allowed_users
        by_role = bool(set(message.user_roles) & set(settings.allowed_roles))
        if not (by_user or by_role):
            return "Sorry, you are not on this bot's list of allowed users or roles."
    if settings.allowed_channels and not message.is_dm and message.key.channel not in settings.allowed_channels:
        return "Sorry, I'm not enabled in this channel."
    return None
