"""Logging with secret redaction: every configured secret is replaced by ``***`` in every record.

``THREADLINE_LOG_FORMAT=json`` makes each line one JSON object: time, level, logger, message, the ``extra=`` fields
(the audit lines' actor, rule…) and any traceback, redacted like text lines. A formatter of our own (a few lines on
``json.dumps``) rather than python-json-logger: no new dependency, and redaction sees every value it writes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from bot.settings import Settings
from bot.store.location import url_password

AUDIT_LOGGER = "threadline.audit"
# Attributes every LogRecord has: the rest of a record's attributes are its ``extra=`` fields.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, secrets redacted in every string it holds."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 6]

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line |= {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES and not k.startswith("_")}
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(self._redact(line), ensure_ascii=False, default=str)

    def _redact(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, "***")
            return value
        if isinstance(value, dict):
            return {k: self._redact(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact(v) for v in value]
        if isinstance(value, int | float | bool) or value is None:
            return value
        return self._redact(str(value))


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if len(s) >= 6]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        text = record.getMessage()
        redacted = text
        for secret in self._secrets:
            redacted = redacted.replace(secret, "***")
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            for secret in self._secrets:
                record.exc_text = record.exc_text.replace(secret, "***")
        if redacted != text:
            record.msg, record.args = redacted, ()
        return True


def secret_values(*sections: BaseSettings) -> list[str]:
    """Every secret of every settings section, and the database password (it sits inside a URL)."""
    values = []
    for section in sections:
        for name in type(section).model_fields:
            value = getattr(section, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
        if isinstance(section, Settings):
            password = url_password(section.database) if "://" in section.database else None
            if password:
                values.append(password)
            mcp_envs = [server.authorization_env for server in section.mcp_servers if server.authorization_env]
            values += [os.environ[name] for name in mcp_envs if os.environ.get(name)]
    return values


def setup_logging(settings: Settings, *sections: BaseSettings) -> None:
    secrets = secret_values(settings, *sections)
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(secrets))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Audit lines (admin commands, access refusals) are written at any log level.
    logging.getLogger(AUDIT_LOGGER).setLevel(min(logging.INFO, root.level))
    # websockets logs every handshake header (the Authorization one too) at DEBUG: keep it quiet.
    noisy_loggers = (
        "httpx2",
        "httpx",
        "openai",
        "websockets",
        "discord.gateway",
        "discord.client",
        "slack_bolt",
        "slack_sdk",
    )
    for noisy in noisy_loggers:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
