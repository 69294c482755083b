"""Access rules set at run time: admins' ``access …`` commands, kept in the store on top of the settings' defaults.

Rules are per platform (an id means something on one platform only): allow and deny lists of users and channels,
Discord roles and guilds, and DMs on or off. One rule per (kind, id), so allowing what was denied replaces the deny.
Every replica reads them through a short cache (``THREADLINE_ACCESS_CACHE_SECS``): another replica's change is seen
within that time, the replica that made it sees it at once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from bot.settings import Settings
from bot.store import AccessRule, Store, StoreUnavailable

log = logging.getLogger("threadline.access")

KINDS = ("user", "channel", "role", "guild")
DISCORD_ONLY = frozenset({"role", "guild"})
GUILD_PLATFORMS = frozenset({"discord"})  # where ThreadKey.workspace is a guild (server) id
DMS = "dms"  # the kind of the DMs on/off rule; its value is "*"
SHOW_LIMIT = 1800  # characters of `access show`: one message on every platform (Discord's limit is 2,000)
_KIND_WORDS = {"users": "user", "channels": "channel", "roles": "role", "guilds": "guild", "server": "guild"}
_KIND_WORDS |= {"servers": "guild", **{kind: kind for kind in KINDS}}
_PLATFORM_NAMES = {"slack": "Slack", "discord": "Discord", "console": "the console"}


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules in force on one platform: the settings' defaults with the stored rules on top."""

    allow: Mapping[str, frozenset[str]]  # kind → ids
    deny: Mapping[str, frozenset[str]]
    dms: bool
    stored: frozenset[tuple[str, str, str]]  # (effect, kind, id) of the stored rules: where a rule came from
    dms_stored: bool

    def source(self, effect: str, kind: str, value: str) -> str:
        return "stored" if (effect, kind, value) in self.stored else "settings"


def settings_lists(settings: Settings) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The settings' allow and deny lists, by kind (they apply on every platform, as ids are distinct)."""
    allow = {
        "user": settings.allowed_users,
        "channel": settings.allowed_channels,
        "role": settings.allowed_roles,
        "guild": settings.allowed_guilds,
    }
    deny = {
        "user": settings.denied_users,
        "channel": settings.denied_channels,
        "role": settings.denied_roles,
        "guild": settings.denied_guilds,
    }
    return allow, deny


def combine(settings: Settings, stored: Sequence[AccessRule]) -> RuleSet:
    allow_defaults, deny_defaults = settings_lists(settings)
    allow = {kind: set(allow_defaults[kind]) for kind in KINDS}
    deny = {kind: set(deny_defaults[kind]) for kind in KINDS}
    dms, dms_stored = settings.allow_dms, False
    for rule in stored:
        if rule.kind == DMS:
            dms, dms_stored = rule.effect == "allow", True
        elif rule.kind in KINDS:
            (allow if rule.effect == "allow" else deny)[rule.kind].add(rule.value)
    return RuleSet(
        allow={kind: frozenset(ids) for kind, ids in allow.items()},
        deny={kind: frozenset(ids) for kind, ids in deny.items()},
        dms=dms,
        stored=frozenset((r.effect, r.kind, r.value) for r in stored if r.kind in KINDS),
        dms_stored=dms_stored,
    )


