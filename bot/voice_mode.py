"""Spoken replies: whether a turn gets one (per thread, then per channel, then ``THREADLINE_VOICE_REPLIES``) and
what of the answer is read aloud.

``voice on|off`` is stored per thread. Where a platform can only address a channel (Slack's slash commands run
outside threads; a Discord slash command in a plain channel), it sets the channel's default for threads that
have no setting of their own.
"""

from __future__ import annotations

import re
from typing import Literal

from bot.store import Store
from bot.types import ThreadKey

VOICE_PREF = "voice"
Mode = Literal["auto", "always", "never"]

_FENCE = re.compile(r"```.*?(```|$)", re.DOTALL)
_LINK = re.compile(r"\[([^\]]+)\]\([^)]+\)")
_MARKUP = re.compile(r"[*_`#>|~]+")


def channel_scope(key: ThreadKey) -> ThreadKey:
    """The key that holds a channel-wide setting."""
    return ThreadKey(key.platform, key.workspace, key.channel, "")


def is_channel_level(key: ThreadKey) -> bool:
    """Slack slash commands have no thread (``""``); Discord's channel-level key repeats the channel id."""
    return key.thread in {"", key.channel}


async def voice_mode(store: Store, key: ThreadKey, default: Mode) -> Mode:
    for scope in (key, channel_scope(key)):
        value = await store.thread_pref(scope, VOICE_PREF)
        if value in {"on", "off"}:
            return "always" if value == "on" else "never"
    return default


async def set_voice(store: Store, key: ThreadKey, value: str) -> str:
    """``voice on|off`` (or ``voice`` to ask); returns the reply line."""
    where = "this channel (threads without their own setting)" if is_channel_level(key) else "this thread"
    scope = channel_scope(key) if is_channel_level(key) else key
    value = value.strip().lower()
    if value in {"on", "off"}:
        await store.set_thread_pref(scope, VOICE_PREF, value)
        return f"Spoken replies are {value} in {where}."
    if value:
        return "Use `voice on` or `voice off`."
    current = await store.thread_pref(scope, VOICE_PREF)
    state = {"on": "on", "off": "off"}.get(current or "", "on for voice notes only (the default)")
    return f"Spoken replies are {state} in {where}. Use `voice on` or `voice off` to change it."


def speakable(text: str) -> str:
    """The answer as it should be read aloud: code blocks are not read, links keep their words, no markup."""
    text = _FENCE.sub(" (code omitted) ", text)
    text = _LINK.sub(r"\1", text)
    text = _MARKUP.sub("", text)
    return re.sub(r"[ \t]+", " ", text).strip()
