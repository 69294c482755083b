"""The store: everything threadline keeps between turns, behind one async protocol with two backends.

SQLite (one file; the default, for one process) and PostgreSQL (shared by several replicas) pass the same
contract tests. Only the core holds a store: adapters reach it through the gateway (``bot.gateway``).
``THREADLINE_DATABASE`` picks the backend: a path or ``sqlite:///…`` for SQLite, ``postgresql://…`` for
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bot.store.contract import (
    SCHEMA_VERSION,
    AccessRule,
    AnswerRecord,
    BudgetOverride,
    BudgetSpend,
    ChannelSetting,
    ContainerFile,
    Document,
    FeedbackRow,
    HistoryEntry,
    InboxEntry,
    InboxState,
    SchemaTooNew,
    Store,
    StoredImage,
    StoreUnavailable,
    ThreadFile,
    ThreadRecord,
    UsageRow,
    UsageTotal,
    channel_scope,
    thread_scope,
)
from bot.store.location import DatabaseLocation, parse_database

__all__ = [
    "SCHEMA_VERSION",
    "AccessRule",
    "AnswerRecord",
    "BudgetOverride",
    "BudgetSpend",
    "ChannelSetting",
    "ContainerFile",
    "DatabaseLocation",
    "Document",
    "FeedbackRow",
    "HistoryEntry",
    "InboxEntry",
    "InboxState",
    "SchemaTooNew",
    "Store",
    "StoreUnavailable",
    "StoredImage",
    "ThreadFile",
    "ThreadRecord",
    "UsageRow",
    "UsageTotal",
    "channel_scope",
    "open_store",
    "opened_store",
    "parse_database",
    "thread_scope",
]


async def open_store(location: DatabaseLocation, *, pool_size: int = 10) -> Store:
    """Open (and migrate) the store at ``location``. Raises StoreUnavailable with a password-free message."""
    if location.scheme == "postgresql":
        from bot.store.postgres import PostgresStore

        store: Store = await PostgresStore.open(location, pool_size=pool_size)
        return store
    from bot.store.sqlite import SqliteStore

    return SqliteStore(location.path)


@asynccontextmanager
async def opened_store(location: DatabaseLocation, *, pool_size: int = 1) -> AsyncIterator[Store]:
    """The store for one short job (a command-line report), closed after it."""
    store = await open_store(location, pool_size=pool_size)
    try:
        yield store
    finally:
        await store.close()
