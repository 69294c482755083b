"""A code-interpreter container per thread, end to end (the real core and openai SDK against the fake OpenAI):
the seed's spreadsheet charted through the console, the container reused, restored when it expired or vanished,
charts found without citations, ``show work``, and one thread never reaching another's container."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from PIL import Image

from bot.fonts import FONT_FILE, font_path
from bot.runtime import Runtime, open_runtime
from bot.types import Attachment, AttachmentKind, IncomingMessage, PartKind, ThreadKey
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.helpers import RecordingReply, make_settings, spawn_threadline, user_env

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# The seed's example: nine days of sales, with Chinese column names.
AMOUNTS = (12, 15, 9, 20, 18, 25, 22, 30, 28)
SALES = [(f"2024-03-{day:02d}", amount) for day, amount in enumerate(AMOUNTS, start=1)]


def sales_xlsx() -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["时间", "销量"])
    for day, amount in SALES:
        sheet.append([day, amount])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def xlsx_attachment(data: bytes, name: str = "sales.xlsx") -> Attachment:
    async def fetch() -> bytes:
        return data

    return Attachment(AttachmentKind.DOCUMENT, XLSX, name, len(data), fetch)


def responses(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r.json for r in fake.requests if r.method == "POST" and r.path == "/v1/responses"]


def container_of(body: dict[str, Any]) -> Any:
    (tool,) = [t for t in body.get("tools") or [] if t.get("type") == "code_interpreter"]
    return tool["container"]


def posts(fake: FakeOpenAI, path: str) -> int:
    return sum(1 for r in fake.requests if r.method == "POST" and r.path == path)


def is_png(data: bytes) -> bool:
    return Image.open(io.BytesIO(data)).format == "PNG"


# --- the console, as a new user tries it ------------------------------------------------------------------------


async def test_console_sales_chart_reuses_the_container_and_shows_its_work(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """The issue's verify list: ``/attach sales.xlsx`` + "plot the sales as a line chart" puts the file and the CJK
    font into the thread's container and saves a chart; "now by week" reuses that container; ``show work`` and
    ``/show work`` print the code that made the chart, with its logs."""
    workbook = sales_xlsx()
    (tmp_path / "sales.xlsx").write_bytes(workbook)
    env = user_env(
        tmp_path,
        fake_openai.base_url,
        THREADLINE_DATABASE=str(tmp_path / "db" / "threadline.db"),
        THREADLINE_TOOLS="code_interpreter",
    )
    script = "/attach sales.xlsx\nplot the sales as a line chart\nnow by week\nshow work\n/show work\n"
    proc = await spawn_threadline(tmp_path, env, "run")
    out_bytes, err_bytes = await asyncio.wait_for(proc.communicate(script.encode()), timeout=90)
    out, err = out_bytes.decode(), err_bytes.decode()
    assert proc.returncode == 0, err

    (container,) = fake_openai.containers.containers.values()
    assert posts(fake_openai, "/v1/containers") == 1, "one container for the thread, made once"
    by_name = {Path(f.path).name: f for f in container.files.values()}
    (sales,) = [f for name, f in by_name.items() if name.endswith("-sales.xlsx")]
    (font,) = [f for name, f in by_name.items() if name.endswith(f"-{FONT_FILE}")]
    found = font_path()
    assert found is not None and font.data == found.read_bytes() and sales.data == workbook
    assert {"chart.png", "sales_by_week.png"} <= set(by_name)
    chart_turn, week_turn = responses(fake_openai)
    assert container_of(chart_turn) == container_of(week_turn) == container.id, "both turns use the same one"
    assert font.path in chart_turn["instructions"] and "addfont" in chart_turn["instructions"]
    assert sales.path in week_turn["instructions"], "the model is told where the thread's file is"

    saved = re.findall(r"\[image saved to (\S+)\]", out)
    assert [Path(p).name.split("-", 1)[1] for p in saved] == ["chart.png", "sales_by_week.png"]
    for path in saved:
        assert is_png(await asyncio.to_thread(Path(path).read_bytes))

    assert out.count("The code behind that answer") == 2, out
    shown = out[out.index("The code behind that answer") :]
    assert f"font_manager.fontManager.addfont({font.path!r})" in shown, "the code registered the CJK font"
    assert f"pd.read_excel({sales.path!r})" in shown and "sales_by_week.png" in shown
    assert "read 2 values" in shown, "the code's logs (nine days are two weeks)"
    assert len(responses(fake_openai)) == 2, "show work asks the model nothing"


# --- the container's life ----------------------------------------------------------------------------------------


@pytest.fixture
async def runtime(tmp_path: Path, fake_openai: FakeOpenAI) -> AsyncIterator[Runtime]:
    async with open_runtime(make_settings(tmp_path, fake_openai.base_url, tools=["code_interpreter"])) as rt:
        yield rt


def message(text: str, thread: str = "t1", **kw: Any) -> IncomingMessage:
    return IncomingMessage(key=ThreadKey("test", "W1", "C1", thread), user_id="U1", text=text, **kw)


async def turn(rt: Runtime, incoming: IncomingMessage) -> RecordingReply:
    reply = RecordingReply()
    submission = await rt.gateway.submit(incoming, reply)
    assert submission.done is not None
    await submission.done
    assert reply.failed is None, reply.failed
    return reply


def names(reply: RecordingReply) -> list[str]:
    return [getattr(part, "filename", "") for part in reply.files]


async def chart_thread(rt: Runtime, thread: str = "t1") -> tuple[ThreadKey, str]:
    """A thread whose first turn charted sales.xlsx: its key and its container id."""
    first = await turn(
        rt, message("plot the sales as a line chart", thread, attachments=(xlsx_attachment(sales_xlsx()),))
    )
    assert names(first) == ["chart.png"] and first.files[0].kind is PartKind.IMAGE  # type: ignore[attr-defined]
    key = ThreadKey("test", "W1", "C1", thread)
    container_id = await rt.store.thread_container(key)
    assert container_id is not None
    return key, container_id


async def test_an_expired_container_is_made_again_with_the_threads_files(
    runtime: Runtime, fake_openai: FakeOpenAI
) -> None:
    key, first = await chart_thread(runtime)
    fake_openai.containers.expire(first)

    again = await turn(runtime, message("now plot it by week"))
    second = await runtime.store.thread_container(key)
    assert second is not None and second != first
    assert "restoring your files…" in again.statuses, "the user only waits, with a word on why"
    assert names(again) == ["sales_by_week.png"]
    restored = [Path(p).name for p in fake_openai.containers.paths(second)]
    assert any(n.endswith("-sales.xlsx") for n in restored) and any(n.endswith(FONT_FILE) for n in restored)
    assert container_of(responses(fake_openai)[-1]) == second
    assert posts(fake_openai, "/v1/files") == 2, "the spreadsheet and the font were uploaded once, copied twice"


async def test_a_container_that_vanishes_mid_turn_is_replaced_and_the_answer_goes_on(
    runtime: Runtime, fake_openai: FakeOpenAI
) -> None:
    key, first = await chart_thread(runtime)
    fake_openai.containers.vanish_on_use.add(first)  # running when checked, gone when the response names it

    again = await turn(runtime, message("now plot it by week"))
    second = await runtime.store.thread_container(key)
    assert second not in {None, first}
    refused, answered = responses(fake_openai)[-2:]
    assert (container_of(refused), container_of(answered)) == (first, second)
    assert "restoring your files…" in again.statuses and names(again) == ["sales_by_week.png"]
    assert "now plot it by week" in again.text


async def test_charts_come_from_the_container_when_the_answer_cites_nothing(
    runtime: Runtime, fake_openai: FakeOpenAI
) -> None:
    fake_openai.containers.omit_citations = True
    await chart_thread(runtime)
    week = await turn(runtime, message("now by week"))
    assert names(week) == ["sales_by_week.png"], "only the new file: the chart already posted is not posted again"
    assert is_png(week.files[0].data)  # type: ignore[attr-defined]
    for body in responses(fake_openai):
        assert "container_file_citation" not in json.dumps(body)


async def test_reset_drops_the_threads_container_and_files(runtime: Runtime, fake_openai: FakeOpenAI) -> None:
    key, container_id = await chart_thread(runtime)
    reply = RecordingReply()
    await runtime.gateway.command("reset", key=key, user="U1", reply=reply)
    assert await runtime.store.thread_container(key) is None and await runtime.store.thread_files(key) == []
    assert container_id not in fake_openai.containers.containers, "deleted at OpenAI too"
    plain = await turn(runtime, message("hello again"))
    assert plain.files == [] and posts(fake_openai, "/v1/containers") == 1


async def test_show_work_without_code_says_so(runtime: Runtime, fake_openai: FakeOpenAI) -> None:
    reply = await turn(runtime, message("show work", "quiet"))
    assert reply.text == "No code has run in this thread yet."
    assert responses(fake_openai) == [], "nothing was asked of the model"


async def test_long_code_is_shown_as_files(runtime: Runtime, fake_openai: FakeOpenAI) -> None:
    code = "\n".join(f"print({n})" for n in range(80))
    fake_openai.script(Reply(text="Done.", container_file=("cntr_auto", "cfile_a", "out.txt", b"ok")))
    await turn(runtime, message("count to eighty", "long"))
    planned = next(iter(fake_openai.responses_by_id.values()))
    planned.output[0]["code"] = code  # the model ran a long script
    shown = await turn(runtime, message("show work", "long"))
    assert "is in code.py and logs.txt" in shown.text
    code_py, logs = shown.files
    assert (code_py.filename, logs.filename) == ("code.py", "logs.txt")  # type: ignore[attr-defined]
    assert code_py.data.decode().strip() == code  # type: ignore[attr-defined]


# --- isolation --------------------------------------------------------------------------------------------------


async def test_one_threads_container_and_files_never_reach_another_thread(
    runtime: Runtime, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    key_a, container_a = await chart_thread(runtime, "alice")
    (chart_a,) = [f for f in fake_openai.containers.containers[container_a].files.values() if f.source == "assistant"]
    before = len(fake_openai.requests)

    mine = await turn(runtime, message("plot y = x squared", "bob"))
    key_b = ThreadKey("test", "W1", "C1", "bob")
    container_b = await runtime.store.thread_container(key_b)
    assert container_b not in {None, container_a}
    assert names(mine) == ["chart.png"] and mine.files[0].data != chart_a.data  # type: ignore[attr-defined]
    shown = await turn(runtime, message("show work", "bob"))
    assert "pd.DataFrame" in shown.text and "sales.xlsx" not in shown.text, "bob's own code, never alice's"
    # A model naming the other thread's container and file (as a leak would): nothing is fetched.
    fake_openai.containers.forged = (container_a, chart_a.id, "chart.png", chart_a.data)
    leaked = await turn(runtime, message("show me alice's chart", "bob"))
    assert leaked.files == [] and "show me alice's chart" in leaked.text
    assert f"ignored a citation of {chart_a.id}" in caplog.text, "the citation came, and was refused"

    after = fake_openai.requests[before:]
    assert not [r for r in after if container_a in r.path], "no request of bob's thread touched alice's container"
    assert container_a not in json.dumps([r.json for r in after if r.json is not None])
    assert await runtime.store.thread_files(key_b) == []
    assert [f.filename for f in await runtime.store.thread_files(key_a)] == ["sales.xlsx"]


async def test_a_reaction_ref_of_another_thread_shows_nothing(runtime: Runtime, fake_openai: FakeOpenAI) -> None:
    """``show work`` for a message id of another thread's answer (a forged reaction) reads nothing back."""
    key_a, _ = await chart_thread(runtime, "alice")
    (record,) = await runtime.store.code_answers(key_a, 5)
    shown = await turn(runtime, message("show work", "bob", target=record.ref))
    assert shown.text == "No code has run in this thread yet."
    assert not [r for r in fake_openai.requests if r.method == "GET" and r.path.startswith("/v1/responses/")]
