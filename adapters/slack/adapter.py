"""Slack adapter: slack-bolt ``AsyncApp`` on the shared event loop, Socket Mode or HTTP.

Socket Mode (``SLACK_APP_TOKEN``) is the default. HTTP mode serves Slack's Events API on
``SLACK_HTTP_HOST:SLACK_HTTP_PORT`` at ``/slack/events`` when both ``SLACK_SIGNING_SECRET`` and ``SLACK_HTTP_PORT``
are set. Listeners only convert, submit and return: bolt acks every event at once, and the turn runs in the
turn handler's lane for that thread.

Commands: ``/threadline help|model|usage`` answer privately to whoever typed them (``model`` applies to the
channel). Slack does not allow slash commands inside threads, so a thread is reset by replying ``reset`` in it
(``@threadline reset`` in channels); ``/threadline reset`` explains that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.convert import (
    SLASH_RESET_HELP,
    BotIdentity,
    Ignored,
    SlackMessage,
    SlashCommand,
    assistant_thread,
    missing_scopes,
    parse_event,
    parse_slash_command,
    should_answer,
    suggested_prompts,
    thread_title,
)
from adapters.slack.files import SlackFiles
from adapters.slack.http_guard import RequestGuard
from adapters.slack.settings import SlackSettings
from adapters.slack.stream import ReplyTarget, SlackReply, StreamOptions
from bot.errors import StartupError
from bot.gateway import Gateway
from bot.replies import TextReply
from bot.types import IncomingMessage, OutgoingFile, ThreadKey, TurnKind

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


class SlackAdapter:
    name = "slack"

    def __init__(self, gateway: Gateway, settings: SlackSettings) -> None:
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
        self.app = AsyncApp(
            client=self.client,
            signing_secret=_secret(settings.slack_signing_secret),
            request_verification_enabled=self.http_mode,
            process_before_response=False,
        )
        self.app.event("app_mention")(self._on_mention)
        self.app.event("message")(self._on_message)
        self.app.event("assistant_thread_started")(self._on_assistant_thread_started)
        self.app.event("assistant_thread_context_changed")(self._ignore)
        self.app.command("/threadline")(self._on_command)
        self.guard = RequestGuard(path=EVENTS_PATH, signing_secret=_secret(settings.slack_signing_secret), logger=log)
        if self.http_mode:
            self.app.error(self.guard.bolt_error)
        self._options = StreamOptions.from_settings(settings)
        self.identity: BotIdentity | None = None
        self.http_port: int | None = None
        self.ready = asyncio.Event()
        self._stopped = asyncio.Event()
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self._no_status_channels: set[str] = set()

    # --- lifecycle -------------------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            self.identity = await self._authenticate()
            if self.http_mode:
                await self._serve_http()
            else:
                await self._connect_socket()
            self.ready.set()
            await self._stopped.wait()
        finally:
            await self._shut_down()

    async def close(self) -> None:
        self._stopped.set()
        await self._shut_down()

    async def _shut_down(self) -> None:
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

    async def _on_event(self, body: dict[str, Any], event_type: str) -> None:
        identity = self.identity
        if identity is None:
            return
        message = parse_event(body, identity)
        if isinstance(message, Ignored):  # edits and deletions too: an answer in progress just goes on
            log.debug("ignored a Slack %s event: %s", event_type, message.reason)
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
        incoming = IncomingMessage(
            key=message.key,
            user_id=message.user,
            text=message.text,
            dedupe_keys=message.dedupe_keys,
            attachments=tuple(self.files.attachment(file) for file in files),
            is_dm=message.is_dm,
        )
        submission = await self.gateway.submit(incoming, self._reply_for(message))
        if submission.accepted and message.is_dm and not owned:
            await self._set_title(message)

    async def _imagine(self, ack: Any, command: SlashCommand) -> None:
        """``/threadline imagine PROMPT``: slash commands can't run in threads, so the request is posted in the
        channel and the image is drawn in that post's thread (follow-ups there edit it)."""
        prompt = command.argument
        probe = IncomingMessage(key=command.key, user_id=command.user, text=prompt, is_dm=command.is_dm)
        refusal = self.gateway.refusal(probe)
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
        incoming = IncomingMessage(
            key=ThreadKey(command.key.platform, command.team_id, command.channel, root_ts),
            user_id=command.user,
            text=prompt,
            is_dm=command.is_dm,
            kind=TurnKind.IMAGINE,
            dedupe_keys=(f"slack:command:{command.trigger_id}",) if command.trigger_id else (),
        )
        target = ReplyTarget(
            channel=command.channel,
            thread_ts=root_ts,
            recipient_user_id=command.user,
            recipient_team_id=command.team_id,
        )
        await self.gateway.submit(incoming, self._reply_to(target, is_dm=command.is_dm))

    def _reply_for(self, message: SlackMessage) -> SlackReply:
        target = ReplyTarget(
            channel=message.channel,
            thread_ts=message.root_ts,
            recipient_user_id=message.user,
            recipient_team_id=message.user_team,
        )
        return self._reply_to(target, is_dm=message.is_dm)

    def _reply_to(self, target: ReplyTarget, *, is_dm: bool) -> SlackReply:
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
            status_enabled=is_dm or channel not in self._no_status_channels,
            on_status_unavailable=None if is_dm else self._no_status_channels.add,
        )

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
