"""Retrieval with citations end to end: documents go into the thread's vector store, a channel's knowledge base
into the channel's, ``file_search`` answers cite their sources on every platform, bad documents are refused by
name, and no thread or channel ever reaches another's store. The real core, openai SDK, slack-bolt and discord.py
against the fakes (``tests/fakes/vector_stores.py`` is the fake's vector stores and file search)."""

from __future__ import annotations

import asyncio
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any, get_args

import aiohttp
import pydantic
import pytest
from openai.types.responses import ResponseStreamEvent
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from adapters.console import ConsoleAdapter
from bot.render import TurnRender
from bot.runtime import Runtime, open_runtime
from bot.stream_events import Citation, SearchResult, TextDelta
from bot.types import Attachment, AttachmentKind, IncomingMessage, ThreadKey
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.slack_server import FakeSlack
from tests.helpers import RecordingReply, make_settings, spawn_threadline, user_env
from tests.test_discord_e2e import Harness, answered, thread_of
from tests.test_slack_e2e import CHANNEL, SlackHarness

HANDBOOK = ["Welcome to Acme.", "Employees get 25 days of paid leave a year.", "Remote work is allowed on Fridays."]
LEAVE = "Employees get 25 days of paid leave a year."
POLICY = ["Expense rules.", "Expenses over 500 euros need the approval of a manager."]
APPROVAL = "Expenses over 500 euros need the approval of a manager."


# --- documents, made for real --------------------------------------------------------------------------------


def pdf_bytes(lines: list[str], *, password: str | None = None) -> bytes:
    """A one-page PDF whose text layer holds ``lines`` (Helvetica), encrypted when a password is given."""
    writer = PdfWriter()
    page = writer.add_blank_page(612, 792)
    font = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Font"),
            NameObject("/Subtype"): NameObject("/Type1"),
            NameObject("/BaseFont"): NameObject("/Helvetica"),
        }
    )
    fonts = DictionaryObject({NameObject("/F1"): writer._add_object(font)})
    page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): fonts})
    content = DecodedStreamObject()
    shown = " ".join(f"({line}) Tj T*" for line in lines)
    content.set_data(f"BT /F1 12 Tf 14 TL 72 720 Td {shown} ET".encode("latin-1"))
    page[NameObject("/Contents")] = writer._add_object(content)
    if password:
        writer.encrypt(password)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes(text: str, *, padding: int = 0) -> bytes:
    """A minimal .docx; ``padding`` bytes of zeros in a media part make it a zip bomb (they pack to ~1/1000)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", f"<w:document><w:body><w:p><w:t>{text}</w:t></w:p></w:body></w:document>")
        if padding:
            archive.writestr("word/media/filler.bin", bytes(padding))
    return out.getvalue()


def attachment(name: str, data: bytes, mime: str = "application/pdf") -> Attachment:
    async def fetch() -> bytes:
        return data

    return Attachment(AttachmentKind.DOCUMENT, mime, name, len(data), fetch)


# --- what reached the fake OpenAI ----------------------------------------------------------------------------


def response_bodies(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r.json for r in fake.requests if r.path == "/v1/responses"]


def searched(body: dict[str, Any]) -> list[str]:
    """The vector stores a response's file_search may search ([] without the tool)."""
    tools = [t for t in body.get("tools") or [] if t.get("type") == "file_search"]
    return [store for tool in tools for store in tool["vector_store_ids"]]


def thread_bodies(fake: FakeOpenAI, key: ThreadKey) -> list[dict[str, Any]]:
    convs = [c.id for c in fake.conversations.values() if c.metadata.get("thread") == key.thread]
    return [body for conv in convs for body in fake.responses_for(conv)]


def uploads(fake: FakeOpenAI) -> list[str]:
    return [str(r.form["file"].filename) for r in fake.requests if r.method == "POST" and r.path == "/v1/files"]


def store_requests(fake: FakeOpenAI) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.requests if r.path.startswith("/v1/vector_stores")]


