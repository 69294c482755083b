"""Per-channel settings: what admins change for one channel, and what a turn there applies.

``channel show``, ``channel set KEY VALUE`` and ``channel reset [KEY]`` (admins only: the gateway refuses
``channel`` to everyone else). Values are checked when they are set and stored (``Store.channel_settings``), so they
survive restarts and hold on every replica; the engine reads them once per turn (``channel_config``: one indexed
store read; ``model_for`` still reads the model on its own, as engines that adjust it override that).

The keys are one table, ``KEYS``: a key's parser checks a typed value and returns what is stored (or raises
``SettingError`` with the line the user sees), its default says what applies without a channel value, its
``accepts`` line is what help and errors show. A new key is one ``Key(...)`` entry; an engine reads its value
from ``ChannelConfig.values``.

Decisions: ``instructions`` extend ``THREADLINE_INSTRUCTIONS`` (they come after them, marked as the channel's,
and win where they differ), so the operator's instructions always hold; ``tools`` and ``mcp`` only switch off
what the settings offer (``NAME,NAME``: only these; ``-NAME``: all but these); ``voice`` is the default of the
channel's threads (a thread's own ``voice on|off`` wins); ``kb off`` leaves the channel's knowledge base out of
its threads' searches. The per-channel model is the setting ``model``, which ``model NAME`` sets too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import cast

from bot.settings import Settings
from bot.store import ChannelSetting, Store, channel_scope
from bot.tools.registry import ToolRegistry
from bot.types import ThreadKey
from bot.voice_mode import VOICE_PREF, Mode
from bot.voice_mode import channel_scope as voice_scope

MAX_INSTRUCTIONS_CHARS = 4000
SHOWN_INSTRUCTIONS_CHARS = 500  # `channel show` quotes this much of a channel's instructions
MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
BAD_MODEL = "That doesn't look like a model id (letters, digits, `.`, `-`, `_`, `:` and `/` only)."
CHANNEL_INSTRUCTIONS = "Instructions for this channel (they come from its admins and win where they differ):"
USAGE = "Use `channel show`, `channel set KEY VALUE` or `channel reset [KEY]`."
SWITCH_FORMS = "`NAME,NAME` (only these on), `-NAME,-NAME` (all but these), `all` or `none`"

_SPLIT = re.compile(r"[\s,]+")
_SUBCOMMAND = re.compile(r"^\s*(\S+)(?:\s+(\S+))?(?:[ \t]+|\s*\n)?(.*)$", re.DOTALL)


class SettingError(ValueError):
    """A value a key does not accept; the message is the line the user sees (what is accepted)."""


@dataclass(frozen=True, slots=True)
class Choices:
    """What values are checked against and defaults come from: the settings and what the tool registry offers."""

    settings: Settings
    tools: tuple[str, ...] = ()  # hosted tools, file_search and function tools: what `tools` switches
    mcp: tuple[str, ...] = ()  # MCP server labels: what `mcp` switches

    @classmethod
    def of(cls, settings: Settings, registry: ToolRegistry) -> Choices:
        return cls(settings, (*registry.hosted, "file_search", *registry.functions), tuple(registry.mcp))


@dataclass(frozen=True, slots=True)
class Key:
    name: str
    parse: Callable[[str, Choices], str]  # a typed value → the value stored; SettingError when not accepted
    default: Callable[[Choices], str]  # what applies without a channel value (`channel show`)
    accepts: str  # the values it takes, for help and errors
    shown: Callable[[str, Choices], str] = lambda value, choices: f"`{value}`"  # a stored value in `channel show`


# --- the keys ---------------------------------------------------------------------------------------------------


def parse_model(value: str, choices: Choices) -> str:
    """A model id, checked as ``model NAME`` checks it."""
    if not MODEL_ID.match(value):
        raise SettingError(BAD_MODEL)
    return value


def _instructions(value: str, choices: Choices) -> str:
    if len(value) > MAX_INSTRUCTIONS_CHARS:
        raise SettingError(
            f"Channel instructions are at most {MAX_INSTRUCTIONS_CHARS:,} characters; these are {len(value):,}."
        )
    return value


def _show_instructions(value: str, choices: Choices) -> str:
    if len(value) <= SHOWN_INSTRUCTIONS_CHARS:
        return f"“{value}”"
    return f"“{value[:SHOWN_INSTRUCTIONS_CHARS]}…” ({len(value):,} characters)"


def _switches(kind: str, known: Callable[[Choices], tuple[str, ...]]) -> Callable[[str, Choices], str]:
    """The parser of a key that switches names on and off (``tools``, ``mcp``)."""

    def parse(value: str, choices: Choices) -> str:
        names = known(choices)
        words = [word for word in _SPLIT.split(value) if word]
        if not words:
            raise SettingError(f"Use {SWITCH_FORMS}.")
        if [word.lower() for word in words] in (["all"], ["none"]):
            return words[0].lower()
        if not names:
            raise SettingError(f"There are no {kind}s to switch here: use `all` or `none`.")
        off = [word.startswith("-") for word in words]
        if any(off) and not all(off):
            raise SettingError(f"Give either {kind} names (only those on) or -names (all but those), not both.")
        picked: list[str] = []
        for word in words:
            name = _known_name(word.removeprefix("-"), names)
            if name is None:
                raise SettingError(
                    f"Unknown {kind} `{word.removeprefix('-')}`. {kind[0].upper()}{kind[1:]}s here: {_list(names)}."
                )
            if name not in picked:
                picked.append(name)
        return ",".join(f"-{name}" for name in picked) if all(off) else ",".join(picked)

    return parse


def _known_name(word: str, names: Iterable[str]) -> str | None:
    names = tuple(names)
    if word in names:
        return word
    return next((name for name in names if name.lower() == word.lower()), None)


def switched_off(value: str | None, known: Iterable[str]) -> frozenset[str]:
    """The names a stored ``tools``/``mcp`` value switches off, of those the settings offer now."""
    names = frozenset(known)
    if value is None or value == "all":
        return frozenset()
    if value == "none":
        return names
    listed = set(value.split(","))
    if value.startswith("-"):
        return frozenset(name.removeprefix("-") for name in listed)
    return names - listed


def _show_switches(known: Callable[[Choices], tuple[str, ...]]) -> Callable[[str, Choices], str]:
    def shown(value: str, choices: Choices) -> str:
        off = switched_off(value, known(choices))
        return f"`{value}`: on: {_list(name for name in known(choices) if name not in off)}"

    return shown


def _all_of(known: Callable[[Choices], tuple[str, ...]]) -> Callable[[Choices], str]:
    return lambda choices: f"all: {_list(known(choices))}"


def _voice(value: str, choices: Choices) -> str:
    mode = {"on": "always", "off": "never"}.get(value.lower(), value.lower())
    if mode not in {"auto", "always", "never"}:
        raise SettingError(f"Use `channel set voice auto|always|never`: {KEYS['voice'].accepts}.")
    return mode


def _kb(value: str, choices: Choices) -> str:
    if value.lower() not in {"on", "off"}:
        raise SettingError(f"Use `channel set kb on|off`: {KEYS['kb'].accepts}.")
    return value.lower()


def _seed(value: str, choices: Choices) -> str:
    """A sampling seed for local providers (bot/local_engine.py)."""
    if not re.fullmatch(r"-?\d{1,18}", value):
        raise SettingError("Use `channel set seed N` with a whole number, e.g. `channel set seed 42`.")
    return str(int(value))


def _temperature(value: str, choices: Choices) -> str:
    """A sampling temperature for local providers (bot/local_engine.py)."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= 2:
        raise SettingError("Use `channel set temperature T` with a number from 0 to 2, e.g. `0.2`.")
    return f"{number:g}"


