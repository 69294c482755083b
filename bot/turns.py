"""Turn handling: strict per-thread order, a global cap on model calls, a timeout per turn.

Every message of one thread goes through that thread's queue, so turns never overlap or reorder; threads run
side by side. Whatever goes wrong in a turn ends as a short reply in that thread and a log line.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field

from bot.errors import UserFacingError
from bot.protocols import STOP_REQUESTED, ReplyStream, TurnEngine, is_stop_request
from bot.settings import Settings
from bot.types import IncomingMessage, ThreadKey

log = logging.getLogger("threadline.turns")


@dataclass
class _Job:
    message: IncomingMessage
    reply: ReplyStream
    done: asyncio.Future[None]


@dataclass
class _ThreadLane:
    queue: asyncio.Queue[_Job] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None


class TurnHandler:
    def __init__(self, *, settings: Settings, engine: TurnEngine) -> None:
        self.settings = settings
        self.engine = engine
        self._cap = asyncio.Semaphore(settings.max_concurrent_turns)
        self._lanes: dict[ThreadKey, _ThreadLane] = {}
        self._running: dict[ThreadKey, asyncio.Task[None]] = {}  # the lane worker while it runs a turn

    def stop(self, key: ThreadKey) -> bool:
        """Stop the thread's running turn (its answer ends with "(stopped)"); False when nothing runs there.
        Turns queued behind it still run."""
        task = self._running.get(key)
        if task is None or task.done():
            return False
        task.cancel(msg=STOP_REQUESTED)
        return True

    def enqueue(self, message: IncomingMessage, reply: ReplyStream) -> asyncio.Future[None]:
        """Queue an accepted message (the gateway has deduped and checked it); the future is done when its turn
        has ended."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane = self._lanes.get(message.key)
        if lane is None:
            lane = self._lanes[message.key] = _ThreadLane()
        lane.queue.put_nowait(_Job(message, reply, done))
        if lane.worker is None or lane.worker.done():
            lane.worker = asyncio.create_task(self._drain(message.key, lane), name=f"lane:{message.key}")
        return done

    async def _drain(self, key: ThreadKey, lane: _ThreadLane) -> None:
        try:
            while not lane.queue.empty():
                job = lane.queue.get_nowait()
                current = asyncio.current_task()
                if current is not None:
                    self._running[key] = current
                try:
                    await self._run(job)
                finally:
                    self._running.pop(key, None)
                    if not job.done.done():
                        job.done.set_result(None)
        finally:
            if self._lanes.get(key) is lane and lane.queue.empty():
                del self._lanes[key]

    async def _run(self, job: _Job) -> None:
        timeout = self.settings.turn_timeout_secs
        try:
            async with self._cap, asyncio.timeout(timeout):
                await self.engine.run_turn(job.message, job.reply)
        except UserFacingError as exc:
            log.warning("turn in %s ended with a user-facing error: %s", job.message.key, exc)
            await self._safe_fail(job.reply, str(exc))
        except TimeoutError:
            log.warning("turn in %s timed out after %g s", job.message.key, timeout)
            await self._safe_fail(
                job.reply, f"That took longer than {timeout:g} seconds, so I stopped. Please try again."
            )
        except asyncio.CancelledError as exc:
            if is_stop_request(exc):  # stopped before the engine began (waiting for the cap): say so, go on
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                await self._safe_say_stopped(job.reply)
                return
            await self._safe_fail(job.reply, "I was stopped before I could finish this answer.")
            raise
        except Exception:
            ref = uuid.uuid4().hex[:8]
            log.exception("turn in %s failed (ref %s)", job.message.key, ref)
            await self._safe_fail(job.reply, f"Sorry, something went wrong on my side (ref {ref}).")

    @staticmethod
    async def _safe_say_stopped(reply: ReplyStream) -> None:
        try:
            await reply.start()
            await reply.append("_(stopped)_")
            await reply.finish()
        except Exception:
            log.exception("could not deliver the stopped note")

    @staticmethod
    async def _safe_fail(reply: ReplyStream, text: str) -> None:
        try:
            await reply.fail(text)
        except Exception:
            log.exception("could not deliver an error reply")

    async def wait_idle(self) -> None:
        """Wait until every queued turn has finished."""
        while self._lanes:
            workers = [lane.worker for lane in self._lanes.values() if lane.worker is not None]
            if not workers:
                return
            await asyncio.gather(*workers, return_exceptions=True)