async def console(
    tmp_path: Path, fake: FakeOpenAI, lines: list[str], *, interactive: bool = False, **settings: Any
) -> tuple[str, str]:
    """Run the console adapter in-process on ``lines``; (stdout, stderr). Interactive shows status lines."""
    async with open_runtime(make_settings(tmp_path, fake.base_url, **settings)) as runtime:
        out, err = io.StringIO(), io.StringIO()
        stdin = io.StringIO("".join(f"{line}\n" for line in lines))
        adapter = ConsoleAdapter(runtime.gateway, stdin=stdin, out=out, err=err)
        adapter.interactive = interactive
        await adapter.run()
    return out.getvalue(), err.getvalue()


# --- the verify item: a new user, the console, a handbook --------------------------------------------------------


async def test_console_attach_handbook_pdf_and_the_answer_cites_it(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    (tmp_path / "handbook.pdf").write_bytes(pdf_bytes(HANDBOOK))
    env = user_env(tmp_path, fake_openai.base_url, THREADLINE_DATABASE=str(tmp_path / "db" / "threadline.db"))
    proc = await spawn_threadline(tmp_path, env, "run")
    stdin = "/attach handbook.pdf\nhow many days of paid leave do employees get?\n"
    out, err = (part.decode() for part in await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=60))
    assert proc.returncode == 0, err

    assert f"threadline> handbook.pdf says: «{LEAVE}»[1]." in out, "the marker sits where the citation falls"
    assert f"**Sources**\n[1] handbook.pdf — “{LEAVE}”" in out, "the source line names the file and quotes it"
    (store,) = fake_openai.vector_stores.stores.values()
    assert fake_openai.vector_stores.filenames(store.id) == ["handbook.pdf"]
    assert store.expires_after == {"anchor": "last_active_at", "days": 7}
    (body,) = response_bodies(fake_openai)
    assert searched(body) == [store.id] and body["include"] == ["file_search_call.results"]
    assert uploads(fake_openai) == ["handbook.pdf"]
    (upload,) = [r for r in fake_openai.requests if r.path == "/v1/files"]
    assert upload.form is not None and upload.form["purpose"] == "assistants"
    note = body["input"][0]["content"][-1]["text"]
    assert note == "[Documents attached, searchable with file search: handbook.pdf]"