def _tools(choices: Choices) -> tuple[str, ...]:
    return choices.tools


def _mcp(choices: Choices) -> tuple[str, ...]:
    return choices.mcp


KEYS: Mapping[str, Key] = MappingProxyType(
    {
        key.name: key
        for key in (
            Key("model", parse_model, lambda c: f"`{c.settings.model}`", "a model id (the same as `model NAME`)"),
            Key(
                "instructions",
                _instructions,
                lambda c: "none (only `THREADLINE_INSTRUCTIONS`)",
                f"text every turn here gets after the default instructions (at most {MAX_INSTRUCTIONS_CHARS:,} "
                "characters)",
                _show_instructions,
            ),
            Key(
                "tools",
                _switches("tool", _tools),
                _all_of(_tools),
                f"{SWITCH_FORMS}, of the tools the settings offer",
                _show_switches(_tools),
            ),
            Key(
                "voice",
                _voice,
                lambda c: f"`{c.settings.voice_replies}` (`THREADLINE_VOICE_REPLIES`)",
                "`auto` (spoken replies to voice notes), `always` or `never`; a thread's own `voice on|off` wins",
            ),
            Key(
                "mcp",
                _switches("MCP server", _mcp),
                _all_of(_mcp),
                f"{SWITCH_FORMS}, of the MCP servers the settings offer",
                _show_switches(_mcp),
            ),
            Key(
                "kb",
                _kb,
                lambda c: "`on`",
                "`on` or `off`: whether threads here search this channel's knowledge base (`kb add`)",
            ),
            Key(
                "seed",
                _seed,
                lambda c: "none (the server's own)",
                "an integer: the same seed (and temperature) gives reproducible answers from chat-style providers",
            ),
            Key(
                "temperature",
                _temperature,
                lambda c: "none (the server's own)",
                "a number from 0 to 2 (0: most predictable), sent to chat-style providers",
            ),
        )
    }
)


