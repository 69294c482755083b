"""Slack adapter: slack-bolt ``AsyncApp`` on the shared event loop, Socket Mode or HTTP.

Socket Mode (``SLACK_APP_TOKEN``) is the default. HTTP mode serves Slack's Events API on
``SLACK_HTTP_HOST:SLACK_HTTP_PORT`` at ``/slack/events`` when both ``SLACK_SIGNING_SECRET`` and ``SLACK_HTTP_PORT``
are set. Listeners only convert, submit and return: bolt acks every event at once, and the turn runs in the
turn handler's lane for that thread.

Agent messaging (2026): each turn moves the thread's agent session to ``processing`` (Slack's stop button) and back
to ``active``; ``agent_session_stopped`` stops the running answer through the gateway. Every final answer carries
feedback buttons, whose clicks (``block_actions``) are acked at once and stored through the gateway.

Durable inbox: every submitted message carries its ``reply_address`` (``adapters.slack.address``) and its files
their ``source`` (the file id); the adapter registers itself as the gateway's ``Resumer`` for Slack, so any process
can answer a stored message (``reply_for``, which live answers go through too) and fetch its files (``fetch_for``).

Commands: ``/threadline help|model|usage`` answer privately to whoever typed them (``model`` applies to the
channel). Slack does not allow slash commands inside threads, so a thread is reset by replying ``reset`` in it
(``@threadline reset`` in channels); ``/threadline reset`` explains that.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.address import ReplyAddress
from adapters.slack.budget import SlackBudget
from adapters.slack.convert import (
    DEFAULT_BOT_NAME,
    FEEDBACK_ACTION_ID,
    PLATFORM,
    SLASH_RESET_HELP,
    BotIdentity,
    Ignored,
    SlackMessage,
    SlashCommand,
    assistant_thread,
    feedback_click,
    messages_tab_opened,
    missing_scopes,
    parse_event,
    parse_slash_command,
    session_stopped,
    short_title,
    should_answer,
    show_work_reaction,
    suggested_prompts,
    thread_title,
)
from adapters.slack.files import SlackFiles
from adapters.slack.http_guard import RequestGuard
from adapters.slack.settings import SlackSettings
from adapters.slack.stream import SESSION_METHOD, AgentSession, ReplyTarget, SlackReply, StreamOptions
from bot.answer_format import split_answer_format
from bot.errors import StartupError
from bot.gateway import Gateway
from bot.replies import TextReply
from bot.types import Fetch, IncomingMessage, OutgoingFile, ThreadKey, TurnKind

log = logging.getLogger("threadline.slack")

EVENTS_PATH = "/slack/events"
SUGGESTED_PROMPTS_TITLE = "Try one of these:"


def retry_handlers() -> list[AsyncRetryHandler]:
    """slack-sdk's own retries: connection resets, and 429s after the Retry-After delay."""
    return [AsyncConnectionErrorRetryHandler(), AsyncRateLimitErrorRetryHandler(max_retry_count=2)]


def build_client(settings: SlackSettings, http: aiohttp.ClientSession) -> AsyncWebClient:
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    return AsyncWebClient(token=token, base_url=settings.slack_api_url, session=http, retry_handlers=retry_handlers())


def _secret(value: Any) -> str:
    return value.get_secret_value() if value is not None else ""


def http_mode(settings: SlackSettings) -> bool:
    return bool(_secret(settings.slack_signing_secret)) and settings.slack_http_port is not None


def _error(exc: SlackApiError) -> str:
    return str(exc.response.get("error", "unknown_error"))


def _utc_today() -> date:
    return datetime.now(UTC).date()


class KnownIdentity(AsyncAuthorize):
    """bolt's authorization from the ``auth.test`` made at start-up. bolt's own calls ``auth.test`` for every event
    until its cache fills (76 calls for 100 simultaneous mentions in one measured run); this makes it one call."""

    def __init__(self) -> None:
        self.result = AuthorizeResult(enterprise_id=None, team_id=None)  # no token until start-up's auth.test

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult:
        return self.result


