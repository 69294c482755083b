"""Model shutdown dates read from GET /v1/models (real SDK, fake server), and the findings the doctor prints."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import date

import openai
import pytest

from bot.model_calendar import Finding, calendar_findings, model_calendar
from tests.fakes.openai_server import FakeOpenAI

TODAY = date(2026, 12, 1)
TTS = "THREADLINE_TTS_MODEL"


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=0)
    yield sdk
    await sdk.close()


async def calendar_of(fake: FakeOpenAI) -> dict[str, date | None]:
    sdk = openai.AsyncOpenAI(base_url=await fake.start(), api_key="test", max_retries=0)
    try:
        return await model_calendar(sdk)
    finally:
        await sdk.close()
        await fake.close()


# --- reading the calendar -------------------------------------------------------------------------


async def test_calendar_lists_every_model_with_its_shutdown_date(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI):
    calendar = await model_calendar(client)
    assert set(calendar) == set(fake_openai.models)
    assert calendar["gpt-4o-mini-tts"] == date(2027, 1, 6) and calendar["tts-1-hd"] == date(2027, 1, 6)
    assert calendar["gpt-4o-transcribe"] == date(2027, 2, 26) and calendar["gpt-image-1-mini"] == date(2026, 12, 1)
    assert calendar["gpt-5-nano"] == date(2026, 12, 11)
    assert calendar["gpt-6.2-sol"] is None and calendar["gpt-realtime-2.1-mini"] is None


async def test_odd_shutdown_dates_do_not_break_the_calendar(caplog: pytest.LogCaptureFixture):
    shutdowns: dict[str, str | int] = {
        "stamp": 1_799_193_600,  # 2027-01-06 00:00 UTC as a unix timestamp
        "datetime": "2027-01-06T00:00:00Z",
        "words": "soon",
        "empty": "",
        "month": "2027-13-01",
    }
    fake = FakeOpenAI(models=[*shutdowns, "fine"], shutdowns=shutdowns)
    with caplog.at_level(logging.DEBUG, logger="threadline.model_calendar"):
        calendar = await calendar_of(fake)
    assert calendar == {
        "stamp": date(2027, 1, 6),
        "datetime": date(2027, 1, 6),
        "words": None,
        "empty": None,
        "month": None,
        "fine": None,
    }
    unreadable = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("words" in m and "'soon'" in m for m in unreadable)
    assert any("month" in m and "'2027-13-01'" in m for m in unreadable)


async def test_a_bad_key_is_an_error_for_the_caller():
    fake = FakeOpenAI(valid_keys={"right"})
    sdk = openai.AsyncOpenAI(base_url=await fake.start(), api_key="wrong", max_retries=0)
    try:
        with pytest.raises(openai.AuthenticationError):
            await model_calendar(sdk)
    finally:
        await sdk.close()
        await fake.close()


# --- findings -------------------------------------------------------------------------------------


def test_the_findings_name_the_model_the_date_and_the_setting_to_change():
    calendar = {"gpt-4o-mini-tts": date(2027, 1, 6), "gpt-5": date(2026, 11, 30), "gpt-6.2-sol": None}
    findings = calendar_findings(
        {TTS: "gpt-4o-mini-tts", "THREADLINE_MODEL": "gpt-5", "THREADLINE_IMAGE_MODEL": "dall-e-3"},
        calendar,
        today=TODAY,
    )
    assert findings == [
        Finding(
            ok=True,
            level="warn",
            line="! model gpt-4o-mini-tts (THREADLINE_TTS_MODEL) shuts down on 2027-01-06 (in 36 days): "
            "change THREADLINE_TTS_MODEL before then",
        ),
        Finding(
            ok=False,
            level="fail",
            line="✗ model gpt-5 (THREADLINE_MODEL) shut down on 2026-11-30: set THREADLINE_MODEL to a current model",
        ),
        Finding(
            ok=False,
            level="fail",
            line="✗ model dall-e-3 (THREADLINE_IMAGE_MODEL) is NOT in the models list: "
            "set THREADLINE_IMAGE_MODEL to a model this key can use",
        ),
    ]


def test_a_model_shutting_down_today_fails():
    (finding,) = calendar_findings({TTS: "tts-1"}, {"tts-1": TODAY}, today=TODAY)
    assert (finding.ok, finding.level) == (False, "fail")
    assert (
        finding.line
        == "✗ model tts-1 (THREADLINE_TTS_MODEL) shuts down today (2026-12-01): set " + TTS + " to a current model"
    )


@pytest.mark.parametrize(
    ("shutdown", "level", "words"),
    [
        (date(2026, 12, 2), "warn", "shuts down on 2026-12-02 (in 1 day)"),
        (date(2027, 3, 1), "warn", "(in 90 days)"),  # the last day of the window still warns
        (date(2027, 3, 2), "ok", "exists, shuts down on 2027-03-02"),
        (None, "ok", "exists, no shutdown announced"),
    ],
    ids=["tomorrow", "edge-of-window", "after-window", "none-announced"],
)
def test_warning_window(shutdown: date | None, level: str, words: str):
    (finding,) = calendar_findings({TTS: "m"}, {"m": shutdown}, today=TODAY, warn_days=90)
    assert finding.level == level and finding.ok and words in finding.line
    assert finding.line.startswith("! " if level == "warn" else "✓ ")


def test_per_channel_models_are_named_by_where_they_are_set():
    setting = 'per-channel model of slack:C123 (set with "model NAME")'
    (finding,) = calendar_findings({setting: "o3"}, {"o3": date(2026, 12, 11)}, today=TODAY)
    assert finding.level == "warn"
    assert finding.line == (
        f"! model o3 ({setting}) shuts down on 2026-12-11 (in 10 days): change {setting} before then"
    )


async def test_todays_defaults_pass_and_the_old_ones_do_not(client: openai.AsyncOpenAI):
    """Against the fake's model list as of 2026-12-01: the current defaults are clean; the 2025 defaults are
    all flagged before they break a turn."""
    calendar = await model_calendar(client)
    current = {
        "THREADLINE_MODEL": "gpt-6.2-sol",
        "THREADLINE_TRANSCRIPTION_MODEL": "gpt-transcribe",
        "THREADLINE_SPEECH_MODEL": "gpt-realtime-2.1-mini",
        "THREADLINE_IMAGE_MODEL": "gpt-image-2.6-sunburst",
    }
    assert all(f.level == "ok" for f in calendar_findings(current, calendar, today=TODAY))
    old = {
        "THREADLINE_MODEL": "gpt-5",
        "THREADLINE_TRANSCRIPTION_MODEL": "whisper-1",
        TTS: "gpt-4o-mini-tts",
        "THREADLINE_IMAGE_MODEL": "gpt-image-1.5",
        "THREADLINE_CHEAP_MODEL": "gpt-4.1-nano",
    }
    findings = calendar_findings(old, calendar, today=TODAY)
    assert [f.level for f in findings] == ["warn", "warn", "warn", "fail", "fail"]
    assert [f.ok for f in findings] == [True, True, True, False, False]


def test_a_finding_cannot_contradict_itself():
    with pytest.raises(ValueError, match="contradicts"):
        Finding(ok=True, level="fail", line="✗ broken")
