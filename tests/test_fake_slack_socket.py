"""The fake Slack's Socket Mode with several connections, driven by the real slack-sdk aiohttp Socket Mode client
(the one slack-bolt's handler, and so the adapter, uses): envelopes dealt over every open connection, redelivered
to another connection with ``retry_attempt`` + 1 when unacked or when their connection closes, never once acked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_server import RETRY_CONNECTION_CLOSED, RETRY_TIMEOUT, Delivery, FakeSlack


class Replica:
    """One Socket Mode client, like one bot process: it keeps every request it gets and acks those ``acks``
    allows (all by default)."""

    def __init__(self, fake: FakeSlack, acks: Callable[[SocketModeRequest], bool] = lambda _: True) -> None:
        web = AsyncWebClient(base_url=fake.api_url)
        self.client = SocketModeClient(app_token=fake.app_token, web_client=web, auto_reconnect_enabled=False)
        self.client.socket_mode_request_listeners.append(self._on_request)
        self.acks = acks
        self.received: list[SocketModeRequest] = []
        self._arrived = asyncio.Condition()

    async def _on_request(self, client: Any, request: SocketModeRequest) -> None:
        self.received.append(request)
        if self.acks(request):
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id))
        async with self._arrived:
            self._arrived.notify_all()

    async def wait_received(self, count: int, within: float = 10.0) -> None:
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)

    def got(self) -> list[tuple[str, int | None, str | None]]:
        return [(r.envelope_id, r.retry_attempt, r.retry_reason) for r in self.received]


class Replicas:
    def __init__(self, fake: FakeSlack, stack: AsyncExitStack) -> None:
        self.fake, self.stack = fake, stack

    async def connect(self, acks: Callable[[SocketModeRequest], bool] = lambda _: True) -> Replica:
        """A connected replica; replicas connect one after another, so the n-th holds connection n."""
        replica = Replica(self.fake, acks)
        self.stack.push_async_callback(replica.client.close)
        opened = self.fake.connections
        await replica.client.connect()
        await self.fake.wait_connections(opened + 1)
        return replica


@pytest.fixture
async def replicas(fake_slack: FakeSlack) -> AsyncIterator[Replicas]:
    async with AsyncExitStack() as stack:
        yield Replicas(fake_slack, stack)


def never(request: SocketModeRequest) -> bool:
    return False


def unless_marked(request: SocketModeRequest) -> bool:
    return not request.payload.get("ignore")


def message(fake: FakeSlack, text: str, **extra: Any) -> dict[str, Any]:
    return fake.event_callback(fake.user_event(text, kind="app_mention")) | extra


def history(fake: FakeSlack, envelope_id: str) -> list[tuple[int, int, str]]:
    return [(d.connection, d.attempt, d.reason) for d in fake.deliveries_of(envelope_id)]


async def test_envelopes_are_dealt_round_robin_over_every_open_connection(
    fake_slack: FakeSlack, replicas: Replicas
) -> None:
    fake = fake_slack
    first, second, third = [await replicas.connect() for _ in range(3)]
    assert fake.connections == 3

    ids = [fake.push_envelope(message(fake, f"question {n}")) for n in range(7)]
    await fake.wait_for(lambda: len(fake.acked) == 7)

    assert [d.connection for d in fake.deliveries] == [1, 2, 3, 1, 2, 3, 1]
    assert all(d.attempt == 0 and d.reason == "" for d in fake.deliveries)
    assert fake.acked == dict(zip(ids, [1, 2, 3, 1, 2, 3, 1], strict=True))
    assert sorted(r.envelope_id for r in first.received) == sorted(ids[0::3])
    assert sorted(r.envelope_id for r in second.received) == sorted(ids[1::3])
    assert sorted(r.envelope_id for r in third.received) == sorted(ids[2::3])
    assert {r.payload["event"]["text"] for r in first.received} == {"question 0", "question 3", "question 6"}


async def test_an_envelope_never_acked_is_redelivered_to_another_connection(
    fake_slack: FakeSlack, replicas: Replicas
) -> None:
    fake = fake_slack
    fake.ack_timeout = 0.2
    deaf = await replicas.connect(never)
    awake = await replicas.connect()

    ack = await fake.send_envelope(message(fake, "anyone there?"))

    (envelope_id,) = fake.acked
    await deaf.wait_received(1)
    assert ack == {} and fake.acked[envelope_id] == 2
    assert history(fake, envelope_id) == [(1, 0, ""), (2, 1, RETRY_TIMEOUT)]
    assert deaf.got() == [(envelope_id, 0, "")]
    assert awake.got() == [(envelope_id, 1, "timeout")]
    assert awake.received[0].payload["event"]["text"] == "anyone there?"


async def test_a_closed_connections_unacked_envelope_goes_at_once_to_another(
    fake_slack: FakeSlack, replicas: Replicas
) -> None:
    fake = fake_slack
    fake.ack_timeout = 600  # only the closing can move it within the wait below
    dying = await replicas.connect(never)
    survivor = await replicas.connect()
    envelope_id = fake.push_envelope(message(fake, "hello?"))
    await dying.wait_received(1)

    await dying.client.close()
    await fake.wait_for(lambda: envelope_id in fake.acked)

    assert fake.connections == 1
    assert history(fake, envelope_id) == [(1, 0, ""), (2, 1, RETRY_CONNECTION_CLOSED)]
    assert survivor.got() == [(envelope_id, 1, "connection_closed")]


async def test_an_acked_envelope_is_never_redelivered_and_an_unacked_one_at_most_three_times(
    fake_slack: FakeSlack, replicas: Replicas
) -> None:
    fake = fake_slack
    fake.ack_timeout = 0.2
    first = await replicas.connect(unless_marked)
    second = await replicas.connect(unless_marked)

    answered = await fake.send_envelope(message(fake, "acked"))
    (acked_id,) = fake.acked
    # Dealt after the acked one with the same ack timeout, its redeliveries fire later than any of the acked one's
    # would: once it is given up on, the acked one has had every chance to come back.
    ignored_id = fake.push_envelope(message(fake, "never acked", ignore=True))
    await fake.wait_for(lambda: ignored_id in fake.abandoned)
    await first.wait_received(3)
    await second.wait_received(2)

    assert answered == {}
    assert history(fake, acked_id) == [(1, 0, "")]
    assert [r.envelope_id for r in first.received + second.received].count(acked_id) == 1
    assert history(fake, ignored_id) == [(2, 0, ""), (1, 1, "timeout"), (2, 2, "timeout"), (1, 3, "timeout")]
    assert [a for i, a, _ in second.got() if i == ignored_id] == [0, 2]
    assert [a for i, a, _ in first.got() if i == ignored_id] == [1, 3]
    assert ignored_id not in fake.acked


async def test_an_envelope_waits_for_a_connection_and_a_lone_connection_gets_its_own_retries(
    fake_slack: FakeSlack, replicas: Replicas
) -> None:
    fake = fake_slack
    fake.ack_timeout = 0.2
    envelope_id = fake.push_envelope(message(fake, "sent while nobody listens"))
    assert fake.deliveries == []

    calls = 0

    def second_time(request: SocketModeRequest) -> bool:
        nonlocal calls
        calls += 1
        return calls == 2

    alone = await replicas.connect(second_time)
    await fake.wait_for(lambda: envelope_id in fake.acked)

    assert alone.got() == [(envelope_id, 0, ""), (envelope_id, 1, "timeout")]
    assert fake.deliveries == [
        Delivery(envelope_id, 1, 0, "", "events_api"),
        Delivery(envelope_id, 1, 1, "timeout", "events_api"),
    ]


async def test_an_eleventh_connection_is_refused_like_slack_does(fake_slack: FakeSlack) -> None:
    fake = fake_slack
    web = AsyncWebClient(base_url=fake.api_url)
    async with aiohttp.ClientSession() as session, AsyncExitStack() as stack:
        hellos = []
        for _ in range(fake.max_connections):
            url = (await web.apps_connections_open(app_token=fake.app_token))["url"]
            ws = await stack.enter_async_context(session.ws_connect(url))
            hellos.append((await ws.receive_json())["num_connections"])
        await fake.wait_connections(fake.max_connections)

        url = (await web.apps_connections_open(app_token=fake.app_token))["url"]
        async with session.ws_connect(url) as extra:
            refused = await extra.receive_json()
            closing = await extra.receive()
        assert fake.connections == fake.max_connections

    assert hellos == list(range(1, fake.max_connections + 1))
    assert refused["type"] == "disconnect" and refused["reason"] == "too_many_websockets"
    assert closing.type == aiohttp.WSMsgType.CLOSE