async def test_indexing_shows_and_a_follow_up_searches_the_same_store(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    (tmp_path / "handbook.pdf").write_bytes(pdf_bytes(HANDBOOK))
    lines = [f"/attach {tmp_path}/handbook.pdf", "how many days of leave?", "is remote work allowed on Fridays?"]
    out, err = await console(tmp_path, fake_openai, lines, interactive=True)

    statuses = re.findall(r"… [^\n]*", err)
    assert statuses[:4] == ["… thinking…", "… reading the file…", "… indexing 1 file…", "… searching the files…"]
    assert "handbook.pdf says: «Remote work is allowed on Fridays.»[1]." in out
    first, second = response_bodies(fake_openai)
    assert searched(first) == searched(second) and len(searched(first)) == 1, "the follow-up searches the same store"
    assert uploads(fake_openai) == ["handbook.pdf"], "the document was uploaded once"
    polls = [r for r in store_requests(fake_openai) if r.startswith("GET") and "/files/" in r]
    assert len(polls) == 2, "indexing was waited for (in progress, then completed)"


@pytest.mark.parametrize("how", ["expired", "deleted"])
async def test_a_lost_thread_store_is_rebuilt_from_the_kept_files(
    tmp_path: Path, fake_openai: FakeOpenAI, how: str
) -> None:
    (tmp_path / "handbook.pdf").write_bytes(pdf_bytes(HANDBOOK))
    await console(tmp_path, fake_openai, [f"/attach {tmp_path}/handbook.pdf", "how many days of leave?"])
    (old,) = fake_openai.vector_stores.stores.values()
    if how == "expired":
        fake_openai.vector_stores.expire(old.id)
    else:
        del fake_openai.vector_stores.stores[old.id]

    out, err = await console(tmp_path, fake_openai, ["how many days of paid leave again?"], interactive=True)
    assert "… re-indexing 1 file…" in err
    assert f"[1] handbook.pdf — “{LEAVE}”" in out
    rebuilt = [s for s in fake_openai.vector_stores.stores.values() if s.id != old.id]
    assert len(rebuilt) == 1 and fake_openai.vector_stores.filenames(rebuilt[0].id) == ["handbook.pdf"]
    assert searched(response_bodies(fake_openai)[-1]) == [rebuilt[0].id]
    assert uploads(fake_openai) == ["handbook.pdf"], "rebuilt from the kept file id, not uploaded again"


async def test_reset_drops_the_threads_documents(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    (tmp_path / "handbook.pdf").write_bytes(pdf_bytes(HANDBOOK))
    lines = [f"/attach {tmp_path}/handbook.pdf", "how many days of leave?", "/reset", "how many days of leave?"]
    out, _ = await console(tmp_path, fake_openai, lines)
    assert "Done: the next message here starts a new conversation." in out
    first, second = response_bodies(fake_openai)
    assert len(searched(first)) == 1 and searched(second) == []
    assert fake_openai.vector_stores.deleted == searched(first) and fake_openai.vector_stores.stores == {}
    assert "DELETE" in [r.method for r in fake_openai.requests if r.path.startswith("/v1/files/")]


async def test_a_document_that_fails_indexing_is_named_and_the_thread_goes_on(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    (tmp_path / "broken.pdf").write_bytes(pdf_bytes(["Nothing to see."]))
    fake_openai.vector_stores.fail_files["broken.pdf"] = "The file could not be parsed."
    out, _ = await console(tmp_path, fake_openai, [f"/attach {tmp_path}/broken.pdf", "what is in it?", "hello"])
    assert "_(I couldn't index broken.pdf: The file could not be parsed.)_" in out
    assert "threadline> You said: «hello»" in out
    (file_id,) = [
        r.json["file_id"]
        for r in fake_openai.requests
        if r.method == "POST" and r.path.startswith("/v1/vector_stores/")
    ]
    assert f"DELETE /v1/files/{file_id}" in [f"{r.method} {r.path}" for r in fake_openai.requests]


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "make", "settings", "problem"),
    [
        (
            "locked.pdf",
            lambda: pdf_bytes(HANDBOOK, password="s3cret"),
            {},
            "locked.pdf is encrypted (password-protected)",
        ),
        ("empty.pdf", lambda: b"", {}, "empty.pdf is empty."),
        (
            "big.pdf",
            lambda: b"%PDF-1.4\n" + bytes(3 * 1024 * 1024),
            {"max_attachment_bytes": 1024 * 1024},
            "big.pdf is 3.0 MB; the limit is 1.0 MB.",
        ),
        ("bomb.docx", lambda: docx_bytes("hi", padding=40 * 1024 * 1024), {}, "bomb.docx unpacks to 40.0 MB"),
        ("notes.pdf", lambda: b"just some text, not a PDF", {}, "notes.pdf is not a PDF"),
        ("letter.docx", lambda: b"PK\x03\x04 not really a zip", {}, "letter.docx is not a valid .docx file."),
    ],
    ids=["encrypted-pdf", "zero-bytes", "over-the-limit", "zip-bomb", "not-a-pdf", "broken-docx"],
)
async def test_a_bad_document_is_refused_by_name_nothing_is_uploaded_and_the_thread_goes_on(
    tmp_path: Path, fake_openai: FakeOpenAI, name: str, make: Any, settings: dict[str, Any], problem: str
) -> None:
    (tmp_path / name).write_bytes(make())
    lines = [f"/attach {tmp_path}/{name}", "what does it say?", f"/attach {tmp_path}/{name}", "/kb add", "hello"]
    out, _ = await console(tmp_path, fake_openai, lines, **settings)
    assert out.count(f"⚠ {problem}") == 2, out  # as a message's document, and for the knowledge base
    assert "threadline> You said: «hello»" in out, "the thread goes on"
    assert uploads(fake_openai) == [] and store_requests(fake_openai) == [], "nothing was uploaded"


# --- a channel's knowledge base ----------------------------------------------------------------------------------


async def test_console_kb_add_list_remove(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    (tmp_path / "policy.pdf").write_bytes(pdf_bytes(POLICY))
    (tmp_path / "cat.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    lines = [
        "/kb list",
        f"/attach {tmp_path}/cat.png",
        "/kb add",
        f"/attach {tmp_path}/policy.pdf",
        "/kb add",
        f"/attach {tmp_path}/policy.pdf",
        "/kb add",
        "/kb list",
        "/new",
        "who approves expenses over 500 euros?",
        "/kb remove POLICY.PDF",
        "/kb list",
        "who approves expenses over 500 euros?",
    ]
    out, _ = await console(tmp_path, fake_openai, lines)
    assert out.count("This channel's knowledge base is empty.") == 2
    assert "⚠ cat.png is not a document I can add. I take: " in out
    assert "Added policy.pdf to this channel's knowledge base: every thread here searches it now." in out
    assert "policy.pdf was there already." in out
    assert "This channel's knowledge base (1 document):\n• policy.pdf (added " in out
    assert f"[1] policy.pdf — “{APPROVAL}”" in out, "a new thread of the channel searches its knowledge base"
    assert "Removed policy.pdf from this channel's knowledge base." in out
    asked, asked_again = response_bodies(fake_openai)
    (kb,) = fake_openai.vector_stores.stores.values()
    assert searched(asked) == [kb.id] and searched(asked_again) == []
    assert fake_openai.vector_stores.filenames(kb.id) == [], "removed from the store"
    assert uploads(fake_openai) == ["policy.pdf"]


async def test_slack_knowledge_base_footnotes_and_channel_isolation(
    tmp_path: Path, fake_slack: FakeSlack, fake_openai: FakeOpenAI
) -> None:
    slack = SlackHarness(tmp_path, fake_slack, fake_openai)
    try:
        fake = slack.fake
        bot = await slack.start()
        policy = pdf_bytes(POLICY)
        url = fake.host_file("policy.pdf", policy, "application/pdf")
        files = [fake.file_object("policy.pdf", "application/pdf", url, len(policy))]
        add = fake.user_event(f"<@{fake.bot_user_id}> kb add", kind="app_mention", files=files)
        await bot.send(add)
        (added,) = await bot.answered(CHANNEL, add["ts"])
        assert added.text.startswith("Added policy.pdf to this channel's knowledge base")
        assert response_bodies(fake_openai) == [], "kb add never reaches the model"
        assert "• policy.pdf (added " in await bot.command("kb list")
        (kb,) = fake_openai.vector_stores.stores.values()

        ask = fake.user_event(f"<@{fake.bot_user_id}> who approves expenses over 500 euros?", kind="app_mention")
        await bot.send(ask)
        (answer,) = await bot.answered(CHANNEL, ask["ts"])
        assert answer.text == (f"policy.pdf says: «{APPROVAL}»[1].\n\n**Sources**\n[1] policy.pdf — “{APPROVAL}”"), (
            "Slack footnotes: a marker in the text, the sources at the end"
        )
        assert searched(response_bodies(fake_openai)[-1]) == [kb.id]

        other = fake.user_event(
            f"<@{fake.bot_user_id}> who approves expenses over 500 euros?", kind="app_mention", channel="C0RANDOM"
        )
        await bot.send(other)
        (elsewhere,) = await bot.answered("C0RANDOM", other["ts"])
        assert searched(response_bodies(fake_openai)[-1]) == [], "another channel never searches this one's"
        assert "Sources" not in elsewhere.text

        assert await bot.command("kb remove policy.pdf") == "Removed policy.pdf from this channel's knowledge base."
        again = fake.user_event(f"<@{fake.bot_user_id}> who approves expenses?", kind="app_mention")
        await bot.send(again)
        await bot.answered(CHANNEL, again["ts"])
        assert searched(response_bodies(fake_openai)[-1]) == []
    finally:
        await slack.close()


async def test_discord_answer_lists_its_sources_and_kb_add_works(
    tmp_path: Path, fake_discord: FakeDiscord, fake_openai: FakeOpenAI
) -> None:
    harness = Harness(tmp_path, fake_discord, fake_openai)
    try:
        bot = await harness.start()
        handbook = fake_discord.attachment(pdf_bytes(HANDBOOK), "handbook.pdf", "application/pdf")
        await fake_discord.user_message(
            fake_discord.channel_id,
            "how many days of paid leave do employees get?",
            mention_bot=True,
            attachments=[handbook],
        )
        await fake_discord.wait_for(lambda: fake_discord.threads_created, 5, "a thread")
        first = thread_of(fake_discord)
        await answered(fake_discord, bot, first, f"[1] handbook.pdf — “{LEAVE}”")
        assert (
            fake_discord.text_in(first)
            == f"handbook.pdf says: «{LEAVE}»[1].\n\n**Sources**\n[1] handbook.pdf — “{LEAVE}”"
        )

        policy = fake_discord.attachment(pdf_bytes(POLICY), "policy.pdf", "application/pdf")
        await fake_discord.user_message(fake_discord.channel_id, "kb add", mention_bot=True, attachments=[policy])
        await fake_discord.wait_for(lambda: len(fake_discord.threads_created) == 2, 5, "a second thread")
        await answered(fake_discord, bot, thread_of(fake_discord), "Added policy.pdf to this channel's knowledge base")
        await fake_discord.user_message(
            fake_discord.channel_id, "who approves expenses over 500 euros?", mention_bot=True
        )
        await fake_discord.wait_for(lambda: len(fake_discord.threads_created) == 3, 5, "a third thread")
        await answered(fake_discord, bot, thread_of(fake_discord), f"[1] policy.pdf — “{APPROVAL}”")
        thread_store = searched(response_bodies(fake_openai)[0])[0]
        assert thread_store not in searched(response_bodies(fake_openai)[-1]), "a new thread never sees the first's"
    finally:
        await harness.close()


# --- isolation ---------------------------------------------------------------------------------------------------


async def _ask(runtime: Runtime, key: ThreadKey, text: str, *files: Attachment) -> RecordingReply:
    reply = RecordingReply()
    message = IncomingMessage(key=key, user_id="U1", text=text, attachments=files)
    submission = await runtime.gateway.submit(message, reply)
    assert submission.done is not None
    await submission.done
    return reply


async def test_a_threads_store_and_a_channels_knowledge_base_stay_where_they_belong(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    owner = ThreadKey("slack", "T1", "C1", "1.0")
    neighbour = ThreadKey("slack", "T1", "C1", "2.0")  # same channel, another thread
    other_channel = ThreadKey("slack", "T1", "C2", "3.0")
    other_workspace = ThreadKey("slack", "T2", "C1", "4.0")  # the same channel id in another workspace
    other_platform = ThreadKey("discord", "T1", "C1", "5.0")
    async with open_runtime(make_settings(tmp_path, fake_openai.base_url)) as runtime:
        said = await _ask(runtime, owner, "how many days of leave?", attachment("handbook.pdf", pdf_bytes(HANDBOOK)))
        assert f"[1] handbook.pdf — “{LEAVE}”" in said.text
        added = await _ask(runtime, owner, "kb add", attachment("policy.pdf", pdf_bytes(POLICY)))
        assert added.text.startswith("Added policy.pdf")
        for key in (owner, neighbour, other_channel, other_workspace, other_platform):
            await _ask(runtime, key, "who approves expenses over 500 euros?")
    thread_store, kb = (s.id for s in fake_openai.vector_stores.stores.values())
    assert fake_openai.vector_stores.filenames(thread_store) == ["handbook.pdf"]
    assert fake_openai.vector_stores.filenames(kb) == ["policy.pdf"]
    assert [searched(b) for b in thread_bodies(fake_openai, owner)] == [[thread_store], [thread_store, kb]]
    assert [searched(b) for b in thread_bodies(fake_openai, neighbour)] == [[kb]]
    for key in (other_channel, other_workspace, other_platform):
        (body,) = thread_bodies(fake_openai, key)
        assert searched(body) == [], f"{key} reached another's store"
        assert thread_store not in json.dumps(body) and kb not in json.dumps(body)


# --- the pieces: rendering citations, the fake's events --------------------------------------------------------


async def test_citation_markers_land_where_their_index_falls() -> None:
    reply = RecordingReply()
    render = TurnRender(reply, "thinking…")
    await render.apply(SearchResult("file-1", "a.pdf", "  The first\n passage found in a.pdf,  " + "long " * 40))
    await render.apply(TextDelta("One two"))
    await render.apply(Citation("file_citation", file_id="file-1", filename="a.pdf", index=13))  # not reached yet
    await render.apply(TextDelta(" three four."))
    await render.apply(Citation("file_citation", file_id="file-2", filename="b.md", index=5))  # passed: at once
    await render.apply(Citation("file_citation", file_id="file-2", filename="b.md", index=5))  # no "[2][2]"
    await render.cite_sources()
    body, sources = reply.text.split("\n\n**Sources**\n")
    assert body == "One two three[1] four.[2]"
    first, second = sources.split("\n")
    assert first.startswith("[1] a.pdf — “The first passage found in a.pdf, long long") and first.endswith("long…”")
    assert len(first) < 150 and second == "[2] b.md"


EVENT_MODELS: dict[str, type[pydantic.BaseModel]] = {
    get_args(model.model_fields["type"].annotation)[0]: model for model in get_args(get_args(ResponseStreamEvent)[0])
}


async def test_the_fakes_file_search_streams_events_the_sdk_accepts(fake_openai: FakeOpenAI) -> None:
    headers = {"Authorization": "Bearer sk-test"}
    async with aiohttp.ClientSession(base_url=fake_openai.base_url + "/", headers=headers) as http:
        form = aiohttp.FormData()
        form.add_field("purpose", "assistants")
        form.add_field("file", "Tea is served at four.\nCoffee is served at nine.", filename="menu.txt")
        file_id = (await (await http.post("files", data=form)).json())["id"]
        store = await (await http.post("vector_stores", json={"name": "t"})).json()
        added = await (await http.post(f"vector_stores/{store['id']}/files", json={"file_id": file_id})).json()
        assert added["status"] == "in_progress"
        for _ in range(fake_openai.vector_stores.index_polls):
            polled = await (await http.get(f"vector_stores/{store['id']}/files/{file_id}")).json()
        assert polled["status"] == "completed"
        body = {
            "model": "gpt-6.2-sol",
            "input": "when is coffee served?",
            "tools": [{"type": "file_search", "vector_store_ids": [store["id"]]}],
            "include": ["file_search_call.results"],
            "stream": True,
        }
        raw = await (await http.post("responses", json=body)).text()
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: ")]
    for event in events:
        EVENT_MODELS[event["type"]].model_validate(event)
    (call,) = [
        e["item"]
        for e in events
        if e["type"] == "response.output_item.done" and e["item"]["type"] == "file_search_call"
    ]
    assert call["results"][0]["text"] == "Coffee is served at nine." and call["results"][0]["filename"] == "menu.txt"
    (note,) = [e["annotation"] for e in events if e["type"] == "response.output_text.annotation.added"]
    text = next(e["text"] for e in events if e["type"] == "response.output_text.done")
    assert note == {"type": "file_citation", "file_id": file_id, "filename": "menu.txt", "index": len(text) - 1}
