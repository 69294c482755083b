"""Files in and out of Slack.

In: a lazy, authenticated download that sends the bot token only to an allowlisted origin (scheme, host, port),
never follows a redirect, checks the size from Slack's metadata first and caps what it reads, and recognises the
HTML login page Slack returns to a token without ``files:read``. An attachment's ``source`` is its file id: another
process fetches it again through ``files.info`` (the token is added at fetch time, never stored). Out:
``files_upload_v2`` into the thread.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.convert import FILES_READ_MISSING, SlackFile, display_origin, file_from_payload, origin_allowed
from bot.errors import AttachmentError
from bot.types import Attachment, Fetch, OutgoingFile

log = logging.getLogger("threadline.slack.files")

_CHUNK = 64 * 1024


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


class SlackFiles:
    def __init__(
        self,
        *,
        client: AsyncWebClient,
        http: aiohttp.ClientSession,
        token: str,
        origins: Iterable[str],
        max_bytes: int,
    ) -> None:
        self._client = client
        self._http = http
        self._token = token
        self._origins = tuple(origins)
        self._max_bytes = max_bytes

    async def resolve(self, files: Iterable[SlackFile]) -> tuple[SlackFile, ...]:
        """Fill in Slack Connect files (``file_access: check_file_info``) through ``files.info``."""
        out = []
        for file in files:
            if file.needs_info:
                file = await self._file_info(file)
            out.append(file)
        return tuple(out)

    async def _file_info(self, file: SlackFile) -> SlackFile:
        try:
            response = await self._client.files_info(file=file.id)
        except SlackApiError as exc:
            error = exc.response.get("error", "unknown_error")
            log.warning("files.info for %s failed: %s", file.id, error)
            return dataclasses.replace(file, url="", problem=f"Slack wouldn't show me that file (files.info: {error}).")
        except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("files.info for %s failed: %s", file.id, type(exc).__name__)
            return dataclasses.replace(file, url="", problem="I couldn't reach Slack to look it up. Please try again.")
        info = response.get("file")
        if not isinstance(info, dict):
            return dataclasses.replace(file, url="", problem="Slack returned no details for that file.")
        return file_from_payload(info)

    def attachment(self, file: SlackFile) -> Attachment:
        async def fetch() -> bytes:
            return await self.download(file)

        return Attachment(file.kind, file.mimetype, file.name, file.size, fetch, file.duration_secs, source=file.id)

    def fetch_again(self, file_id: str) -> Fetch:
        """A download of an ``Attachment.source`` (the file id) in a process that never saw the event: the file
        object comes again from ``files.info``, so the same checks and errors apply as to the live download."""

        async def fetch() -> bytes:
            unknown = SlackFile(id=file_id, name=file_id, mimetype="application/octet-stream", size=None, url="")
            return await self.download(await self._file_info(unknown))

        return fetch

    async def download(self, file: SlackFile) -> bytes:
        name = file.name
        if file.problem:
            raise AttachmentError(f"I can't read {name}: {file.problem}")
        if file.external:
            raise AttachmentError(f"I can't read {name}: it is a link to a file stored outside Slack.")
        if file.size is not None and file.size > self._max_bytes:
            raise AttachmentError(f"{name} is {_mb(file.size)}; the limit is {_mb(self._max_bytes)}.")
        if not file.url:
            raise AttachmentError(f"I can't read {name}: Slack gave me no download link for it.")
        if not origin_allowed(file.url, self._origins):
            log.warning("not sending the Slack token to %s (not in SLACK_FILE_ORIGINS)", display_origin(file.url))
            raise AttachmentError(
                f"I can't read {name}: it is served from {display_origin(file.url)}, which is not one of my allowed "
                "Slack file hosts (SLACK_FILE_ORIGINS), so I won't send my Slack token there."
            )
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with self._http.get(file.url, headers=headers, allow_redirects=False) as response:
                if 300 <= response.status < 400:
                    target = display_origin(response.headers.get("Location", ""))
                    log.warning("Slack file download redirected to %s; not followed", target)
                    raise AttachmentError(
                        f"I can't read {name}: the download redirected to {target}, and I don't follow redirects "
                        "with my Slack token."
                    )
                if response.status != 200:
                    raise AttachmentError(f"I can't read {name}: Slack answered HTTP {response.status}.")
                if response.content_type == "text/html" and file.mimetype != "text/html":
                    log.warning("got an HTML page instead of file %s: the token lacks files:read", file.id)
                    raise AttachmentError(FILES_READ_MISSING.format(name=name))
                return await self._read_capped(response, name)
        except aiohttp.ClientError as exc:
            log.warning("download of file %s failed: %s", file.id, type(exc).__name__)
            raise AttachmentError(f"I couldn't download {name} from Slack. Please try again.") from exc

    async def _read_capped(self, response: aiohttp.ClientResponse, name: str) -> bytes:
        data = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK):
            data.extend(chunk)
            if len(data) > self._max_bytes:
                raise AttachmentError(f"{name} is larger than the {_mb(self._max_bytes)} limit.")
        return bytes(data)

    async def upload(self, *, channel: str, thread_ts: str, part: OutgoingFile) -> bool:
        """Post a file into the thread. False (and a log line) when Slack refuses it."""
        try:
            await self._client.files_upload_v2(
                channel=channel,
                thread_ts=thread_ts,
                file=part.data,
                filename=part.filename,
                title=part.title or part.filename,
            )
        except SlackApiError as exc:
            log.warning("upload of %s failed: %s", part.filename, exc.response.get("error", "unknown_error"))
            return False
        except (SlackClientError, aiohttp.ClientError) as exc:
            log.warning("upload of %s failed: %s", part.filename, type(exc).__name__)
            return False
        return True
