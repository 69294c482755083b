"""``THREADLINE_DATABASE``: which backend, where, and how to name it without leaking a password."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

_POSTGRES_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg"}


@dataclass(frozen=True, slots=True)
class DatabaseLocation:
    scheme: Literal["sqlite", "postgresql"]
    path: Path  # SQLite: the file (or ":memory:")
    url: str = ""  # PostgreSQL: the connection URL, password included (never log it: use ``safe``)

    @property
    def safe(self) -> str:
        """The location with any password replaced by ``***``: safe for logs, errors and the doctor."""
        if self.scheme == "sqlite":
            return str(self.path)
        return redact_url(self.url)


def redact_url(url: str) -> str:
    """The URL with its password (in the user part or a ``password=`` parameter) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        netloc = f"{parts.username or ''}:***@{host}"
    query = "&".join(
        f"{name}=***" if name.lower() == "password" else f"{name}={value}" if sep else name
        for name, sep, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_password(url: str) -> str | None:
    """The password a URL carries, for log redaction (user part or ``password=`` parameter)."""
    parts = urlsplit(url)
    if parts.password:
        return unquote(parts.password)
    for name, _, value in (item.partition("=") for item in parts.query.split("&") if item):
        if name.lower() == "password" and value:
            return unquote(value)
    return None


def parse_database(value: str | Path) -> DatabaseLocation:
    """A path or ``sqlite:///path`` → SQLite; ``postgresql://…`` (or ``postgres://``) → PostgreSQL.

    Raises ValueError naming the accepted forms for any other ``scheme://``.
    """
    text = str(value).strip()
    if "://" not in text:
        return DatabaseLocation("sqlite", Path(text).expanduser())
    scheme = text.split("://", 1)[0].lower()
    if scheme == "sqlite":
        rest = text.split("://", 1)[1]
        # sqlite:///relative/or/absolute — the path is everything after the third slash, as SQLAlchemy reads it.
        path = rest[1:] if rest.startswith("/") else rest
        return DatabaseLocation("sqlite", Path(path or ":memory:").expanduser())
    if scheme in _POSTGRES_SCHEMES:
        url = "postgresql://" + text.split("://", 1)[1]
        return DatabaseLocation("postgresql", Path(), url)
    raise ValueError(
        f"THREADLINE_DATABASE has an unknown scheme {scheme!r}: use a file path, sqlite:///PATH or "
        "postgresql://USER:PASSWORD@HOST:PORT/DB"
    )
