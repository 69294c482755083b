"""Logging with secret redaction: every configured secret is replaced by ``***`` in every record."""

from __future__ import annotations

import logging
import os
import sys

from pydantic import SecretStr
from pydantic_settings import BaseSettings

from bot.settings import Settings
from bot.store.location import url_password


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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets(secret_values(settings, *sections)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
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