class OncePerDay:
    """Who was shown the suggested prompts today (UTC), so opening the Messages tab again doesn't repeat them.
    Kept in memory and forgotten at the next day: a restart may show them once more."""

    def __init__(self, today: Callable[[], date]) -> None:
        self._today = today
        self._day: date | None = None
        self._seen: set[tuple[str, str]] = set()

    def first_today(self, team_id: str, user: str) -> bool:
        day = self._today()
        if day != self._day:
            self._day, self._seen = day, set()
        if (team_id, user) in self._seen:
            return False
        self._seen.add((team_id, user))
        return True


class SlackAdapter:
    name = "slack"

    def __init__(self, gateway: Gateway, settings: SlackSettings, *, today: Callable[[], date] = _utc_today) -> None:
        self.gateway = gateway
        self.settings = settings
        self.client = build_client(settings, gateway.http)
        self.files = SlackFiles(
            client=self.client,
            http=gateway.http,
            token=_secret(settings.slack_bot_token),
            origins=settings.slack_file_origins,
            max_bytes=gateway.max_attachment_bytes,
        )
        self.http_mode = http_mode(settings)
        # /healthz and /metrics join this server when it listens on THREADLINE_HTTP_PORT (the core then opens none).
        self._health_routes = gateway.http_routes(settings.slack_http_port) if self.http_mode else []
        self._authorize = KnownIdentity()
        self.app = AsyncApp(
            # bolt takes the token from ``authorize`` (its client must have none, or bolt calls auth.test itself).
            client=AsyncWebClient(
                base_url=settings.slack_api_url, session=gateway.http, retry_handlers=retry_handlers()
            ),
            authorize=self._authorize,
            signing_secret=_secret(settings.slack_signing_secret),
            request_verification_enabled=self.http_mode,
            process_before_response=False,
        )
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.event("assistant_thread_started")(self._on_assistant_thread_started)  # apps on assistant_view
        self.app.event("assistant_thread_context_changed")(self._ignore)
        self.app.event("app_home_opened")(self._on_home_opened)  # agent_view: the Messages tab opened
        self.app.event("app_context_changed")(self._on_context_changed)
        self.app.event("agent_session_stopped")(self._on_session_stopped)
        self.app.event("reaction_added")(self._on_reaction)
        self.app.action(FEEDBACK_ACTION_ID)(self._on_feedback)
        self.app.command("/threadline")(self._on_command)
        self.guard = RequestGuard(path=EVENTS_PATH, signing_secret=_secret(settings.slack_signing_secret), logger=log)
        if self.http_mode:
            self.app.error(self.guard.bolt_error)
        self._options = StreamOptions.from_settings(settings)
        self.budget = SlackBudget(window=settings.slack_rate_window_secs)  # every answer's Slack calls draw on it
        self._prompts_shown = OncePerDay(today)
        self.identity: BotIdentity | None = None
        self.http_port: int | None = None
        self.ready = asyncio.Event()
        self._stopped = asyncio.Event()
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self._no_status_channels: set[str] = set()
        self._no_session_workspaces: set[str] = set()  # Slack refused agent sessions there: not asked again
        gateway.register(PLATFORM, self)  # answers stored messages this process did not receive

    # --- lifecycle -------------------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            self.identity = await self._authenticate()
            if self.http_mode:
                await self._serve_http()
            else:
                await self._connect_socket()
            self.ready.set()
            self.gateway.connected(PLATFORM, True)
            await self._stopped.wait()
        finally:
            await self._shut_down()

    async def close(self) -> None:
        self._stopped.set()
        await self._shut_down()

    async def _shut_down(self) -> None:
        self.gateway.connected(PLATFORM, False)
        socket, self._socket = self._socket, None
        runner, self._runner = self._runner, None
        if socket is not None:
            await socket.close_async()
        if runner is not None:
            await runner.cleanup()
        self.guard.close()

    async def _authenticate(self) -> BotIdentity:
        try:
            response = await self.client.auth_test()
        except SlackApiError as exc:
            raise StartupError(f"Slack rejected SLACK_BOT_TOKEN ({_error(exc)}).") from exc
        except (aiohttp.ClientError, SlackClientError, TimeoutError) as exc:
            raise StartupError(
                f"cannot reach the Slack API at {self.settings.slack_api_url} ({type(exc).__name__})."
            ) from exc
        missing = missing_scopes(response.headers.get("x-oauth-scopes"))
        if missing:
            log.warning("the Slack token lacks scopes %s; see manifest.yaml", ", ".join(missing))
        identity = BotIdentity(
            user_id=str(response.get("user_id", "")),
            bot_id=str(response.get("bot_id", "")),
            team_id=str(response.get("team_id", "")),
            name=str(response.get("user") or DEFAULT_BOT_NAME),
        )
        self._authorize.result = AuthorizeResult.from_auth_test_response(
            auth_test_response=response,
            bot_token=_secret(self.settings.slack_bot_token),
            bot_scopes=response.headers.get("x-oauth-scopes"),
        )
        log.info("Slack: connected as %s in team %s", identity.user_id, identity.team_id)
        return identity

    async def _connect_socket(self) -> None:
        app_token = _secret(self.settings.slack_app_token)
        if not app_token:
            raise StartupError(
                "Slack needs SLACK_APP_TOKEN (Socket Mode), or SLACK_SIGNING_SECRET and SLACK_HTTP_PORT (HTTP mode)."
            )
        handler = AsyncSocketModeHandler(self.app, app_token=app_token)
        try:
            # Check the app token once here, so a bad one stops start-up instead of reconnecting forever.
            handler.client.wss_uri = await handler.client.issue_new_wss_url()
        except SlackApiError as exc:
            await handler.close_async()
            raise StartupError(
                f"Slack rejected SLACK_APP_TOKEN ({_error(exc)}); it must be an app-level token (xapp-…) "
                "with the connections:write scope."
            ) from exc
        except BaseException:
            await handler.close_async()
            raise
        self._socket = handler
        await handler.connect_async()
        log.info("Slack: Socket Mode connected")

    async def _serve_http(self) -> None:
        port = self.settings.slack_http_port or 0
        web_app = self.app.web_app(path=EVENTS_PATH, port=port)
        self.guard.install(web_app)  # malformed bodies get 400 before bolt sees them; bounded rejection logs
        web_app.add_routes(self._health_routes)
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.slack_http_host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise StartupError(f"cannot listen on {self.settings.slack_http_host}:{port} ({exc.strerror}).") from exc
        self._runner = runner
        self.http_port = int(runner.addresses[0][1])
        log.info("Slack: HTTP mode listening on %s:%s%s", self.settings.slack_http_host, self.http_port, EVENTS_PATH)

    # --- events ----------------------------------------------------------------------------------------------
    async def _on_mention(self, body: dict[str, Any]) -> None:
        await self._on_event(body, "app_mention")

    async def _on_message(self, body: dict[str, Any]) -> None:
        await self._on_event(body, "message")

    async def _ignore(self) -> None:
        return None

    async def _on_context_changed(self) -> None:
        """agent_view tells what the person looks at; threadline answers from the thread alone."""
        log.debug("ignored a Slack app_context_changed event")

    async def _on_event(self, body: dict[str, Any], event_type: str) -> None:
        identity = self.identity
        if identity is None:
            return
        message = parse_event(body, identity)
        if isinstance(message, Ignored):  # edits and deletions too: an answer in progress just goes on
            log.log(
                logging.INFO if message.notable else logging.DEBUG,
                "ignored a Slack %s event: %s",
                event_type,
                message.reason,
            )
            return
        try:
            await self._handle(message, event_type)
        except Exception:
            ref = uuid.uuid4().hex[:8]
            log.exception("could not take on a message in %s (ref %s)", message.channel, ref)
            with contextlib.suppress(SlackApiError, SlackClientError, aiohttp.ClientError):
                await self.client.chat_postMessage(
                    channel=message.channel,
                    thread_ts=message.root_ts,
                    markdown_text=f"⚠️ Sorry, something went wrong on my side (ref {ref}).",
                )

    async def _handle(self, message: SlackMessage, event_type: str) -> None:
        owned = await self.gateway.owns(message.key)
        if not should_answer(
            message, event_type=event_type, thread_owned=owned, require_mention=self.settings.slack_require_mention
        ):
            return
        if message.thread_command:
            await self._thread_command(message, message.thread_command)
            return
        files = await self.files.resolve(message.files)
        # The thread's first turn creates its agent session, titled after the message.
        address = ReplyAddress.of_message(message, title=None if owned else thread_title(message))
        answer_format, text = split_answer_format(message.text)
        incoming = IncomingMessage(
            key=message.key,
            user_id=message.user,
            text=text,
            answer_format=answer_format,
            dedupe_keys=message.dedupe_keys,
            attachments=tuple(self.files.attachment(file) for file in files),
            is_dm=message.is_dm,
            reply_address=address.as_dict(),
        )
        reply = self.reply_for(incoming.key, incoming.reply_address, posted=None)
        submission = await self.gateway.submit(incoming, reply)
        if submission.accepted and message.is_dm and not owned:
            await self._set_title(message)

    async def _imagine(self, ack: Any, command: SlashCommand) -> None:
        """``/threadline imagine PROMPT``: slash commands can't run in threads, so the request is posted in the
        channel and the image is drawn in that post's thread (follow-ups there edit it)."""
        prompt = command.argument
        probe = IncomingMessage(key=command.key, user_id=command.user, text=prompt, is_dm=command.is_dm)
        refusal = await self.gateway.refusal(probe)
        if refusal or not prompt:
            await ack(
                text=refusal or "Tell me what to draw: `/threadline imagine a red bicycle`.", response_type="ephemeral"
            )
            return
        await ack()
        root = await self.client.chat_postMessage(
            channel=command.channel, markdown_text=f"<@{command.user}> asked me to draw: {prompt}"
        )
        root_ts = str(root.get("ts") or "")
        target = ReplyTarget(
            channel=command.channel,
            thread_ts=root_ts,
            recipient_user_id=command.user,
            recipient_team_id=command.team_id,
        )
        address = ReplyAddress(target, team_id=command.team_id, is_dm=command.is_dm, title=short_title(prompt))
        incoming = IncomingMessage(
            key=ThreadKey(command.key.platform, command.team_id, command.channel, root_ts),
            user_id=command.user,
            text=prompt,
            is_dm=command.is_dm,
            kind=TurnKind.IMAGINE,
            dedupe_keys=(f"slack:command:{command.trigger_id}",) if command.trigger_id else (),
            reply_address=address.as_dict(),
        )
        await self.gateway.submit(incoming, self.reply_for(incoming.key, incoming.reply_address, posted=None))

    # --- replies (the Resumer protocol) ------------------------------------------------------------------------
    def reply_for(self, key: ThreadKey, address: Mapping[str, str], *, posted: str | None) -> SlackReply:
        """The reply of one answer, at a ``ReplyAddress`` in its stored form: live answers are built here too.
        ``posted`` names a message an interrupted attempt posted there: the answer takes it over."""
        where = ReplyAddress.from_dict(address)
        target, is_dm, team_id = where.target, where.is_dm, where.team_id
        channel, thread_ts = target.channel, target.thread_ts

        async def upload(part: OutgoingFile) -> bool:
            return await self.files.upload(channel=channel, thread_ts=thread_ts, part=part)

        # A channel that refused the status line is not asked again; DMs hold both assistant threads and
        # plain ones, so a refusal there says nothing about the next thread.
        return SlackReply(
            client=self.client,
            target=target,
            options=self._options,
            upload=upload,
            budget=self.budget.workspace(team_id),
            status_enabled=is_dm or channel not in self._no_status_channels,
            on_status_unavailable=None if is_dm else self._no_status_channels.add,
            session=self._session_for(team_id, where.title),
            posted=posted,
        )

    def fetch_for(self, key: ThreadKey, source: str) -> Fetch:
        """Download a stored attachment again from its ``source`` (its Slack file id), with the bot token."""
        return self.files.fetch_again(source)

    def _session_for(self, team_id: str, title: str | None) -> AgentSession | None:
        """The answer's agent session, unless Slack refused sessions in this workspace before."""
        if team_id in self._no_session_workspaces:
            return None

        def refused(reason: str) -> None:
            self._no_session_workspaces.add(team_id)

        return AgentSession(title=title, on_refused=refused)

    async def _on_session_stopped(self, body: dict[str, Any]) -> None:
        """Someone pressed the stop button (bolt has acked). The running answer ends with "(stopped)" through its
        own reply. With nothing running, nothing is posted; the session goes back to active, since a turn cut
        short by a restart can leave it processing."""
        identity = self.identity
        stopped = session_stopped(body, identity.team_id if identity else "")
        if stopped is None:
            log.info("ignored an agent_session_stopped event that names no thread")
            return
        if await self.gateway.stop(stopped.key):
            return
        team, channel = stopped.key.workspace, stopped.key.channel
        if team in self._no_session_workspaces:
            return
        await self.budget.workspace(team).acquire(SESSION_METHOD, channel=channel)
        try:
            await self.client.agents_sessions_setStatus(
                channel_id=channel, thread_ts=stopped.key.thread, status="active"
            )
        except (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.info("could not move the stopped session in %s back to active (%s)", channel, type(exc).__name__)

    async def _on_reaction(self, body: dict[str, Any]) -> None:
        """A 🔍 on one of the bot's answers: the code behind it is posted in its thread (the engine knows the
        answer's message, so its thread). Other reactions, and ones on messages it does not know, are ignored."""
        identity = self.identity
        reaction = show_work_reaction(body, identity.team_id if identity else "")
        if reaction is None:
            return
        key = await self.gateway.answer_thread("slack", reaction.ref)
        if key is None:
            log.info("ignored a show-work reaction on %s: not one of my answers", reaction.ref)
            return
        incoming = IncomingMessage(
            key=key,
            user_id=reaction.user,
            text="show work",
            kind=TurnKind.SHOW_WORK,
            target=reaction.ref,
            dedupe_keys=(f"slack:event:{reaction.event_id}",),
            is_dm=reaction.channel.startswith("D"),
        )
        target = ReplyTarget(
            channel=reaction.channel,
            thread_ts=key.thread,
            recipient_user_id=reaction.user,
            recipient_team_id=reaction.team_id,
        )
        address = ReplyAddress(target, team_id=key.workspace, is_dm=incoming.is_dm)
        incoming = dataclasses.replace(incoming, reply_address=address.as_dict())
        await self.gateway.submit(incoming, self.reply_for(key, incoming.reply_address, posted=None))

    async def _on_feedback(self, ack: Any, body: dict[str, Any]) -> None:
        """A click on an answer's feedback buttons: acked first (Slack wants it within 3 s), then stored."""
        await ack()
        identity = self.identity
        click = feedback_click(body, identity.team_id if identity else "")
        if click is None:
            log.info("ignored a feedback click that names no answer")
            return
        try:
            await self.gateway.feedback(click.key, turn=click.turn, user=click.user, value=click.value)
        except Exception:
            log.exception("could not keep the feedback on an answer in %s", click.key)

    async def _thread_command(self, message: SlackMessage, line: str) -> None:
        """``reset`` or ``voice on|off`` as the whole text of a message in a thread: it applies to that thread."""

        async def post(text: str) -> None:
            await self.client.chat_postMessage(channel=message.channel, thread_ts=message.root_ts, markdown_text=text)

        await self.gateway.command(
            line,
            key=message.key,
            user=message.user,
            is_dm=message.is_dm,
            dedupe_keys=message.dedupe_keys,
            reply=TextReply(post),
        )

    async def _set_title(self, message: SlackMessage) -> None:
        try:
            await self.client.assistant_threads_setTitle(
                channel_id=message.channel, thread_ts=message.root_ts, title=thread_title(message)
            )
        except SlackApiError as exc:
            log.debug("no thread title in %s (%s)", message.channel, _error(exc))

    async def _on_assistant_thread_started(self, body: dict[str, Any]) -> None:
        where = assistant_thread(body)
        prompts = suggested_prompts(self.settings.slack_suggested_prompts)
        if where is None or not prompts:
            return
        channel, thread_ts = where
        try:
            await self.client.assistant_threads_setSuggestedPrompts(
                channel_id=channel, thread_ts=thread_ts, title=SUGGESTED_PROMPTS_TITLE, prompts=prompts
            )
        except SlackApiError as exc:
            log.warning("could not show suggested prompts in %s (%s)", channel, _error(exc))

    async def _on_home_opened(self, body: dict[str, Any]) -> None:
        """agent_view's start of a conversation is the Messages tab opening. Its prompts are set on the DM itself:
        Slack documents ``thread_ts`` as for assistant_view apps only (an agent app's call with it silently fails;
        without it the prompts sit at the top of the conversation). At most once per person per day."""
        opened = messages_tab_opened(body)
        prompts = suggested_prompts(self.settings.slack_suggested_prompts)
        if opened is None or not prompts:
            return
        if not opened.channel:
            log.info("the Messages tab opened without naming its DM (user %s); no suggested prompts", opened.user)
            return
        if not self._prompts_shown.first_today(opened.team_id, opened.user):
            return
        try:
            await self.client.assistant_threads_setSuggestedPrompts(
                channel_id=opened.channel, title=SUGGESTED_PROMPTS_TITLE, prompts=prompts
            )
        except SlackApiError as exc:
            log.warning("could not show suggested prompts in %s (%s)", opened.channel, _error(exc))

    async def _on_command(self, ack: Any, body: dict[str, Any]) -> None:
        command = parse_slash_command(body)
        if command.name == "imagine":
            await self._imagine(ack, command)
            return
        if command.name == "reset":
            text = SLASH_RESET_HELP
        else:
            reply = TextReply()
            await self.gateway.command(
                command.text, key=command.key, user=command.user, is_dm=command.is_dm, reply=reply
            )
            text = reply.text
        if not text:  # a refused user already told within the hour (THREADLINE_REFUSAL_REPLIES): nothing to show
            await ack()
            return
        await ack(text=text, response_type="ephemeral")


async def doctor_checks(gateway: Gateway, settings: SlackSettings) -> list[tuple[bool, str]]:
    """auth.test, the token's scopes (by name), and the connection mode's credentials."""
    if not settings.configured:
        return [(False, "SLACK_BOT_TOKEN is not set")]
    client = build_client(settings, gateway.http)
    where = settings.slack_api_url
    try:
        response = await client.auth_test()
    except SlackApiError as exc:
        return [(False, f"Slack at {where} rejected SLACK_BOT_TOKEN: {_error(exc)}")]
    except (aiohttp.ClientError, SlackClientError, TimeoutError) as exc:
        return [(False, f"Slack at {where} is unreachable ({type(exc).__name__})")]
    results = [
        (
            True,
            f"Slack: token works for {response.get('user', '?')} ({response.get('user_id', '?')}) "
            f"in {response.get('team', '?')} ({response.get('team_id', '?')})",
        )
    ]
    header = response.headers.get("x-oauth-scopes")
    missing = missing_scopes(header)
    if header is None:
        results.append((False, "Slack did not report the token's scopes (no x-oauth-scopes header)"))
    elif missing:
        results.append(
            (
                False,
                f"Slack token is missing scopes: {', '.join(missing)}. Add them under OAuth & Permissions "
                "(manifest.yaml lists them all) and reinstall the app.",
            )
        )
    else:
        results.append((True, "Slack token has every scope threadline needs"))
    results.append(await _check_mode(settings, client))
    return results


async def _check_mode(settings: SlackSettings, client: AsyncWebClient) -> tuple[bool, str]:
    if http_mode(settings):
        return True, (
            f"Slack HTTP mode: Slack must send events to https://<this host>:{settings.slack_http_port}{EVENTS_PATH}"
        )
    app_token = _secret(settings.slack_app_token)
    if not app_token:
        return False, "set SLACK_APP_TOKEN (Socket Mode), or SLACK_SIGNING_SECRET and SLACK_HTTP_PORT (HTTP mode)"
    try:
        await client.apps_connections_open(app_token=app_token)
    except SlackApiError as exc:
        return False, (
            f"Slack rejected SLACK_APP_TOKEN ({_error(exc)}): use an app-level token (xapp-…) with connections:write"
        )
    except (aiohttp.ClientError, SlackClientError, TimeoutError) as exc:
        return False, f"Slack Socket Mode check failed ({type(exc).__name__})"
    return True, "Slack Socket Mode: the app-level token is accepted"


__all__ = ["SlackAdapter", "doctor_checks"]
