"""Slack's rate limits with many answers in flight: the fake Slack enforces the published tiers per method for the
workspace (429 with Retry-After past them, like Slack), and every answer of the adapter draws on one budget.
Windows are shrunk from Slack's minute (``SLACK_RATE_WINDOW_SECS`` and the fake's tiers alike) so the tests run
in seconds; counts per window come from the fake's own arrival stamps, never from the test's clock."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.slack_server import FakeSlack
from tests.slack_recording import recording_adapter
from tests.test_slack_e2e import CHANNEL, SlackHarness, slack

__all__ = ["slack"]  # the harness fixture, shared with test_slack_e2e

# Slack's published tiers for the methods an answer uses, calls per window (a minute at Slack).
TIERS = {"chat.startStream": 20, "chat.stopStream": 20, "chat.appendStream": 100, "chat.update": 50}


def answer_text(words: int) -> str:
    return " ".join(f"word{i}" for i in range(words))


async def crowd(slack: SlackHarness, fake_openai: FakeOpenAI, *, answers: int, window: float) -> list[str]:
    """``answers`` mentions at once in one workspace, each streamed for about a second; returns their thread ts
    once every answer is final."""
    fake = slack.fake
    fake.tier_limits = {method: (limit, window) for method, limit in TIERS.items()}
    text = answer_text(240)
    fake_openai.script(*[Reply(text=text, token_interval=0.004, chunk=8) for _ in range(answers)])
    bot = await slack.start(slack_rate_window_secs=window)
    mentions = [fake.user_event(f"<@{fake.bot_user_id}> tell me story {i}", kind="app_mention") for i in range(answers)]
    await asyncio.gather(*(bot.send(mention) for mention in mentions))
    for mention in mentions:
        messages = await bot.answered(CHANNEL, mention["ts"])
        assert [m.text for m in messages] == [text], "every answer arrives whole"
    return [str(m["ts"]) for m in mentions]


async def test_twenty_answers_streaming_at_once_stay_under_slacks_tiers(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    window = 2.0
    threads = await crowd(slack, fake_openai, answers=20, window=window)
    fake = slack.fake

    assert fake.rate_limited == [], "no 429 at all"
    for method, limit in TIERS.items():
        assert fake.busiest_window(method, window) <= limit, method
    assert len(fake.calls_to("chat.startStream")) == 20, "every answer streamed natively"
    assert fake.calls_to("chat.appendStream"), "and streamed: appends, coalesced, not only a final stop"
    streamed = {m.thread_ts for m in fake.messages if m.via == "stream"}
    assert streamed == set(threads)


async def test_a_crowd_beyond_tier_2_is_posted_and_edited_instead_of_waiting_to_start(
    slack: SlackHarness, fake_openai: FakeOpenAI
) -> None:
    window = 10.0  # long enough that every answer starts within one window
    threads = await crowd(slack, fake_openai, answers=24, window=window)
    fake = slack.fake

    assert fake.rate_limited == []
    assert fake.busiest_window("chat.startStream", window) <= 20
    by_thread = {m.thread_ts: m.via for m in fake.messages}
    assert sorted(by_thread[t] for t in threads) == ["post"] * 4 + ["stream"] * 20, "Tier 2 holds 20 starts"


async def test_a_hundred_simultaneous_mentions_cost_one_auth_test(fake_slack: FakeSlack) -> None:
    async with recording_adapter(fake_slack) as rig:
        payloads = [
            fake_slack.event_callback(fake_slack.user_event(f"<@{fake_slack.bot_user_id}> q{i}", kind="app_mention"))
            for i in range(100)
        ]
        connector = aiohttp.TCPConnector(limit=0)  # all hundred requests in flight together
        async with aiohttp.ClientSession(connector=connector) as session:
            statuses = await asyncio.gather(*(rig.deliver(p, session=session) for p in payloads))

    assert statuses == [200] * 100
    assert len(rig.gateway.submitted) == 100, "every mention reached the core"
    assert len(fake_slack.calls_to("auth.test")) == 1, "the start-up auth.test; bolt asked for no more"