class AccessRules:
    """The stored rules of each platform, read through a cache of ``THREADLINE_ACCESS_CACHE_SECS``."""

    def __init__(self, settings: Settings, store: Store, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._store = store
        self._clock = clock
        self._cache: dict[str, tuple[float, RuleSet]] = {}  # platform → (fresh until, rules)

    async def rules(self, platform: str) -> RuleSet:
        """The rules in force. With the database unreachable, the last rules read are used while there are any."""
        now = self._clock()
        cached = self._cache.get(platform)
        if cached is not None and now < cached[0]:
            return cached[1]
        try:
            stored = await self._store.access_rules(platform)
        except StoreUnavailable:
            if cached is None:
                raise
            log.warning("could not read the access rules of %s again; using the ones read before", platform)
            return cached[1]
        rules = combine(self._settings, stored)
        self._cache[platform] = (now + self._settings.access_cache_secs, rules)
        return rules

    def forget(self, platform: str) -> None:
        """Read the platform's rules again at the next check (this replica just changed them)."""
        self._cache.pop(platform, None)

    async def command(self, arg: str, *, platform: str, actor: str) -> str:
        """Run ``access ARG`` for an admin (``actor``: their platform-prefixed id); returns the one-line answer."""
        words = arg.split()
        verb = words[0].lower() if words else ""
        if verb in {"", "help"}:
            return usage(platform)
        if verb in {"show", "list"}:
            return describe(await self.rules(platform), platform)
        if verb == "reset":
            removed = await self._store.clear_access_rules(platform)
            self.forget(platform)
            return f"Removed {_count(removed, 'stored rule')}; the settings' defaults apply again on {_name(platform)}."
        if verb == "dms":
            state = words[1].lower() if len(words) > 1 else ""
            if state not in {"on", "off"} or len(words) > 2:
                return "Say `access dms on` or `access dms off`."
            await self._store.set_access_rule(platform, DMS, "*", "allow" if state == "on" else "deny", set_by=actor)
            self.forget(platform)
            return f"Direct messages are {state} on {_name(platform)}."
        if verb in {"allow", "deny"}:
            parsed = _target(platform, words[1:])
            if isinstance(parsed, str):
                return parsed
            kind, value = parsed
            await self._store.set_access_rule(platform, kind, value, verb, set_by=actor)
            self.forget(platform)
            return _after_change(await self.rules(platform), verb, kind, value)
        if verb == "remove":
            rest, effect = words[1:], None
            if rest and rest[0].lower() in {"allow", "deny"}:
                rest, effect = rest[1:], rest[0].lower()
            parsed = _target(platform, rest)
            if isinstance(parsed, str):
                return parsed
            kind, value = parsed
            other = "deny" if effect == "allow" else "allow"
            if effect is not None and (other, kind, value) in (await self.rules(platform)).stored:
                return f"The stored rule on {kind} `{value}` is {other}, not {effect}: `access remove {kind} {value}`."
            removed = await self._store.remove_access_rule(platform, kind, value)
            self.forget(platform)
            if removed:
                return f"Removed the stored rule on {kind} `{value}`."
            return _nothing_to_remove(self._settings, kind, value)
        return f"Unknown `access` sub-command `{words[0][:40]}`. {usage(platform)}"


def usage(platform: str) -> str:
    kinds = "user|channel|role|guild" if platform in GUILD_PLATFORMS else "user|channel"
    return (
        f"Use `access show`, `access allow {kinds} ID`, `access deny {kinds} ID`, `access remove {kinds} ID`, "
        "`access dms on|off` or `access reset` (deny beats allow)."
    )


def describe(rules: RuleSet, platform: str) -> str:
    """``access show``: the lists in force, each id marked (stored) or (settings)."""
    parts = []
    for effect, word, lists in (("allow", "allowed", rules.allow), ("deny", "denied", rules.deny)):
        for kind in KINDS:
            if lists[kind]:
                marked = ", ".join(f"{i} ({rules.source(effect, kind, i)})" for i in sorted(lists[kind]))
                parts.append(f"{word} {kind}s: {marked}")
    dms = f"DMs {'on' if rules.dms else 'off'} ({'stored' if rules.dms_stored else 'settings'})"
    if not parts:
        return f"No allow or deny lists on {_name(platform)}: everyone may use the bot; {dms}."
    text = f"On {_name(platform)}: " + "; ".join(parts) + f"; {dms}. Deny beats allow."
    return text if len(text) <= SHOW_LIMIT else text[: SHOW_LIMIT - 20].rsplit(",", 1)[0] + ", … (and more)"


def _after_change(rules: RuleSet, effect: str, kind: str, value: str) -> str:
    if effect == "deny":
        return f"Denied {kind} `{value}`: they can't use the bot from their next message on."
    if value in rules.deny[kind]:
        return f"Allowed {kind} `{value}`, but a setting denies it (THREADLINE_DENIED_{kind.upper()}S): deny wins."
    if kind in {"user", "role"}:
        note = "only allowed users and roles may use the bot now"
    elif kind == "channel":
        note = "the bot answers only in allowed channels now (DMs aside)"
    else:
        note = "the bot answers only in allowed servers now (DMs aside)"
    return f"Allowed {kind} `{value}`: {note}."


def _nothing_to_remove(settings: Settings, kind: str, value: str) -> str:
    allow, deny = settings_lists(settings)
    for effect, lists in (("ALLOWED", allow), ("DENIED", deny)):
        if value in lists[kind]:
            return f"`{value}` comes from THREADLINE_{effect}_{kind.upper()}S: change that setting to remove it."
    return f"There is no stored rule on {kind} `{value}`; `access show` lists them."


def _target(platform: str, words: Sequence[str]) -> tuple[str, str] | str:
    """(kind, id) from ``user U0123`` and the like, or the line that says what is accepted."""
    kind = _KIND_WORDS.get(words[0].lower()) if words else None
    if kind is None:
        kinds = "user, channel, role or guild" if platform in GUILD_PLATFORMS else "user or channel"
        return f"Say which {kinds}, then its id: e.g. `access deny user {_EXAMPLES.get(platform, _EXAMPLES[''])}`."
    if kind in DISCORD_ONLY and platform not in GUILD_PLATFORMS:
        return f"Roles and guilds are Discord's; on {_name(platform)} use `user` or `channel`."
    if len(words) != 2:
        return f"Give one {kind} id: `access … {kind} ID`."
    value = parse_id(platform, kind, words[1])
    if value is None:
        return f"`{words[1][:40]}` is not {_id_help(platform, kind)}."
    return kind, value


_EXAMPLES = {"slack": "U0123ABCD", "discord": "123456789012345678", "": "alice"}
_SLACK = {
    "user": re.compile(r"<@([UW][A-Z0-9]{2,20})(?:\|[^>]*)?>|([UW][A-Z0-9]{2,20})"),
    "channel": re.compile(r"<#([CGD][A-Z0-9]{2,20})(?:\|[^>]*)?>|([CGD][A-Z0-9]{2,20})"),
}
_DISCORD = {
    "user": re.compile(r"<@!?(\d{15,21})>|(\d{15,21})"),
    "channel": re.compile(r"<#(\d{15,21})>|(\d{15,21})"),
    "role": re.compile(r"<@&(\d{15,21})>|(\d{15,21})"),
    "guild": re.compile(r"()(\d{15,21})"),
}
_OTHER = re.compile(r"()([A-Za-z0-9._@-]{1,64})")


def parse_id(platform: str, kind: str, text: str) -> str | None:
    """The id in ``text`` (a bare id, or the platform's mention of one), or None when it is not one."""
    if platform == "slack":
        match = _SLACK[kind].fullmatch(text)
    elif platform == "discord":
        match = _DISCORD[kind].fullmatch(text)
    else:
        match = _OTHER.fullmatch(text)
    if match is None:
        return None
    return match.group(1) or match.group(2)


def _id_help(platform: str, kind: str) -> str:
    if platform == "slack":
        return {"user": "a Slack user id (like U0123ABCD)", "channel": "a Slack channel id (like C0123ABCD)"}[kind]
    if platform == "discord":
        mention = {"user": " or an @mention", "channel": " or a #channel", "role": " or a role mention"}.get(kind, "")
        return f"a Discord {kind} id (15 to 21 digits{mention})"
    return f"a {kind} name (letters, digits, `.`, `_`, `-` or `@`)"


def _name(platform: str) -> str:
    return _PLATFORM_NAMES.get(platform, platform)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
