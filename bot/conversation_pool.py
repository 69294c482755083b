"""Conversations made ahead of need, so a new thread's first message does not wait for ``conversations.create``.

The pool keeps up to ``size`` empty conversations. ``take(metadata)`` hands one out at once and labels it with the
thread's metadata in the background (``conversations.update``); the thread key → id mapping lives in the store, so
a failed label is logged and costs nothing else. One background task refills the pool, one conversation at a time.
It starts when the engine next asks (``warm``), not on ``take``, so the turn that took an id sends no create of its
own before its response. When OpenAI fails, the refill stops and may run again only after a pause (doubling, up to
a minute), and a run of failures is logged once; meanwhile the engine creates conversations directly, as without
the pool. At close the refill is cancelled, pending labels get a moment to finish, unused conversations are deleted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

from openai import AsyncOpenAI

log = logging.getLogger("threadline.conversation_pool")

FIRST_RETRY_SECS = 1.0
MAX_RETRY_SECS = 60.0
CLOSE_TIMEOUT_SECS = 2.0


class ConversationPool:
    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        size: int,
        first_retry_secs: float = FIRST_RETRY_SECS,
        max_retry_secs: float = MAX_RETRY_SECS,
        close_timeout_secs: float = CLOSE_TIMEOUT_SECS,
    ) -> None:
        self.client = client
        self.size = size
        self._first_retry = first_retry_secs
        self._max_retry = max_retry_secs
        self._close_timeout = close_timeout_secs
        self._ready: deque[str] = deque()
        self._refill: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._failures = 0  # consecutive failed creates: the current burst
        self._retry_at = 0.0
        self._closed = False

    @property
    def ready(self) -> int:
        return len(self._ready)

    def warm(self) -> None:
        """Start refilling in the background, unless full, already refilling, pausing after failures, or closed."""
        if self._closed or len(self._ready) >= self.size or self._refill is not None:
            return
        if time.monotonic() < self._retry_at:
            return
        self._refill = asyncio.create_task(self._fill(), name="conversation-pool-refill")

    def take(self, metadata: dict[str, str]) -> str | None:
        """A ready conversation id (labelled with ``metadata`` in the background), or None when the pool is empty."""
        if self._closed or not self._ready:
            return None
        conversation_id = self._ready.popleft()
        self._spawn(self._label(conversation_id, metadata))
        return conversation_id

    async def settled(self) -> None:
        """Wait until the refill running now and the pending labels have ended."""
        while pending := [t for t in (self._refill, *self._background) if t is not None and not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        self._closed = True
        if self._refill is not None:
            self._refill.cancel()
            await asyncio.gather(self._refill, return_exceptions=True)
            self._refill = None
        unused, self._ready = list(self._ready), deque()
        for conversation_id in unused:
            self._spawn(self._delete(conversation_id))
        if not self._background:
            return
        _, late = await asyncio.wait(list(self._background), timeout=self._close_timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        if late:
            log.info("conversation pool: %d metadata update(s) or deletion(s) cut short at close", len(late))

    # --- background work ------------------------------------------------------------------------------------
    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _fill(self) -> None:
        try:
            while not self._closed and len(self._ready) < self.size:
                try:
                    conversation = await self.client.conversations.create()
                except Exception as exc:  # a background task: never raise, pause instead
                    self._failed(exc)
                    return
                self._ready.append(conversation.id)
                if self._failures:
                    log.info(
                        "conversation pool: OpenAI creates conversations again (after %d failures)", self._failures
                    )
                self._failures, self._retry_at = 0, 0.0
        finally:
            self._refill = None

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        pause = min(self._first_retry * 2 ** (self._failures - 1), self._max_retry)
        self._retry_at = time.monotonic() + pause
        if self._failures == 1:
            log.warning(
                "conversation pool: could not create a conversation ahead of need (%s: %s); new threads create their"
                " own until OpenAI recovers",
                type(exc).__name__,
                str(exc)[:200],
            )
        else:
            log.debug("conversation pool: create failed again (%d in a row): %s", self._failures, type(exc).__name__)

    async def _label(self, conversation_id: str, metadata: dict[str, str]) -> None:
        try:
            await self.client.conversations.update(conversation_id, metadata=metadata)
        except Exception as exc:  # the store has the thread → conversation mapping anyway
            log.warning(
                "conversation pool: could not set the metadata of %s (%s); the thread keeps it regardless",
                conversation_id,
                type(exc).__name__,
            )

    async def _delete(self, conversation_id: str) -> None:
        try:
            await self.client.conversations.delete(conversation_id)
        except Exception as exc:  # best effort at shutdown
            log.info("conversation pool: could not delete unused %s (%s)", conversation_id, type(exc).__name__)
