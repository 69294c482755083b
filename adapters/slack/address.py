"""Where a Slack answer goes, as the plain strings the durable inbox keeps (``IncomingMessage.reply_address``).

Live answers are built from this same address (``SlackAdapter.reply_for``), so an address that answers live is
complete enough to answer after a crash, or from another replica.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from adapters.slack.convert import SlackMessage
from adapters.slack.stream import ReplyTarget

REQUIRED = ("channel", "thread_ts", "recipient_user_id", "recipient_team_id", "team_id", "is_dm")


class AddressError(ValueError):
    """A stored address that lacks what a Slack reply needs (written by another version, or damaged)."""


@dataclass(frozen=True, slots=True)
class ReplyAddress:
    """The thread and recipient of an answer, the workspace whose budget it draws on, whether it is a DM (status
    lines and sessions behave differently there), and the agent session's title when the turn creates it."""

    target: ReplyTarget
    team_id: str
    is_dm: bool
    title: str | None = None

    @classmethod
    def of_message(cls, message: SlackMessage, *, title: str | None) -> ReplyAddress:
        """The answer to a person's message: in its thread, for its sender (from their own workspace in Slack
        Connect), on the budget of the workspace it arrived in."""
        target = ReplyTarget(
            channel=message.channel,
            thread_ts=message.root_ts,
            recipient_user_id=message.user,
            recipient_team_id=message.user_team,
        )
        return cls(target, team_id=message.team_id, is_dm=message.is_dm, title=title)

    def as_dict(self) -> dict[str, str]:
        return {
            "channel": self.target.channel,
            "thread_ts": self.target.thread_ts,
            "recipient_user_id": self.target.recipient_user_id,
            "recipient_team_id": self.target.recipient_team_id,
            "team_id": self.team_id,
            "is_dm": "true" if self.is_dm else "false",
            "title": self.title or "",
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, str]) -> ReplyAddress:
        missing = [name for name in REQUIRED if name not in raw]
        if missing or not raw["channel"] or not raw["thread_ts"]:
            raise AddressError(f"a Slack reply address needs {', '.join(missing or ('channel', 'thread_ts'))}")
        target = ReplyTarget(
            channel=raw["channel"],
            thread_ts=raw["thread_ts"],
            recipient_user_id=raw["recipient_user_id"],
            recipient_team_id=raw["recipient_team_id"],
        )
        return cls(target, team_id=raw["team_id"], is_dm=raw["is_dm"] == "true", title=raw.get("title") or None)
