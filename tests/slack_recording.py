"""The real Slack adapter (slack-bolt's own dispatch, HTTP mode) in front of a stand-in for the core that records
what it is handed: for tests that ask what the core receives, not what the model answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from adapters.slack.adapter import SlackAdapter
from adapters.slack.settings import SlackSettings
from tests.fakes.slack_server import FakeSlack
from tests.helpers import RecordingGateway, section


@dataclass
class RecordingRig:
    adapter: SlackAdapter
    gateway: RecordingGateway
    fake: FakeSlack

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.adapter.http_port}/slack/events"

    async def deliver(self, payload: dict[str, Any], session: aiohttp.ClientSession | None = None) -> int:
        """POST one signed event and wait until bolt has run its listeners (it acks first)."""
        status, _ = await self.fake.deliver_raw(
            self.events_url, json.dumps(payload), session=session or self.gateway.http
        )
        await drain_bolt_listeners()
        return status


async def drain_bolt_listeners() -> None:
    """Wait for the listeners bolt runs after acking (process_before_response=False) to finish."""
    while pending := [
        t for t in asyncio.all_tasks() if "run_ack_function_asynchronously" in repr(t.get_coro()) and not t.done()
    ]:
        await asyncio.wait(pending)


@asynccontextmanager
async def recording_adapter(fake: FakeSlack, *, owned: bool = False, **settings: Any) -> AsyncIterator[RecordingRig]:
    """A started Slack adapter in HTTP mode against ``fake``, its core a ``RecordingGateway``."""
    async with aiohttp.ClientSession() as http:
        gateway = RecordingGateway(http, owned=owned)
        values: dict[str, Any] = {
            "slack_bot_token": fake.bot_token,
            "slack_api_url": fake.api_url,
            "slack_signing_secret": fake.signing_secret,
            "slack_http_port": 0,
            "slack_http_host": "127.0.0.1",
            "slack_file_origins": [fake.origin],
        }
        adapter = SlackAdapter(gateway, section(SlackSettings, **(values | settings)))  # type: ignore[arg-type]
        task = asyncio.create_task(adapter.run())
        await asyncio.wait_for(adapter.ready.wait(), 10)
        try:
            yield RecordingRig(adapter, gateway, fake)
        finally:
            await adapter.close()
            await asyncio.wait_for(task, 5)