def parse(name: str, value: str, choices: Choices) -> tuple[Key, str]:
    """The key and the value to store for ``channel set NAME VALUE``; SettingError says what is accepted."""
    key = KEYS.get(name.lower())
    if key is None:
        raise SettingError(f"Unknown key `{name}`. Keys: {_list(KEYS)}. {USAGE}")
    value = value.strip()
    if not value:
        raise SettingError(f"Say the value: `channel set {key.name} VALUE`, with {key.accepts}.")
    return key, key.parse(value, choices)


# --- what a turn applies ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """One turn's channel settings, as the engine applies them; ``values``: every stored value by key (a key
    without a field here is read there)."""

    model: str
    instructions: str
    disabled: frozenset[str] = frozenset()
    voice: Mode = "auto"
    kb: bool = True
    values: Mapping[str, str] = field(default_factory=dict)


def effective(stored: Iterable[ChannelSetting], choices: Choices) -> ChannelConfig:
    """What the stored settings come to, over the defaults. A stored value the settings no longer offer (a tool
    taken out of ``THREADLINE_TOOLS``) is ignored."""
    values = {setting.name: setting.value for setting in stored}
    settings = choices.settings
    instructions = settings.instructions
    if persona := values.get("instructions"):
        instructions = f"{instructions}\n\n{CHANNEL_INSTRUCTIONS}\n{persona}"
    voice = values.get("voice", settings.voice_replies)
    return ChannelConfig(
        model=values.get("model") or settings.model,
        instructions=instructions,
        disabled=switched_off(values.get("tools"), choices.tools) | switched_off(values.get("mcp"), choices.mcp),
        voice=cast(Mode, voice if voice in {"auto", "always", "never"} else settings.voice_replies),
        kb=values.get("kb", "on") != "off",
        values=MappingProxyType(values),
    )


async def channel_config(store: Store, key: ThreadKey, choices: Choices) -> ChannelConfig:
    """The channel settings a turn in ``key``'s channel applies: one store read."""
    return effective(await store.channel_settings(key.platform, key.channel), choices)


# --- the command ------------------------------------------------------------------------------------------------


