"""The core's facade: the only object an adapter holds.

Adapters convert platform events into ``IncomingMessage``s and hand them here; the gateway decides, once and
with one meaning on every platform, whether a delivery is a duplicate, whether its sender may use the bot, and
whether the thread becomes the bot's. A refused message never claims a thread and never reaches the model.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from bot.access import access_denied_reason
from bot.commands import HELP, Commands
from bot.protocols import ReplyStream
from bot.settings import Settings
from bot.store import Store, StoreUnavailable
from bot.turns import TurnHandler
from bot.types import IncomingMessage, ThreadKey, TurnKind

log = logging.getLogger("threadline.gateway")

# Commands anyone may run, whatever the access lists say: they reveal nothing and cost nothing.
OPEN_COMMANDS = frozenset({"", "help"})


class Outcome(enum.StrEnum):
    QUEUED = "queued"  # accepted: the turn runs in its thread's lane
    DUPLICATE = "duplicate"  # a repeated delivery of something already accepted: nothing was said
    REFUSED = "refused"  # the sender may not use the bot here: the reply got one short refusal
    FAILED = "failed"  # could not be taken on (the database is down): the reply got one short line
    ANSWERED = "answered"  # nothing to answer (a bare mention): the reply got the help text; no turn, no thread


@dataclass(frozen=True, slots=True)
class Submission:
    outcome: Outcome
    done: asyncio.Future[None] | None = None  # set for QUEUED: done when the turn has ended

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.QUEUED


class Gateway:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        turns: TurnHandler,
        commands: Commands,
        http: aiohttp.ClientSession,
    ) -> None:
        self._settings = settings
        self._store = store
        self._turns = turns
        self._commands = commands
        self._http = http

    @property
    def http(self) -> aiohttp.ClientSession:
        """The process's one HTTP session, for the adapter's own platform calls and file downloads."""
        return self._http

    @property
    def max_attachment_bytes(self) -> int:
        """The largest file worth downloading at all (audio may be larger than other files); the core checks
        each kind's own limit."""
        return max(self._settings.max_attachment_bytes, self._settings.max_audio_bytes)

    async def owns(self, key: ThreadKey) -> bool:
        """Whether the bot answers in this thread without a new mention (it did before; survives restarts)."""
        try:
            return await self._store.is_owned(key)
        except StoreUnavailable as exc:
            log.warning("cannot tell whether %s is ours: %s", key, exc)
            return False

    async def latest_thread(self, platform: str) -> str | None:
        """The thread part of the platform's most recently used thread (the console resumes it)."""
        return await self._store.latest_thread_id(platform)

    def refusal(self, message: IncomingMessage) -> str | None:
        """Why this sender may not use the bot here (the polite line to show), or None. For adapters that must
        decide before they show anything (Discord's /ask echo); ``submit`` checks again."""
        return access_denied_reason(self._settings, message)

    async def submit(self, message: IncomingMessage, reply: ReplyStream) -> Submission:
        """Dedupe, check access, claim the thread, then queue the turn in the thread's lane.

        A message with no text and no attachments (a bare mention) gets the help text, like ``help``: there is
        nothing to ask the model. Its dedupe keys are claimed first, so a retried delivery is not answered twice.
        """
        try:
            if message.dedupe_keys and not await self._store.claim_events(message.dedupe_keys):
                log.info("dropped duplicate delivery %s", message.dedupe_keys[0])
                return Submission(Outcome.DUPLICATE)
            if message.kind is TurnKind.CHAT and not message.text.strip() and not message.attachments:
                log.info("answered an empty message in %s with the help text", message.key)
                await _say(reply, HELP, failed=False)
                return Submission(Outcome.ANSWERED)
            reason = access_denied_reason(self._settings, message)
            if reason is not None:
                log.info("access denied for user %s in %s", message.user_id, message.key)
                await _say(reply, reason, failed=True)
                return Submission(Outcome.REFUSED)
            await self._store.mark_owned(message.key)
        except StoreUnavailable as exc:
            log.error("could not take on a message in %s: %s", message.key, exc)
            await _say(reply, str(exc), failed=True)
            return Submission(Outcome.FAILED)
        return Submission(Outcome.QUEUED, self._turns.enqueue(message, reply))

    async def command(
        self,
        text: str,
        *,
        key: ThreadKey,
        user: str,
        reply: ReplyStream,
        roles: Sequence[str] = (),
        is_dm: bool = False,
        dedupe_keys: Sequence[str] = (),
    ) -> Submission:
        """Run a shared command (``help``, ``reset``, ``model``, ``usage``…) and say its answer through ``reply``.

        The same access rules as messages apply, except to ``help``; commands never claim a thread.
        """
        probe = IncomingMessage(
            key=key, user_id=user, text=text, dedupe_keys=tuple(dedupe_keys), is_dm=is_dm, user_roles=tuple(roles)
        )
        name = text.strip().partition(" ")[0].lower().lstrip("/")
        try:
            if probe.dedupe_keys and not await self._store.claim_events(probe.dedupe_keys):
                return Submission(Outcome.DUPLICATE)
            reason = None if name in OPEN_COMMANDS else access_denied_reason(self._settings, probe)
            if reason is not None:
                log.info("command %r refused for user %s in %s", name, user, key)
                await _say(reply, reason, failed=True)
                return Submission(Outcome.REFUSED)
            answer = await self._commands.run(text, key=key, user_id=user)
        except StoreUnavailable as exc:
            log.error("command %r in %s failed: %s", name, key, exc)
            await _say(reply, str(exc), failed=True)
            return Submission(Outcome.FAILED)
        await _say(reply, answer, failed=False)
        return Submission(Outcome.QUEUED)

    async def stop(self, key: ThreadKey) -> bool:
        """Stop the answer running in this thread (a stop button, a ⏹ reaction, Ctrl-C). False when nothing
        runs there: adapters acknowledge that quietly."""
        stopped = self._turns.stop(key)
        log.info("stop in %s: %s", key, "stopping the running answer" if stopped else "nothing was running")
        return stopped

    async def feedback(self, key: ThreadKey, *, turn: str, user: str, value: str) -> None:
        """Keep a user's 👍 (``good``) or 👎 (``bad``) on one answer (``turn``: the answer's platform message id)."""
        if value not in {"good", "bad"}:
            raise ValueError(f"feedback is 'good' or 'bad', not {value!r}")
        await self._store.record_feedback(key, turn=turn, user=user, value=value)

    async def answer_thread(self, platform: str, ref: str) -> ThreadKey | None:
        """The thread of the answer a platform message showed (Slack's ``channel:ts``, a Discord message id), for
        a 🔍 reaction: submit a ``TurnKind.SHOW_WORK`` message with ``target=ref`` there. None when unknown."""
        try:
            records = await self._store.answers_by_ref(platform, ref)
        except StoreUnavailable as exc:
            log.warning("cannot look up the answer %s: %s", ref, exc)
            return None
        return records[0].key if records else None

    async def wait_idle(self) -> None:
        """Wait until every accepted turn has finished."""
        await self._turns.wait_idle()


async def _say(reply: ReplyStream, text: str, *, failed: bool) -> None:
    """One short answer through a reply stream; a platform error here is logged, never raised."""
    try:
        if failed:
            await reply.fail(text)
        else:
            await reply.start()
            await reply.append(text)
            await reply.finish()
    except Exception:
        log.exception("could not deliver a reply")
