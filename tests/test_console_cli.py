"""The CLI and console adapter as a new user meets them: a real `threadline` process against the fake OpenAI."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import sys
from pathlib import Path

import pytest

from adapters.console import ConsoleAdapter
from bot.runtime import open_runtime
from bot.types import ThreadKey
from tests.fakes import media
from tests.fakes.openai_server import FakeOpenAI, Reply, audio_seconds
from tests.fakes.realtime import Fault, read_seconds
from tests.helpers import make_settings, spawn_threadline, user_env


def _env(tmp_path: Path, base_url: str, **extra: str) -> dict[str, str]:
    return user_env(tmp_path, base_url, **{"THREADLINE_DATABASE": str(tmp_path / "db" / "threadline.db"), **extra})


async def _threadline(tmp_path: Path, env: dict[str, str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    proc = await spawn_threadline(tmp_path, env, *args)
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_version() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--version", stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0 and out.decode().startswith("threadline ")


async def test_piped_console_is_one_thread_and_survives_a_restart(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    env = _env(tmp_path, fake_openai.base_url)
    code, out, err = await _threadline(tmp_path, env, "run", stdin="hello\nwhat did I just say?\n")
    assert code == 0, err
    answers = [line for line in out.splitlines() if line.startswith("threadline> ")]
    assert len(answers) == 2
    assert "hello" in answers[1], "the second answer knows the first turn"
    (conv,) = fake_openai.conversations.values()
    assert len(fake_openai.responses_for(conv.id)) == 2, "both turns went to one conversation"
    assert "sk-test-secret" not in out + err

    code, out, err = await _threadline(tmp_path, env, "run", stdin="and now?\n")
    assert code == 0, err
    assert len(fake_openai.conversations) == 1, "a restart with the same database reuses the conversation"
    assert len(fake_openai.responses_for(conv.id)) == 3
    assert "what did I just say?" in out


async def test_a_refused_console_user_is_told_once_per_line_and_nothing_is_claimed(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    env = _env(tmp_path, fake_openai.base_url, THREADLINE_ALLOWED_USERS="someone-else")
    code, out, err = await _threadline(tmp_path, env, "run", stdin="hello\n/usage\n/help\n")
    assert code == 0, err
    assert out.count("not on this bot's list") == 2, "the message and /usage are refused; /help is not"
    assert "Commands:" in out
    assert not [r for r in fake_openai.requests if r.path.startswith(("/v1/responses", "/v1/conversations"))]
    async with open_runtime(make_settings(tmp_path, fake_openai.base_url, database=env["THREADLINE_DATABASE"])) as rt:
        assert await rt.gateway.latest_thread("console") is None, "a refused message claims no thread"


async def test_console_commands_new_attach_and_errors(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    picture = tmp_path / "cat.png"
    picture.write_bytes(media.png(40, 30, (10, 200, 10)))
    script = (
        f"first thread\n/attach {picture}\nwhat is this?\n/attach {tmp_path}/missing.png\n/new\nsecond thread\n/usage\n"
    )
    fake_openai.script(Reply(text="one"), Reply(text="a green picture"), Reply(text="two"))
    code, out, err = await _threadline(tmp_path, _env(tmp_path, fake_openai.base_url), "run", stdin=script)
    assert code == 0, err
    assert "threadline> a green picture" in out and "No such file" in out
    assert len(fake_openai.conversations) == 2, "/new starts a new conversation"
    first_conv = next(iter(fake_openai.conversations.values()))
    bodies = fake_openai.responses_for(first_conv.id)
    assert [p["type"] for p in bodies[1]["input"][0]["content"]] == ["input_text", "input_image"]
    assert "This month you used" in out


async def test_console_streams_text_as_it_arrives(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    writes: list[str] = []

    class Recording(io.StringIO):
        def write(self, s: str) -> int:
            writes.append(s)
            return super().write(s)

    fake_openai.script(Reply(text="streaming answer in pieces", chunk=4))
    async with open_runtime(make_settings(tmp_path, fake_openai.base_url)) as runtime:
        out = Recording()
        adapter = ConsoleAdapter(runtime.gateway, stdin=io.StringIO("go\n"), out=out, err=io.StringIO())
        await adapter.run()
    assert out.getvalue() == "threadline> streaming answer in pieces\n"
    assert len([w for w in writes if w and w in "streaming answer in pieces"]) >= 5, "text arrives in deltas"


async def test_model_error_does_not_stop_the_console(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply(status=500), Reply(text="recovered"))
    code, out, err = await _threadline(tmp_path, _env(tmp_path, fake_openai.base_url), "run", stdin="a\nb\n")
    assert code == 0, err
    assert "⚠ OpenAI had a server error" in out and "threadline> recovered" in out
    assert "Traceback" not in out


async def test_doctor_passes_against_a_good_setup(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    code, out, err = await _threadline(tmp_path, _env(tmp_path, fake_openai.base_url), "doctor")
    assert code == 0, out + err
    assert "key accepted" in out and "model gpt-6.2-sol (THREADLINE_MODEL) exists" in out and "writable" in out
    assert "adapters configured: none (console only)" in out


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"THREADLINE_MODEL": "gpt-nonexistent"}, "model gpt-nonexistent (THREADLINE_MODEL) is NOT in the models list"),
        ({"OPENAI_API_KEY": "sk-wrong-key-123"}, "API key was rejected"),
        ({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}, "couldn't reach OpenAI"),
        ({"THREADLINE_DATABASE": "/proc/threadline/forbidden.db"}, "is not writable"),
    ],
)
async def test_doctor_fails_clearly(
    tmp_path: Path, fake_openai: FakeOpenAI, extra: dict[str, str], expected: str
) -> None:
    fake_openai.valid_keys = {"sk-test-secret"}
    code, out, err = await _threadline(tmp_path, _env(tmp_path, fake_openai.base_url, **extra), "doctor")
    assert code == 1
    assert expected in out, out + err
    assert "Traceback" not in out + err and "sk-wrong-key-123" not in out + err


async def test_missing_key_is_a_clear_start_error(tmp_path: Path) -> None:
    env = _env(tmp_path, "")
    del env["OPENAI_BASE_URL"], env["OPENAI_API_KEY"]
    code, out, err = await _threadline(tmp_path, env, "run", stdin="hi\n")
    assert code == 2 and out == "" and "OPENAI_API_KEY is not set" in err and "Traceback" not in err


async def test_console_voice_mode_writes_audio_made_through_the_realtime_api(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(text="Hello there."), Reply(text="Quiet now."))
    stdin = "/voice on\nsay hello\n/voice off\nand again\n"
    code, out, err = await _threadline(tmp_path, _env(tmp_path, fake_openai.base_url), "run", stdin=stdin)
    assert code == 0, err
    assert "Spoken replies are on in this thread." in out and "Spoken replies are off in this thread." in out
    saved = re.findall(r"\[audio saved to (\S+)\]", out)
    assert len(saved) == 1, "one spoken reply: voice was on for the first question only"
    data = await asyncio.to_thread(Path(saved[0]).read_bytes)
    assert audio_seconds(data) == pytest.approx(read_seconds("Hello there.", 15.0), abs=0.1)
    assert fake_openai.realtime.models == ["gpt-realtime-2.1-mini"]
    assert not [r for r in fake_openai.requests if r.path == "/v1/audio/speech"]


async def test_a_failed_spoken_reply_keeps_the_text_and_says_so(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.realtime.fault = Fault.ERROR
    fake_openai.script(Reply(text="Still here in writing."))
    env = _env(tmp_path, fake_openai.base_url, THREADLINE_VOICE_REPLIES="always")
    code, out, err = await _threadline(tmp_path, env, "run", stdin="talk to me\n")
    assert code == 0, err
    assert "threadline> Still here in writing." in out and "couldn't record a voice reply" in out
    assert "[audio saved" not in out and "Traceback" not in out + err


async def test_console_imagine_saves_the_image_and_a_follow_up_edits_it(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    stdin = "/imagine a red bicycle\nnow make it blue\n"
    code, out, err = await _threadline(tmp_path, _env(tmp_path, fake_openai.base_url), "run", stdin=stdin)
    assert code == 0, err
    saved = re.findall(r"\[image saved to (\S+)\]", out)
    assert len(saved) == 2, out
    drawn, edited = [await asyncio.to_thread(Path(p).read_bytes) for p in saved]
    (generation,) = [r for r in fake_openai.requests if r.path == "/v1/images/generations"]
    assert generation.json["prompt"] == "a red bicycle" and generation.json["model"] == "gpt-image-2.6-sunburst"
    (edit,) = [r for r in fake_openai.requests if r.path == "/v1/images/edits"]
    assert edit.form["prompt"] == "now make it blue" and edit.form["image"].data == drawn
    assert edited != drawn and edited[:8] == b"\x89PNG\r\n\x1a\n"
    assert "preview saved to" in err, "the partial previews were shown too"


async def test_console_translates_an_attached_voice_note(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    note = tmp_path / "nota.ogg"
    note.write_bytes(media.ogg_opus_voice(1.0))
    fake_openai.transcript = "buenos días a todos"
    fake_openai.script(Reply(text="Good morning, everyone."))
    stdin = f"/attach {note}\ntranslate\n"
    code, out, err = await _threadline(tmp_path, _env(tmp_path, fake_openai.base_url), "run", stdin=stdin)
    assert code == 0, err
    assert "threadline> Good morning, everyone." in out
    (conv,) = fake_openai.conversations.values()
    (body,) = fake_openai.responses_for(conv.id)
    texts = [part["text"] for part in body["input"][0]["content"]]
    assert texts[0] == "[Audio file nota.ogg, transcribed]: buenos días a todos" and "into English" in texts[1]
    assert not [r for r in fake_openai.requests if "translations" in r.path]


async def test_ctrl_c_stops_the_answer_in_progress_and_the_console_goes_on(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    long = " ".join(f"word{i}" for i in range(300))
    fake_openai.script(Reply(text=long, token_interval=0.02, chunk=8), Reply(text="Still here."))
    proc = await spawn_threadline(tmp_path, _env(tmp_path, fake_openai.base_url), "run")
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"talk a lot\n")
    await proc.stdin.drain()
    first = await asyncio.wait_for(proc.stdout.readuntil(b"word20"), 20)
    assert first.startswith(b"threadline> ")
    proc.send_signal(signal.SIGINT)
    proc.stdin.write(b"are you there?\n")
    proc.stdin.close()
    rest, err = await asyncio.wait_for(proc.communicate(), 20)
    out = (first + rest).decode()
    assert proc.returncode == 0, err.decode()
    assert "_(stopped)_" in out and "threadline> Still here." in out, out
    assert long not in out, "the answer was cut short"


async def test_feedback_command_prints_the_latest_feedback(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    env = _env(tmp_path, fake_openai.base_url)
    code, out, _ = await _threadline(tmp_path, env, "feedback")
    assert code == 0 and out.strip() == "no feedback yet"
    settings = make_settings(tmp_path, fake_openai.base_url, database=env["THREADLINE_DATABASE"])
    async with open_runtime(settings) as rt:
        key = ThreadKey("slack", "T1", "C1", "1.0")
        await rt.gateway.feedback(key, turn="1.5", user="U1", value="good")
        await rt.gateway.feedback(key, turn="1.5", user="U2", value="bad")
        with pytest.raises(ValueError, match="'good' or 'bad'"):
            await rt.gateway.feedback(key, turn="1.5", user="U3", value="meh")
    code, out, err = await _threadline(tmp_path, env, "feedback", "-n", "5")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2 and "👎  U2  slack:T1:C1:1.0  (answer 1.5)" in lines[0] and "👍  U1" in lines[1]