class ChannelCommand:
    """``channel show|set|reset`` for the channel a command came from (the gateway lets only admins here)."""

    def __init__(self, *, store: Store, choices: Choices) -> None:
        self.store = store
        self.choices = choices

    async def run(self, arg: str, *, key: ThreadKey, actor: str) -> str:
        found = _SUBCOMMAND.match(arg)
        sub, name, value = (found[1].lower(), found[2] or "", found[3]) if found else ("show", "", "")
        if sub == "show" and not name:
            return await self.show(key)
        if sub == "set":
            if not name:
                return f"Say which key: `channel set KEY VALUE`. Keys: {_list(KEYS)}."
            return await self.set(key, name, value, actor=actor)
        if sub == "reset" and not value.strip():
            return await self.reset(key, name)
        if sub not in {"show", "set", "reset"}:
            return f"Unknown `channel` sub-command `{sub}`. {USAGE} Keys: {_list(KEYS)}."
        return f"{USAGE} Keys: {_list(KEYS)}."

    async def set(self, key: ThreadKey, name: str, value: str, *, actor: str) -> str:
        try:
            chosen, stored = parse(name, value, self.choices)
        except SettingError as exc:
            return str(exc)
        await self.store.set_channel_setting(key.platform, key.channel, chosen.name, stored, set_by=actor)
        if chosen.name == "voice":  # the latest channel-wide choice wins over an earlier `voice on|off` here
            await self.store.set_thread_pref(voice_scope(key), VOICE_PREF, None)
        if chosen.name == "instructions":
            return (
                f"This channel's instructions are set ({len(stored):,} characters): every new turn here gets them "
                "after the default instructions."
            )
        return f"This channel's `{chosen.name}` is now {chosen.shown(stored, self.choices)}, from the next turn on."

    async def reset(self, key: ThreadKey, name: str) -> str:
        if not name or name.lower() == "voice":  # a channel-wide `voice on|off` goes too: the default applies
            await self.store.set_thread_pref(voice_scope(key), VOICE_PREF, None)
        if not name:
            removed = await self.store.clear_channel_settings(key.platform, key.channel)
            if not removed:
                return "This channel has no settings of its own: the defaults apply."
            return (
                f"Removed this channel's {_list(f'`{n}`' for n in removed)}: the defaults apply from the next turn on."
            )
        chosen = KEYS.get(name.lower())
        if chosen is None:
            return f"Unknown key `{name}`. Keys: {_list(KEYS)}. {USAGE}"
        await self.store.set_channel_setting(key.platform, key.channel, chosen.name, None, set_by="")
        return f"This channel's `{chosen.name}` is back to the default: {chosen.default(self.choices)}."

    async def show(self, key: ThreadKey) -> str:
        stored = {s.name: s for s in await self.store.channel_settings(key.platform, key.channel)}
        lines = ["This channel's settings (`channel set KEY VALUE` changes one, `channel reset [KEY]` undoes):"]
        for chosen in KEYS.values():
            setting = stored.get(chosen.name)
            if setting is None:
                where = f"{chosen.default(self.choices)} (default)"
            else:
                by = f", set by {setting.set_by}" if setting.set_by else ""
                where = f"{chosen.shown(setting.value, self.choices)} (this channel{by})"
            lines.append(f"• {chosen.name}: {where}")
        documents = await self.store.documents(channel_scope(key.platform, key.workspace, key.channel))
        if documents:
            names = [doc.name for doc in documents]
            shown = _list(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
            lines.append(f"  knowledge base: {len(names)} document{'s' if len(names) != 1 else ''}: {shown}")
        else:
            lines.append("  knowledge base: empty (`kb add` with files attached adds documents)")
        voice = await self.store.thread_pref(voice_scope(key), VOICE_PREF)
        if voice in {"on", "off"}:
            lines.append(f"  `voice {voice}` was sent for the whole channel: it wins until `channel set voice`.")
        return "\n".join(lines)


def _list(names: Iterable[str]) -> str:
    return ", ".join(names) or "none"
