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
from aiohttp import web

from bot.access import Access
from bot.admins import ADMIN_COMMANDS, admin_id, audit_arguments, is_admin, not_admin
from bot.audit import audit
from bot.commands import HELP, Commands
from bot.health import Health
from bot.inbox_codec import encode_address, encode_message
from bot.metrics import Metrics, TurnOutcome
from bot.protocols import ReplyStream, Resumer
from bot.settings import Settings
from bot.store import Store, StoreUnavailable
from bot.turns import RETRY_WORD, TurnHandler
from bot.types import IncomingMessage, ThreadKey, TurnKind

log = logging.getLogger("threadline.gateway")

# Commands anyone may run, whatever the access lists say: they reveal nothing and cost nothing.
OPEN_COMMANDS = frozenset({"", "help"})


class Outcome(enum.StrEnum):
    QUEUED = "queued"  # accepted: the turn runs in its thread's lane
    DUPLICATE = "duplicate"  # a repeated delivery of something already accepted: nothing was said
    REFUSED = "refused"  # the sender may not use the bot here: the reply got one short refusal (at most hourly)
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
        metrics: Metrics | None = None,
        health: Health | None = None,
    ) -> None:
        self._settings = settings
        self._store = store
        self._turns = turns
        self._commands = commands
        self._http = http
        self._access = Access(settings, store)
        self._metrics = metrics or Metrics()
        self._health = health

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

    async def refusal(self, message: IncomingMessage) -> str | None:
        """Why this sender may not use the bot here (the polite line to show), or None. For adapters that must
        decide before they show anything (Discord's /ask echo, a reaction); ``submit`` checks again. With the
        database unreachable and no rules read before, the line says so."""
        try:
            refused = await self._access.check(message)
        except StoreUnavailable as exc:
            return str(exc)
        if refused is None:
            return None
        self._access.audit(message, refused, attempt="check", told=None)
        return refused.text

    async def submit(self, message: IncomingMessage, reply: ReplyStream) -> Submission:
        """Dedupe, check access, then write the message into the durable inbox and run it in its thread's lane.

        The inbox entry, its dedupe keys and the thread's ownership are written in one transaction, so a crash
        loses nothing accepted and a redelivery is never answered twice. A message with no text and no
        attachments (a bare mention) gets the help text, like ``help``: there is nothing to ask the model.
        ``retry`` in a thread asks its interrupted message again.
        """
        try:
            bare = message.kind is TurnKind.CHAT and not message.text.strip() and not message.attachments
            refused = await self._access.check(message)
            is_retry = message.kind is TurnKind.CHAT and not message.attachments and _is_retry(message.text)
            not_queued = bare or refused is not None or is_retry  # only dedupe keys are written for these
            if not_queued and message.dedupe_keys and not await self._store.claim_events(message.dedupe_keys):
                log.info("dropped duplicate delivery %s", message.dedupe_keys[0])
                self._metrics.turn(message.key.platform, TurnOutcome.DUPLICATE)
                return Submission(Outcome.DUPLICATE)
            if bare:
                log.info("answered an empty message in %s with the help text", message.key)
                await _say(reply, HELP, failed=False)
                return Submission(Outcome.ANSWERED)
            if refused is not None:
                told = await self._access.tell(message)
                self._access.audit(message, refused, attempt="message", told=told)
                self._metrics.turn(message.key.platform, TurnOutcome.REFUSED)
                self._metrics.refused(message.key.platform, "access")
                if told:
                    await _say(reply, refused.text, failed=True)
                return Submission(Outcome.REFUSED)
            if is_retry:
                waiter = await self._turns.retry(message.key)
                if waiter is None:
                    await _say(reply, "There is no interrupted answer to retry in this thread.", failed=False)
                    return Submission(Outcome.ANSWERED)
                return Submission(Outcome.QUEUED, waiter)
            # The request rate (bot/budgets.py): a refused message is not queued; its dedupe keys are claimed so a
            # redelivery stays quiet. Token budgets are checked later, as the turn starts in its lane.
            too_fast = await self._turns.budgets.rate_refusal(message)
            if too_fast is not None:
                if message.dedupe_keys and not await self._store.claim_events(message.dedupe_keys):
                    return Submission(Outcome.DUPLICATE)
                log.info("user %s in %s is over the request rate", message.user_id, message.key)
                self._metrics.turn(message.key.platform, TurnOutcome.REFUSED)
                self._metrics.refused(message.key.platform, "rate")
                await _say(reply, too_fast, failed=True)
                return Submission(Outcome.REFUSED)
            entry_id = await self._store.accept(
                message.dedupe_keys,
                message.key,
                message=encode_message(message),
                address=encode_address(message.reply_address),
            )
            if entry_id is None:
                log.info("dropped duplicate delivery %s", message.dedupe_keys[0])
                self._metrics.turn(message.key.platform, TurnOutcome.DUPLICATE)
                return Submission(Outcome.DUPLICATE)
        except StoreUnavailable as exc:
            log.error("could not take on a message in %s: %s", message.key, exc)
            self._metrics.turn(message.key.platform, TurnOutcome.FAILED)
            await _say(reply, str(exc), failed=True)
            return Submission(Outcome.FAILED)
        return Submission(Outcome.QUEUED, self._turns.enqueue(entry_id, message, reply))

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
        manage_guild: bool = False,
    ) -> Submission:
        """Run a shared command (``help``, ``reset``, ``model``, ``usage``…) and say its answer through ``reply``.

        The same access rules as messages apply, except to ``help``; commands never claim a thread. Admin commands
        (``access``…) are for admins only (``bot.admins``; ``manage_guild``: a Discord member with Manage Server),
        whatever the access rules say; others get one short line. Both are audit lines.
        """
        probe = IncomingMessage(
            key=key, user_id=user, text=text, dedupe_keys=tuple(dedupe_keys), is_dm=is_dm, user_roles=tuple(roles)
        )
        name, _, arg = text.strip().partition(" ")
        name = name.lower().lstrip("/")
        admin = is_admin(self._settings, key.platform, user, manage_guild=manage_guild)
        who = {"actor": admin_id(key.platform, user), "platform": key.platform, "workspace": key.workspace}
        try:
            if probe.dedupe_keys and not await self._store.claim_events(probe.dedupe_keys):
                return Submission(Outcome.DUPLICATE)
            if name in ADMIN_COMMANDS and not admin:
                audit("admin_refused", **who, channel=key.channel, command=name)
                self._metrics.refused(key.platform, "admin")
                await _say(reply, not_admin(name), failed=True)
                return Submission(Outcome.REFUSED)
            refused = None if name in OPEN_COMMANDS or name in ADMIN_COMMANDS else await self._access.check(probe)
            if refused is not None:
                told = await self._access.tell(probe)
                self._access.audit(probe, refused, attempt="command", told=told)
                self._metrics.refused(key.platform, "access")
                if told:
                    await _say(reply, refused.text, failed=True)
                return Submission(Outcome.REFUSED)
            if name in ADMIN_COMMANDS:
                audit("admin_command", **who, channel=key.channel, command=name, arguments=audit_arguments(name, arg))
            if name == "access":
                answer = await self._access.rules.command(arg, platform=key.platform, actor=who["actor"])
            else:
                answer = await self._commands.run(text, key=key, user_id=user, admin=admin)
        except StoreUnavailable as exc:
            log.error("command %r in %s failed: %s", name, key, exc)
            await _say(reply, str(exc), failed=True)
            return Submission(Outcome.FAILED)
        await _say(reply, answer, failed=False)
        return Submission(Outcome.QUEUED)

    def connected(self, platform: str, up: bool) -> None:
        """The adapter is connected to its platform (``up``) or has lost it: ``/healthz`` is ready only while every
        adapter is connected."""
        log.debug("%s adapter %s", platform, "connected" if up else "disconnected")
        self._metrics.adapter(platform, connected=up)

    def http_routes(self, port: int | None) -> list[web.RouteDef]:
        """``/healthz`` and ``/metrics``, for an adapter whose own HTTP server listens on ``port``, when that is
        ``THREADLINE_HTTP_PORT``: the adapter adds them to its app and threadline opens no second server. Empty
        otherwise. Call it when the adapter is built (before ``threadline run`` opens its own server)."""
        return self._health.claim(port) if self._health is not None else []

    def register(self, platform: str, resumer: Resumer) -> None:
        """How this platform answers messages this process did not receive (after a crash, or from another
        replica): adapters register one when they are built."""
        self._turns.register(platform, resumer)

    async def retry(self, key: ThreadKey) -> bool:
        """Ask again the thread's newest interrupted message (a 🔁 reaction); False when there is none."""
        try:
            return await self._turns.retry(key) is not None
        except StoreUnavailable as exc:
            log.error("could not retry in %s: %s", key, exc)
            return False

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


def _is_retry(text: str) -> bool:
    return text.strip().strip("`!./").lower() == RETRY_WORD
