"""Charts and ``show work`` on Slack and Discord, end to end (the real slack-bolt / discord.py against the platform
fakes, the real core and openai SDK against the fake OpenAI): the seed's spreadsheet sent with a mention comes back
as a chart image in the thread, and a 🔍 reaction on the answer (or ``show work`` in the thread) posts the code."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.test_containers_e2e import XLSX, sales_xlsx
from tests.test_discord_e2e import Harness, thread_of
from tests.test_slack_e2e import CHANNEL, SlackHarness

SHOWN = "The code behind that answer"


def is_png(data: bytes | None) -> bool:
    return data is not None and Image.open(io.BytesIO(data)).format == "PNG"


# --- Slack ----------------------------------------------------------------------------------------------------------


@pytest.fixture
async def slack(tmp_path: Path, fake_slack: FakeSlack, fake_openai: FakeOpenAI) -> AsyncIterator[SlackHarness]:
    harness = SlackHarness(tmp_path, fake_slack, fake_openai)
    yield harness
    await harness.close()


async def test_slack_chart_reaches_the_thread_and_a_magnifier_shows_its_code(
    slack: SlackHarness, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="threadline.slack")
    fake = slack.fake
    bot = await slack.start(tools=["code_interpreter"])
    workbook = sales_xlsx()
    url = fake.host_file("sales.xlsx", workbook, XLSX)
    files = [fake.file_object("sales.xlsx", XLSX, url, len(workbook))]
    mention = fake.user_event(
        f"<@{fake.bot_user_id}> plot the sales as a line chart", kind="app_mention", files=files, thread_ts=None
    )
    await bot.send(mention)
    messages = await bot.answered(CHANNEL, mention["ts"], 2)

    (upload,) = fake.uploads.values()
    assert upload.filename == "chart.png" and is_png(upload.data) and upload.thread_ts == mention["ts"]
    (answer,) = [m for m in messages if m.via != "upload"]
    assert "plot the sales" in answer.text

    await bot.send(fake.reaction_added(answer, reaction="mag"))
    await fake.wait_for(lambda: any(SHOWN in m.text for m in fake.thread(CHANNEL, mention["ts"])))
    await bot.runtime.gateway.wait_idle()
    (shown,) = [m for m in fake.thread(CHANNEL, mention["ts"]) if SHOWN in m.text]
    assert "fontManager.addfont(" in shown.text and "pd.read_excel(" in shown.text and "read 9 values" in shown.text

    other = fake.user_event("just a message", channel=CHANNEL)
    shown_before = len(fake.thread(CHANNEL, mention["ts"]))
    await bot.send(fake.reaction_added(other, reaction="mag"))  # not one of my answers: nothing happens
    await bot.send(fake.reaction_added(answer, reaction="tada"))  # another emoji: nothing happens
    await fake.wait_for(lambda: "ignored a show-work reaction" in caplog.text)
    await bot.send(fake.user_event("show work", channel=CHANNEL, thread_ts=mention["ts"]))
    await fake.wait_for(lambda: sum(SHOWN in m.text for m in fake.thread(CHANNEL, mention["ts"])) == 2)
    await bot.runtime.gateway.wait_idle()
    assert len(fake.thread(CHANNEL, mention["ts"])) == shown_before + 1, "only the thread's own show work"


# --- Discord --------------------------------------------------------------------------------------------------------


@pytest.fixture
async def harness(tmp_path: Path, fake_discord: FakeDiscord, fake_openai: FakeOpenAI) -> AsyncIterator[Harness]:
    h = Harness(tmp_path, fake_discord, fake_openai)
    yield h
    await h.close()


async def test_discord_chart_reaches_the_thread_and_a_magnifier_shows_its_code(
    harness: Harness, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    fake = fake_discord
    bot = await harness.start(tools=["code_interpreter"], discord_feedback_reactions=False)
    attachment = fake.attachment(sales_xlsx(), "sales.xlsx", XLSX)
    await fake.user_message(
        fake.channel_id, "plot the sales as a line chart", mention_bot=True, attachments=[attachment]
    )
    await fake.wait_for(lambda: fake.threads_created, 5, "a thread")
    tid = thread_of(fake)
    await fake.wait_for(lambda: any(w.files for w in fake.writes_in(tid)), 15, "the chart")
    await bot.idle()
    (sent,) = [w for w in fake.writes_in(tid) if w.files]
    assert sent.files[0].filename == "chart.png" and is_png(sent.files[0].data)

    answer = fake.bot_messages_in(tid)[-1]
    await fake.user_reaction(answer, "🔍")
    await fake.wait_for(lambda: SHOWN in fake.text_in(tid), 15, "the code")
    await bot.idle()
    shown = fake.text_in(tid)
    assert "fontManager.addfont(" in shown and "pd.read_excel(" in shown and "read 9 values" in shown

    await fake.user_message(tid, "show work")
    await fake.wait_for(lambda: fake.text_in(tid).count(SHOWN) == 2, 15, "the code again")
    await bot.idle()
