"""Access: who may use the bot where, checked before any download, model call or thread claim.

The rules are the settings' defaults with admins' stored rules on top (``bot.access_rules``); deny beats allow.
A refused user is told why at most once an hour (``THREADLINE_REFUSAL_REPLIES``; the console, one person at a
terminal, is always told), and every refusal is an audit line naming the rule, never the message.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.access_rules import GUILD_PLATFORMS, AccessRules, RuleSet
from bot.admins import admin_id
from bot.audit import audit
from bot.settings import Settings
from bot.store import Store
from bot.types import IncomingMessage

NOT_LISTED = "Sorry, you are not on this bot's list of allowed users or roles."
DENIED = "Sorry, you are not allowed to use this bot."
NOT_IN_CHANNEL = "Sorry, I'm not enabled in this channel."
NOT_IN_SERVER = "Sorry, I'm not enabled in this server."
NO_DMS = "Direct messages are turned off for this bot. Mention me in a channel instead."

REFUSAL_REPLY_EVERY_SECS = 3600.0
ALWAYS_TOLD = frozenset({"console"})  # one person at a terminal: silence would look like a hang


@dataclass(frozen=True, slots=True)
class Refusal:
    text: str  # the short, polite line for the user
    rule: str  # which rule refused: "deny user", "allow users", "dms off"…
    source: str  # "settings" or "stored"


def refusal_for(rules: RuleSet, message: IncomingMessage) -> Refusal | None:
    """Why this message may not reach the model under ``rules``, or None when it may. Deny beats allow."""
    user, roles, key = message.user_id, set(message.user_roles), message.key
    in_guild = key.platform in GUILD_PLATFORMS and not message.is_dm
    if user in rules.deny["user"]:
        return Refusal(DENIED, "deny user", rules.source("deny", "user", user))
    if denied_roles := sorted(roles & rules.deny["role"]):
        return Refusal(DENIED, "deny role", rules.source("deny", "role", denied_roles[0]))
    if in_guild and key.workspace in rules.deny["guild"]:
        return Refusal(NOT_IN_SERVER, "deny guild", rules.source("deny", "guild", key.workspace))
    if not message.is_dm and key.channel in rules.deny["channel"]:
        return Refusal(NOT_IN_CHANNEL, "deny channel", rules.source("deny", "channel", key.channel))
    if message.is_dm and not rules.dms:
        return Refusal(NO_DMS, "dms off", "stored" if rules.dms_stored else "settings")
    if (rules.allow["user"] or rules.allow["role"]) and not (
        user in rules.allow["user"] or roles & rules.allow["role"]
    ):
        return Refusal(NOT_LISTED, "allow users", _source(rules, "user", "role"))
    if in_guild and rules.allow["guild"] and key.workspace not in rules.allow["guild"]:
        return Refusal(NOT_IN_SERVER, "allow guilds", _source(rules, "guild"))
    if not message.is_dm and rules.allow["channel"] and key.channel not in rules.allow["channel"]:
        return Refusal(NOT_IN_CHANNEL, "allow channels", _source(rules, "channel"))
    return None


def _source(rules: RuleSet, *kinds: str) -> str:
    """Where an allow list came from: "stored" when an admin added to it."""
    return "stored" if any(effect == "allow" and kind in kinds for effect, kind, _ in rules.stored) else "settings"


class Access:
    """The gateway's access checks: the rules in force, the once-an-hour refusal reply, the audit lines."""

    def __init__(self, settings: Settings, store: Store, rules: AccessRules | None = None) -> None:
        self._settings = settings
        self._store = store
        self.rules = rules or AccessRules(settings, store)

    async def check(self, message: IncomingMessage) -> Refusal | None:
        """The refusal for this message, or None. Raises ``StoreUnavailable`` when no rules can be read."""
        return refusal_for(await self.rules.rules(message.key.platform), message)

    async def tell(self, message: IncomingMessage) -> bool:
        """Whether to tell a refused user why (``THREADLINE_REFUSAL_REPLIES``), recording it when told hourly."""
        mode = self._settings.refusal_replies
        if mode == "always" or message.key.platform in ALWAYS_TOLD:
            return True
        if mode == "never":
            return False
        return await self._store.claim_refusal_reply(message.key.platform, message.user_id, REFUSAL_REPLY_EVERY_SECS)

    def audit(self, message: IncomingMessage, refusal: Refusal, *, attempt: str, told: bool | None) -> None:
        """One ``access_refused`` audit line: who, where, which rule; never the message."""
        key = message.key
        audit(
            "access_refused",
            actor=admin_id(key.platform, message.user_id),
            platform=key.platform,
            workspace=key.workspace,
            channel=key.channel,
            dm=message.is_dm,
            attempt=attempt,
            rule=refusal.rule,
            source=refusal.source,
            told=told,
        )
