"""Turn handling on the durable inbox: strict per-thread order across processes, a global cap on model calls, a
timeout per turn, and nothing accepted lost on a crash.

The gateway writes each accepted message into the store's inbox (with its dedupe keys, in one transaction). A
thread's turns run only in the process that holds the thread's lease, oldest entry first, so turns never overlap or
reorder, even with several replicas on one PostgreSQL database. Leases carry a heartbeat: a replica that dies loses
them within ``lease_secs`` and another takes the thread over. An entry found still running under a lapsed lease was
interrupted: its thread is told (reply ``retry`` to ask again), or it is retried by itself with
``retry_interrupted``. Whatever goes wrong inside a turn ends as a short reply in its thread and a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.audio_encode import AudioFormat
from bot.budgets import Budgets, OverBudget
from bot.errors import UserFacingError
from bot.inbox_codec import decode_address, decode_message
from bot.metrics import Metrics, TurnOutcome
from bot.protocols import STOP_REQUESTED, Checkpointed, ReplyStream, Resumer, TurnEngine, is_stop_request
from bot.settings import Settings
from bot.store import InboxEntry, InboxState, Store, StoreUnavailable
from bot.types import IncomingMessage, OutgoingFile, TaskStep, ThreadKey

log = logging.getLogger("threadline.turns")

# The cancel message of turns cut short because this process shuts down (not a user's stop).
SHUTTING_DOWN = "threadline: shutting down"
# The cancel message of a turn whose thread's lease lapsed (this process was too slow to renew it).
LEASE_LOST = "threadline: the thread's lease was lost"
RETRY_WORD = "retry"


def interrupted_notice(message: IncomingMessage | None) -> str:
    about = ""
    if message is not None and message.text.strip():
        text = " ".join(message.text.split())
        about = f" to “{text[:60]}{'…' if len(text) > 60 else ''}”"
    return f"My answer{about} was interrupted (threadline restarted). Reply `{RETRY_WORD}` to ask again."


@dataclass
class _Job:
    message: IncomingMessage
    reply: ReplyStream


class TurnHandler:
    def __init__(self, *, settings: Settings, engine: TurnEngine, store: Store, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.store = store
        self.metrics = metrics or Metrics()
        self.budgets = Budgets(settings=settings, store=store)  # checked as each turn starts (bot/budgets.py)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._cap = asyncio.Semaphore(settings.max_concurrent_turns)
        self._resumers: dict[str, Resumer] = {}
        self._jobs: dict[int, _Job] = {}  # entries accepted by this process, with their live reply
        self._waiters: dict[int, asyncio.Future[None]] = {}  # done when the entry's turn has ended, anywhere
        self._lanes: dict[ThreadKey, asyncio.Task[None]] = {}  # threads this process is running (it holds the lease)
        self._dirty: set[ThreadKey] = set()  # a lane must look at its thread's inbox once more before it ends
        self._running: dict[ThreadKey, asyncio.Task[None]] = {}  # the lane while it runs a turn (for stop)
        self._stop_asked: set[ThreadKey] = set()  # its running turn was stopped by its user (for the metrics)
        self._sweeper: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._lost: set[ThreadKey] = set()  # threads whose lease lapsed while this process answered there
        self._wake = asyncio.Event()
        self.metrics.track_turns(queued=lambda: len(self._jobs), running=lambda: len(self._running))

    # --- life cycle ----------------------------------------------------------------------------------------
    def register(self, platform: str, resumer: Resumer) -> None:
        self._resumers[platform] = resumer
        self._wake_sweeper()

    async def start(self) -> None:
        """Start the heartbeat; the first sweep answers what a previous run left behind."""
        if not self.store.shared:
            await self.store.clear_leases()  # one process per SQLite file: whoever held them is gone
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="turns:sweeper")
        self._heartbeat = asyncio.create_task(self._heartbeat_forever(), name="turns:heartbeat")

    async def close(self) -> None:
        """Shut down: stop the heartbeat, cut the turns still running (their threads are told they were
        interrupted), and let go of every lease so another replica takes over at once."""
        tasks = [t for t in (self._sweeper, self._heartbeat) if t is not None]
        self._sweeper = self._heartbeat = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        lanes = list(self._lanes.values())
        for lane in lanes:
            lane.cancel(msg=SHUTTING_DOWN)
        await asyncio.gather(*lanes, return_exceptions=True)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(None)

    # --- entry points --------------------------------------------------------------------------------------
    def enqueue(self, entry_id: int, message: IncomingMessage, reply: ReplyStream) -> asyncio.Future[None]:
        """Run an entry the gateway has just accepted into the inbox; the future is done when its turn has ended
        (here or in another replica)."""
        self._jobs[entry_id] = _Job(message, reply)
        waiter = self._waiter(entry_id)
        self._kick(message.key)
        return waiter

    async def retry(self, key: ThreadKey) -> asyncio.Future[None] | None:
        """Queue the thread's newest interrupted entry again; None when there is none."""
        entry = await self.store.last_interrupted(key)
        if entry is None:
            return None
        await self.store.set_inbox_state(entry.id, InboxState.QUEUED)
        log.info("retrying interrupted entry %s in %s", entry.id, key)
        waiter = self._waiter(entry.id)
        self._kick(key)
        return waiter

    def stop(self, key: ThreadKey) -> bool:
        """Stop the thread's running turn (its answer ends with "(stopped)"); False when nothing runs here.
        Turns queued behind it still run."""
        task = self._running.get(key)
        if task is None or task.done():
            return False
        self._stop_asked.add(key)
        task.cancel(msg=STOP_REQUESTED)
        return True

    async def wait_idle(self) -> None:
        """Wait until every turn this process runs, or has accepted, has ended (after one sweep, so what an earlier
        run left behind is answered too)."""
        if self._sweeper is not None:
            with contextlib.suppress(StoreUnavailable):
                await self._sweep()
        while self._lanes or any(not w.done() for w in self._waiters.values()):
            pending: list[asyncio.Future[None]] = [*self._lanes.values(), *self._waiters.values()]
            await asyncio.wait(pending, timeout=self._interval(), return_when=asyncio.ALL_COMPLETED)
            if not self._lanes:
                await self._settle_waiters()

    # --- lanes ---------------------------------------------------------------------------------------------
    def _waiter(self, entry_id: int) -> asyncio.Future[None]:
        waiter = self._waiters.get(entry_id)
        if waiter is None or waiter.done():
            waiter = self._waiters[entry_id] = asyncio.get_running_loop().create_future()
        return waiter

    def _kick(self, key: ThreadKey) -> None:
        if key in self._lanes:
            self._dirty.add(key)  # the lane looks again before it lets go of the thread
            return
        self._lanes[key] = asyncio.create_task(self._lane(key), name=f"lane:{key}")

    async def _lane(self, key: ThreadKey) -> None:
        """Hold the thread's lease and run its entries in arrival order until none is left."""
        try:
            while True:
                self._dirty.discard(key)
                if not await self.store.take_lease(key, self.owner, self.settings.lease_secs):
                    return  # another replica runs this thread; it looks again before it lets go
                while (entry := await self.store.next_entry(key)) is not None:
                    await self._run_entry(entry)
                    if key in self._lost:
                        self._lost.discard(key)
                        return  # the thread is another replica's now
                await self.store.release_lease(key, self.owner)
                # Another process may have accepted a message after our last look and found the lease taken: it
                # relies on us to look once more after letting go.
                more = await self.store.next_entry(key) is not None
                if not more and key not in self._dirty:
                    return
        except StoreUnavailable as exc:
            log.error("the inbox of %s is out of reach; will try again: %s", key, exc)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.release_lease(key, self.owner))
            raise
        except Exception:
            log.exception("the lane of %s failed; will try again", key)
        finally:
            self._lanes.pop(key, None)
            self._dirty.discard(key)

    async def _run_entry(self, entry: InboxEntry) -> None:
        if entry.state is InboxState.RUNNING:
            await self._interrupted(entry)
            return
        job = self._jobs.pop(entry.id, None) or self._rebuild(entry)
        if job is None:
            self.metrics.turn(entry.key.platform, TurnOutcome.FAILED)
            await self.store.set_inbox_state(entry.id, InboxState.FAILED)
            self._settle(entry.id)
            return
        await self.store.set_inbox_state(entry.id, InboxState.RUNNING)
        if isinstance(job.reply, Checkpointed):
            job.reply.on_posted = _note_posted(self.store, entry.id)
        current = asyncio.current_task()
        if current is not None:
            self._running[entry.key] = current
        state = InboxState.DONE
        try:
            await self._run(job)
        except asyncio.CancelledError:
            state = InboxState.INTERRUPTED
            raise
        finally:
            self._running.pop(entry.key, None)
            if entry.key not in self._lost:  # else its new holder decides what the entry becomes
                with contextlib.suppress(StoreUnavailable):
                    await asyncio.shield(self.store.set_inbox_state(entry.id, state))
                self._settle(entry.id)

    async def _interrupted(self, entry: InboxEntry) -> None:
        """An entry left running by a process that died: retry it, or tell its thread."""
        if self.settings.retry_interrupted:
            log.warning("entry %s in %s was interrupted; retrying it", entry.id, entry.key)
            await self.store.set_inbox_state(entry.id, InboxState.QUEUED)
            return
        log.warning("entry %s in %s was interrupted; telling the thread", entry.id, entry.key)
        await self.store.set_inbox_state(entry.id, InboxState.INTERRUPTED)
        job = self._rebuild(entry)
        if job is not None:
            await _safe_fail(job.reply, interrupted_notice(job.message))
        self._settle(entry.id)

    def _rebuild(self, entry: InboxEntry) -> _Job | None:
        """The message and a reply for an entry this process did not receive (or received before a restart)."""
        resumer = self._resumers.get(entry.key.platform)
        if resumer is None:
            log.error("no %s adapter here to answer entry %s", entry.key.platform, entry.id)
            return None
        key = entry.key
        address = decode_address(entry.address)
        try:
            message = decode_message(entry.message, key, address, lambda source: resumer.fetch_for(key, source))
            reply = resumer.reply_for(key, address, posted=entry.posted)
        except Exception:
            log.exception("could not rebuild entry %s of %s", entry.id, key)
            return None
        return _Job(message, reply)

    def _settle(self, entry_id: int) -> None:
        waiter = self._waiters.pop(entry_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _run(self, job: _Job) -> None:
        key, platform = job.message.key, job.message.key.platform
        timeout = self.settings.turn_timeout_secs
        started = time.monotonic()
        self._stop_asked.discard(key)
        outcome = TurnOutcome.FAILED
        reply = _FirstText(job.reply, lambda: self.metrics.first_text(platform, time.monotonic() - started))
        try:
            # Budgets first: a turn waiting for room holds no place under the cap, and an over-budget one never
            # reaches the engine (OverBudget is a UserFacingError: its line names the limit and the reset).
            async with self.budgets.turn(job.message), self._cap, asyncio.timeout(timeout):
                await self.engine.run_turn(job.message, reply)
            # The engine ends a turn its user stopped by itself, with "(stopped)".
            outcome = TurnOutcome.STOPPED if key in self._stop_asked else TurnOutcome.ANSWERED
        except OverBudget as exc:
            outcome = TurnOutcome.REFUSED
            self.metrics.refused(platform, "budget")
            log.info("turn in %s refused: over a budget", key)
            await _safe_fail(job.reply, str(exc))
        except UserFacingError as exc:
            log.warning("turn in %s ended with a user-facing error: %s", job.message.key, exc)
            await _safe_fail(job.reply, str(exc))
        except TimeoutError:
            outcome = TurnOutcome.TIMED_OUT
            log.warning("turn in %s timed out after %g s", job.message.key, timeout)
            await _safe_fail(job.reply, f"That took longer than {timeout:g} seconds, so I stopped. Please try again.")
        except asyncio.CancelledError as exc:
            if exc.args and exc.args[0] == LEASE_LOST:
                outcome = TurnOutcome.INTERRUPTED
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                return
            if is_stop_request(exc):  # stopped before the engine began (waiting for the cap): say so, go on
                outcome = TurnOutcome.STOPPED
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                await _safe_say_stopped(job.reply)
                return
            outcome = TurnOutcome.INTERRUPTED
            await asyncio.shield(_safe_fail(job.reply, interrupted_notice(job.message)))
            raise
        except Exception:
            ref = uuid.uuid4().hex[:8]
            log.exception("turn in %s failed (ref %s)", job.message.key, ref)
            await _safe_fail(job.reply, f"Sorry, something went wrong on my side (ref {ref}).")
        finally:
            self._stop_asked.discard(key)
            self.metrics.turn(platform, outcome, time.monotonic() - started)

    # --- heartbeat -----------------------------------------------------------------------------------------
    def _interval(self) -> float:
        return max(self.settings.lease_secs / 3, 0.2)

    def _wake_sweeper(self) -> None:
        """A platform registered: entries of its threads left by a previous run can be answered now."""
        self._wake.set()

    async def _heartbeat_forever(self) -> None:
        """Renew this process's leases on a timer of their own: a slow sweep must never let them lapse (another
        replica would then report running answers as interrupted and answer them a second time)."""
        while True:
            try:
                held = set(await self.store.renew_leases(self.owner, self.settings.lease_secs))
                for key in held - set(self._lanes):  # a lane that ended without letting go (the database was away)
                    await self.store.release_lease(key, self.owner)
                for key in set(self._running) - held:
                    # Another replica took the thread over and reports this answer as interrupted: stop here, or
                    # the thread would get it twice.
                    log.warning("lost the lease of %s while answering there; stopping that answer", key)
                    self._lost.add(key)
                    self._running[key].cancel(msg=LEASE_LOST)
            except StoreUnavailable as exc:
                log.warning("heartbeat: the database is out of reach: %s", exc)
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(self._interval())

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self._sweep()
            except StoreUnavailable as exc:
                log.warning("sweep: the database is out of reach: %s", exc)
            except Exception:
                log.exception("sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval())
            self._wake.clear()

    async def _sweep(self) -> None:
        """Take over threads whose holder died (or that nobody took), and settle entries other replicas ran."""
        for key in await self.store.unleased_threads(limit=200):
            if key.platform in self._resumers:
                self._kick(key)
        await self._settle_waiters()

    async def _settle_waiters(self) -> None:
        """Entries accepted here but answered by another replica: look them up together (the store batches
        concurrent calls), and settle the finished ones."""
        pending = [
            entry_id
            for entry_id, waiter in self._waiters.items()
            if not waiter.done() and not ((job := self._jobs.get(entry_id)) and job.message.key in self._lanes)
        ]
        entries = await asyncio.gather(*(self.store.inbox_entry(entry_id) for entry_id in pending))
        for entry_id, entry in zip(pending, entries, strict=True):
            if entry is None or entry.state not in (InboxState.QUEUED, InboxState.RUNNING):
                self._jobs.pop(entry_id, None)
                self._settle(entry_id)


class _FirstText:
    """The turn's reply, passed through unchanged, that calls ``noted`` at the first text appended: the
    time-to-first-text metric, with no change to the engine."""

    def __init__(self, reply: ReplyStream, noted: Callable[[], None]) -> None:
        self._reply = reply
        self._noted: Callable[[], None] | None = noted
        self.audio_format: AudioFormat = reply.audio_format

    def __getattr__(self, name: str) -> object:
        """Whatever else the platform's reply offers (``answer_ref`` for show work…) is the reply's own."""
        return getattr(self._reply, name)

    async def start(self) -> None:
        await self._reply.start()

    async def append(self, delta: str) -> None:
        if delta and self._noted is not None:
            noted, self._noted = self._noted, None
            noted()
        await self._reply.append(delta)

    async def attach(self, part: OutgoingFile) -> None:
        await self._reply.attach(part)

    async def set_status(self, status: str) -> None:
        await self._reply.set_status(status)

    async def step(self, step: TaskStep) -> None:
        await self._reply.step(step)

    async def preview(self, part: OutgoingFile) -> None:
        await self._reply.preview(part)

    async def finish(self) -> None:
        await self._reply.finish()

    async def fail(self, message: str) -> None:
        await self._reply.fail(message)


def _note_posted(store: Store, entry_id: int) -> Callable[[str], Awaitable[None]]:
    async def note(posted: str) -> None:
        await store.note_posted(entry_id, posted)

    return note


async def _safe_say_stopped(reply: ReplyStream) -> None:
    try:
        await reply.start()
        await reply.append("_(stopped)_")
        await reply.finish()
    except Exception:
        log.exception("could not deliver the stopped note")


async def _safe_fail(reply: ReplyStream, text: str) -> None:
    try:
        await reply.fail(text)
    except Exception:
        log.exception("could not deliver an error reply")
