"""Setting the Slack app up: the manifest, ``threadline doctor``, start-up errors, and ``threadline run`` as a
user runs it (a separate process) with the Slack variables pointed at the fakes."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters import slack as slack_adapter
from adapters.slack import SlackSettings
from adapters.slack.convert import REQUIRED_SCOPES
from bot.errors import StartupError
from bot.runtime import open_runtime
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.slack_server import DEFAULT_SCOPES, FakeSlack
from tests.helpers import spawn_threadline, split_settings, user_env

ROOT = Path(__file__).resolve().parents[1]


def slack_settings(tmp_path: Path, fake: FakeSlack, openai: FakeOpenAI, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "slack_bot_token": fake.bot_token,
        "slack_app_token": fake.app_token,
        "slack_api_url": fake.api_url,
        "slack_file_origins": [fake.origin],
    }
    values.update(overrides)
    return split_settings(tmp_path, openai.base_url, SlackSettings, **values)


async def slack_doctor(settings: Any) -> list[tuple[bool, str]]:
    core, section = settings
    async with open_runtime(core) as runtime:
        return await slack_adapter.doctor_checks(runtime.gateway, section)


# --- the manifest ------------------------------------------------------------------------------------------


def test_manifest_is_valid_yaml_with_every_scope_the_code_uses() -> None:
    manifest = yaml.safe_load((ROOT / "manifest.yaml").read_text(encoding="utf-8"))
    scopes = manifest["oauth_config"]["scopes"]["bot"]
    assert sorted(scopes) == sorted(REQUIRED_SCOPES), "manifest and code ask for exactly the same scopes"
    assert set(DEFAULT_SCOPES) == set(REQUIRED_SCOPES), "the fake grants what a manifest install grants"
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_mention", "message.im", "message.channels", "message.groups", "message.mpim"} <= events
    # Agent messaging (2026): new apps can't declare assistant_view; agent_view's events replace its own.
    assert {"app_home_opened", "app_context_changed", "agent_session_stopped"} <= events
    assert not {"assistant_thread_started", "assistant_thread_context_changed"} & events
    assert manifest["features"]["agent_view"]["agent_description"]
    assert "assistant_view" not in manifest["features"]
    assert manifest["settings"]["interactivity"]["is_enabled"] is True, "Slack delivers button clicks only then"
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == ["/threadline"]
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True, "people can DM the bot"


# --- doctor ------------------------------------------------------------------------------------------------


async def test_doctor_reports_a_healthy_slack_setup(
    tmp_path: Path, fake_slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    results = await slack_doctor(slack_settings(tmp_path, fake_slack, fake_openai))
    assert all(ok for ok, _ in results), results
    lines = "\n".join(line for _, line in results)
    assert "threadline (U0BOT) in Fake Team (T0TEAM)" in lines
    assert "Socket Mode: the app-level token is accepted" in lines
    assert [c.method for c in fake_slack.calls] == ["auth.test", "apps.connections.open"]


async def test_doctor_names_missing_scopes(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake = await FakeSlack(scopes=tuple(s for s in DEFAULT_SCOPES if s not in {"files:read", "commands"})).start()
    try:
        results = await slack_doctor(slack_settings(tmp_path, fake, fake_openai))
    finally:
        await fake.close()
    failures = [line for ok, line in results if not ok]
    assert len(failures) == 1
    assert failures[0].startswith("Slack token is missing scopes: commands, files:read.")


async def test_doctor_reports_bad_tokens(tmp_path: Path, fake_slack: FakeSlack, fake_openai: FakeOpenAI) -> None:
    bad_bot = slack_settings(tmp_path, fake_slack, fake_openai, slack_bot_token="xoxb-revoked")
    assert await slack_doctor(bad_bot) == [
        (False, f"Slack at {fake_slack.api_url} rejected SLACK_BOT_TOKEN: invalid_auth")
    ]
    bad_app = slack_settings(tmp_path, fake_slack, fake_openai, slack_app_token="xapp-revoked")
    ok, line = (await slack_doctor(bad_app))[-1]
    assert not ok and line.startswith("Slack rejected SLACK_APP_TOKEN (invalid_auth)")


# --- start-up errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"slack_bot_token": "xoxb-revoked"}, "Slack rejected SLACK_BOT_TOKEN (invalid_auth)."),
        ({"slack_app_token": "xapp-revoked"}, "Slack rejected SLACK_APP_TOKEN (invalid_auth)"),
        ({"slack_app_token": None}, "Slack needs SLACK_APP_TOKEN (Socket Mode), or SLACK_SIGNING_SECRET"),
    ],
)
async def test_adapter_refuses_to_start_with_a_clear_reason(
    tmp_path: Path, fake_slack: FakeSlack, fake_openai: FakeOpenAI, overrides: dict[str, Any], message: str
) -> None:
    core, section = slack_settings(tmp_path, fake_slack, fake_openai, **overrides)
    async with open_runtime(core) as runtime:
        adapter = slack_adapter.build(runtime.gateway, section)
        with pytest.raises(StartupError) as caught:
            await asyncio.wait_for(adapter.run(), 10)
        await adapter.close()
    assert str(caught.value).startswith(message)


# --- threadline run ------------------------------------------------------------------------------------------


def cli_env(tmp_path: Path, fake: FakeSlack, openai: FakeOpenAI, **extra: str) -> dict[str, str]:
    slack = {
        "SLACK_BOT_TOKEN": fake.bot_token,
        "SLACK_APP_TOKEN": fake.app_token,
        "SLACK_API_URL": fake.api_url,
        "SLACK_FILE_ORIGINS": fake.origin,
        "SLACK_STREAM_INTERVAL_SECS": "0.02",
    }
    return user_env(tmp_path, openai.base_url, **{**slack, **extra})


async def test_threadline_run_starts_slack_and_streams_an_answer(
    tmp_path: Path, fake_slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    fake = fake_slack
    answer = "Hello from threadline run, streamed into the thread."
    fake_openai.script(Reply(text=answer, token_interval=0.02, chunk=6))
    proc = await spawn_threadline(tmp_path, cli_env(tmp_path, fake, fake_openai), "run")  # SLACK_BOT_TOKEN is enough
    try:
        await fake.wait_connected(within=30)
        mention = fake.user_event(f"<@{fake.bot_user_id}> are you there?", kind="app_mention")
        await fake.send_envelope(fake.event_callback(mention))
        await fake.wait_for(lambda: bool(fake.calls_to("chat.stopStream")), within=20)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    output = out.decode() + err.decode()
    assert proc.returncode == 0, output
    assert fake.texts("C0GENERAL", mention["ts"]) == [answer]
    assert fake.calls_to("chat.startStream") and fake.calls_to("chat.appendStream")
    assert len(fake.calls_to("chat.stopStream")) == 1
    assert fake.bot_token not in output and fake.app_token not in output and "sk-test-secret" not in output


async def test_threadline_run_with_a_revoked_token_exits_with_the_reason(
    tmp_path: Path, fake_slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    env = cli_env(tmp_path, fake_slack, fake_openai, SLACK_BOT_TOKEN="xoxb-revoked-token")
    proc = await spawn_threadline(tmp_path, env, "run", "--adapter", "slack")
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    stderr = err.decode()
    assert proc.returncode == 1
    assert "threadline: Slack rejected SLACK_BOT_TOKEN (invalid_auth)." in stderr
    assert "Traceback" not in stderr and "xoxb-revoked-token" not in stderr


async def test_threadline_doctor_names_the_missing_scope(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake = await FakeSlack(scopes=tuple(s for s in DEFAULT_SCOPES if s != "files:write")).start()
    try:
        proc = await spawn_threadline(tmp_path, cli_env(tmp_path, fake, fake_openai), "doctor")
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await fake.close()
    stdout = out.decode()
    assert proc.returncode == 1, stdout + err.decode()
    assert "✗ Slack token is missing scopes: files:write." in stdout
    assert "✓ Slack: token works for threadline (U0BOT) in Fake Team (T0TEAM)" in stdout
