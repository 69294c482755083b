"""Audit lines: admin commands and access refusals, logged on ``threadline.audit`` with structured fields.

The fields are ids, rule names and keywords, never message text: with ``THREADLINE_LOG_FORMAT=json`` each becomes
a key of the line's JSON object (``bot.logging_setup``); in text the message spells them out.
"""

from __future__ import annotations

import logging

log = logging.getLogger("threadline.audit")

AuditValue = str | bool | int | list[str] | None


def audit(event: str, **fields: AuditValue) -> None:
    """One audit line: ``event`` (``admin_command``, ``admin_refused``, ``access_refused``) and its fields."""
    kept = {name: value for name, value in fields.items() if value is not None}
    summary = " ".join(
        f"{name}={' '.join(value) if isinstance(value, list) else value}" for name, value in kept.items()
    )
    log.info("%s %s", event, summary, extra={"audit": event, **kept})
