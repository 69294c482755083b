"""The Slack rate budget on its own: what it lets through, counted per window from its callers' own stamps."""

from __future__ import annotations

import asyncio

import pytest

from adapters.slack.budget import LIMITS, Limit, SlackBudget


def busiest(stamps: list[float], window: float) -> int:
    stamps, most, first = sorted(stamps), 0, 0
    for last, stamp in enumerate(stamps):
        while stamp - stamps[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


async def test_many_callers_share_one_limit_per_window() -> None:
    window = 0.3
    budget = SlackBudget(window=window, limits={"chat.appendStream": Limit(10, 3)})
    loop = asyncio.get_running_loop()
    stamps: list[float] = []

    async def answer(channel: str) -> None:
        share = budget.workspace("T1")
        for _ in range(4):
            await share.acquire("chat.appendStream", channel=channel)
            stamps.append(loop.time())

    await asyncio.gather(*(answer(f"C{i}") for i in range(8)))  # 32 calls from 8 answers

    assert len(stamps) == 32
    assert busiest(stamps, window) <= 10, "never more than the tier in any window"


async def test_workspaces_and_methods_have_their_own_buckets_and_channels_only_for_posting() -> None:
    budget = SlackBudget(window=60.0, limits={"a": Limit(1, 1), "p": Limit(1, 1, per_channel=True)})
    one, two = budget.workspace("T1"), budget.workspace("T2")
    await one.acquire("a", channel="C1")
    assert not one.available("a", channel="C2"), "a workspace's method limit covers all its channels"
    assert two.available("a", channel="C1"), "another workspace has its own"
    await one.acquire("p", channel="C1")
    assert not one.available("p", channel="C1") and one.available("p", channel="C2"), "posting counts per channel"
    assert one.available("files.info", channel="C1"), "a method without a budget here always goes"


async def test_a_cancelled_wait_takes_nothing() -> None:
    budget = SlackBudget(window=60.0, limits={"a": Limit(1, 1)})
    share = budget.workspace("T1")
    await share.acquire("a", channel="C1")
    waiting = asyncio.create_task(share.acquire("a", channel="C1"))
    await asyncio.sleep(0)
    assert not share.available("a", channel="C1")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    bucket = budget.bucket("T1", "a", "")
    assert bucket is not None and len(bucket._sent) == 1


def test_the_limits_follow_slacks_published_tiers() -> None:
    assert LIMITS["chat.appendStream"].per_window == 100  # Tier 4
    assert LIMITS["chat.update"].per_window == 50  # Tier 3
    assert LIMITS["chat.startStream"].per_window == LIMITS["chat.stopStream"].per_window == 20  # Tier 2
    assert LIMITS["chat.postMessage"].per_channel
