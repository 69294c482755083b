"""The fake OpenAI server, driven by the real openai SDK: events, errors, conversations, media, spec checks."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, get_args

import aiohttp
import av
import httpx2
import openai
import pydantic
import pytest
from openai.types.responses import ResponseStreamEvent
from PIL import Image

from tests.fakes import media, spec
from tests.fakes.openai_server import FakeOpenAI, Reply, Turn, numbered, plan_turn, turn_events

# event type → its SDK model (the union's discriminator is invisible to a plain pydantic TypeAdapter)
EVENT_MODELS: dict[str, type[pydantic.BaseModel]] = {
    get_args(model.model_fields["type"].annotation)[0]: model for model in get_args(get_args(ResponseStreamEvent)[0])
}
USER_HI = [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}]


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="test", max_retries=0)
    yield sdk
    await sdk.close()


@pytest.fixture
async def unchecked() -> AsyncIterator[tuple[FakeOpenAI, openai.AsyncOpenAI]]:
    """A fake outside the ``fake_openai`` fixture, for tests that break the spec on purpose."""
    fake = FakeOpenAI()
    sdk = openai.AsyncOpenAI(base_url=await fake.start(), api_key="test", max_retries=0)
    yield fake, sdk
    await sdk.close()
    await fake.close()


async def stream_turn(sdk: openai.AsyncOpenAI, conv: str | None = None, text: str = "hi") -> list[Any]:
    extra = {"conversation": conv} if conv else {}
    stream = await sdk.responses.create(model="gpt-6.2-sol", input=text, stream=True, **extra)
    return [event async for event in stream]


def strict_events(reply: Reply, body: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every event the fake would send for ``reply``, each validated strictly against the SDK's types."""
    turn: Turn = plan_turn(body or {"model": "gpt-6.2-sol", "input": USER_HI}, reply, None)
    events = [step for step in numbered(turn_events(turn)) if isinstance(step, dict)]
    for event in events:
        EVENT_MODELS[event["type"]].model_validate(json.loads(json.dumps(event)))
    return events


# --- streaming ------------------------------------------------------------------------------------


async def test_stream_deltas_concatenate_and_usage_arrives(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI):
    fake_openai.script(Reply(text="one two three four five", chunk=3, usage=(12, 7)))
    events = await stream_turn(client)
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two three four five"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    usage = events[-1].response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (12, 7, 19)
    assert usage.input_tokens_details.cached_tokens == 0 and usage.output_tokens_details.reasoning_tokens == 0


async def test_wire_format_is_server_sent_events(fake_openai: FakeOpenAI):
    body = {"model": "gpt-6.2-sol", "input": "hi", "stream": True}
    headers = {"Authorization": "Bearer test"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{fake_openai.base_url}/responses", json=body, headers=headers) as resp,
    ):
        assert resp.content_type == "text/event-stream"
        raw = (await resp.read()).decode()
    blocks = [b for b in raw.split("\n\n") if b]
    first_line, data_line = blocks[0].split("\n")
    assert (
        first_line == "event: response.created" and json.loads(data_line.removeprefix("data: "))["sequence_number"] == 0
    )


@pytest.mark.parametrize(
    "reply",
    [
        Reply(text="done"),
        Reply(text="part", end="incomplete"),
        Reply(text="oops", end="failed"),
        Reply(end="error"),
        Reply(text="a picture", image_b64=base64.b64encode(media.png(8, 8)).decode()),
        Reply(text="a chart", container_file=("cntr_1", "cfile_1", "chart.png", b"png")),
    ],
    ids=["completed", "incomplete", "failed", "error", "image", "container-file"],
)
def test_every_event_parses_with_the_sdk_types(reply: Reply):
    events = strict_events(reply)
    terminal = {"completed": "response.completed", "incomplete": "response.incomplete", "failed": "response.failed"}
    assert events[-1]["type"] == terminal.get(reply.end, "error")


def test_terminal_details_and_tool_events():
    failed = strict_events(Reply(end="failed", error_code="invalid_prompt", error_message="nope"))[-1]
    assert failed["response"]["error"] == {"code": "invalid_prompt", "message": "nope"}
    incomplete = strict_events(Reply(text="x", end="incomplete"))[-1]
    assert incomplete["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    image = strict_events(Reply(image_b64="QUJD"))
    partial = [e for e in image if e["type"] == "response.image_generation_call.partial_image"]
    done = [e["item"] for e in image if e["type"] == "response.output_item.done"]
    assert [p["partial_image_b64"] for p in partial] == ["QUJD"] and done[0]["result"] == "QUJD"
    code = strict_events(Reply(container_file=("cntr_9", "cfile_9", "out.csv", b"a,b")))
    (note,) = [e["annotation"] for e in code if e["type"] == "response.output_text.annotation.added"]
    assert note["type"] == "container_file_citation" and (note["container_id"], note["file_id"]) == (
        "cntr_9",
        "cfile_9",
    )
    assert [e["item"]["type"] for e in code if e["type"] == "response.output_item.added"] == [
        "code_interpreter_call",
        "message",
    ]


async def test_container_file_bytes_are_served(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI):
    chart = media.png(10, 10, (0, 128, 0))
    fake_openai.script(Reply(text="Chart.", container_file=("cntr_1", "cfile_1", "chart.png", chart)))
    await stream_turn(client)
    content = await client.containers.files.content.retrieve("cfile_1", container_id="cntr_1")
    assert await content.aread() == chart
    with pytest.raises(openai.NotFoundError):
        await client.containers.files.content.retrieve("cfile_x", container_id="cntr_1")


async def test_non_streamed_response(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI):
    fake_openai.script(Reply(text="plain answer"))
    response = await client.responses.create(model="gpt-6.2-sol", input="hi")
    assert response.output_text == "plain answer" and response.status == "completed" and response.usage


# --- conversations --------------------------------------------------------------------------------


async def test_conversation_items_accumulate_and_default_answers_quote_the_thread(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
):
    conv = await client.conversations.create(metadata={"thread": "t1"})
    assert conv.id.startswith("conv_") and conv.metadata == {"thread": "t1"}
    first = await stream_turn(client, conv.id, "hello")
    second = await stream_turn(client, conv.id, "what did I just say?")
    assert first[-1].response.output_text == "You said: «hello»."
    assert second[-1].response.output_text == "You said: «what did I just say?». Before that you said: «hello»."
    items = fake_openai.conversations[conv.id].items
    assert [(i["type"], i["role"]) for i in items] == [("message", "user"), ("message", "assistant")] * 2
    assert [b["input"] for b in fake_openai.responses_for(conv.id)] == ["hello", "what did I just say?"]
    assert second[-1].response.usage.input_tokens > first[-1].response.usage.input_tokens
    listed = await client.conversations.items.list(conv.id, order="asc")
    assert [item.id for item in listed.data] == [i["id"] for i in items]


async def test_forgotten_conversation_is_404_and_keeps_the_script(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI):
    conv = await client.conversations.create()
    fake_openai.forget_conversation(conv.id)
    fake_openai.script(Reply(text="after recreate"))
    with pytest.raises(openai.NotFoundError, match=f"Conversation with id '{conv.id}' not found"):
        await stream_turn(client, conv.id)
    with pytest.raises(openai.NotFoundError):
        await client.conversations.retrieve(conv.id)
    fresh = await client.conversations.create()
    assert (await stream_turn(client, fresh.id))[-1].response.output_text == "after recreate"
    fake_openai.script(Reply(conversation_missing=True))
    with pytest.raises(openai.NotFoundError, match="not found"):
        await stream_turn(client, fresh.id)
    deleted = await client.conversations.delete(fresh.id)
    assert deleted.deleted and fresh.id not in fake_openai.conversations


def test_default_answer_uses_history_sent_in_the_input_too():
    """A stateless backend (no conversation) sends the history itself; the default answer still quotes it."""
    history = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {
            "role": "user",
            "content": [{"type": "input_text", "text": "second"}, {"type": "input_image", "file_id": "f"}],
        },
    ]
    turn = plan_turn({"model": "m", "input": history}, Reply(), None)
    assert turn.text == "You said: «second». You attached 1 file. Before that you said: «first question»."


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (401, openai.AuthenticationError),
        (400, openai.BadRequestError),
    ],
)
async def test_scripted_http_errors(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI, status: int, error: type):
    fake_openai.script(Reply(status=status))
    with pytest.raises(error) as caught:
        await stream_turn(client)
    assert caught.value.status_code == status and isinstance(caught.value.body, dict) and caught.value.body["message"]
    if status == 429:
        assert caught.value.response.headers["retry-after"] == "0"


async def test_cut_mid_stream_raises_api_connection_error(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI):
    """A dropped connection mid-stream surfaces while iterating as ``openai.APIConnectionError``, whose
    ``__cause__`` is ``httpx2.RemoteProtocolError`` (incomplete chunked read): the SDK wraps it, so code that
    catches only ``httpx2.HTTPError`` never sees it."""
    fake_openai.script(Reply(text="a long answer that will be cut", cut_after=6, chunk=2))
    seen: list[str] = []
    stream = await client.responses.create(model="gpt-6.2-sol", input="hi", stream=True)
    with pytest.raises(openai.APIConnectionError) as caught:
        async for event in stream:
            if event.type == "response.output_text.delta":
                seen.append(event.delta)
    assert "".join(seen) == "a long" and isinstance(caught.value.__cause__, httpx2.RemoteProtocolError)
    assert not fake_openai.violations


async def test_api_keys_are_checked(fake_openai: FakeOpenAI):
    async with aiohttp.ClientSession() as http, http.get(f"{fake_openai.base_url}/models") as resp:
        assert resp.status == 401 and "didn't provide an API key" in (await resp.json())["error"]["message"]
    fake_openai.valid_keys = {"right"}
    for key, works in (("wrong", False), ("right", True)):
        sdk = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key=key, max_retries=0)
        if works:
            assert [m.id async for m in sdk.models.list()]
        else:
            with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
                await sdk.models.list()
        await sdk.close()


async def test_models(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI):
    assert {m.id async for m in client.models.list()} >= {"gpt-6.2-sol", "gpt-transcribe", "gpt-image-2.6-sunburst"}
    assert (await client.models.retrieve("gpt-6-luna")).id == "gpt-6-luna"
    fake_openai.models = ["only-this"]
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gpt-6-luna")


# --- spec validation ------------------------------------------------------------------------------

BAD_BODIES: dict[str, dict[str, Any]] = {
    "misspelt part type": {"input": [{"role": "user", "content": [{"type": "input_txt", "text": "hi"}]}]},
    "retired retrieval tool": {"input": "hi", "tools": [{"type": "retrieval"}]},
    "string temperature": {"input": "hi", "temperature": "hot"},
    "unknown parameter": {"input": "hi", "assistant_id": "asst_1"},
}
# where each bad body goes wrong, as every spec source (full or bundled) reports it
BAD_PARAMS = {
    "misspelt part type": "$.input[0].content[0]",
    "retired retrieval tool": "$.tools[0]",
    "string temperature": "$.temperature",
    "unknown parameter": "$.assistant_id",
}
GOOD_BODY: dict[str, Any] = {
    "model": "gpt-6.2-sol-2027-01-01",  # newer than any enum: model ids are open strings
    "conversation": "conv_1",
    "instructions": "be brief",
    "input": [
        {
            "role": "user",
            "content": [
                {"type": "input_text", "text": "hi"},
                {"type": "input_image", "file_id": "file-1", "detail": "auto"},
            ],
        }
    ],
    "tools": [
        {"type": "image_generation", "model": "gpt-image-2.6-sunburst", "partial_images": 1},
        {"type": "code_interpreter", "container": {"type": "auto", "file_ids": []}},
    ],
    "stream": True,
}


@pytest.mark.parametrize("source", ["in use", "bundled"])
@pytest.mark.parametrize("name", BAD_BODIES)
async def test_bad_bodies_land_in_violations(
    unchecked: tuple[FakeOpenAI, openai.AsyncOpenAI], monkeypatch: pytest.MonkeyPatch, name: str, source: str
):
    """Through the fake's HTTP path, with the spec in use and with the bundled copy alone (as on a fresh clone)."""
    if source == "bundled":
        bundled = spec.validator(spec.BUNDLED)
        monkeypatch.setattr(spec, "validator", lambda setting=None: bundled)
    fake, sdk = unchecked
    fake.script(Reply(text="never sent"))
    with pytest.raises(openai.BadRequestError, match="Invalid request body") as caught:
        await sdk.post("/responses", body={"model": "gpt-6.2-sol", **BAD_BODIES[name]}, cast_to=dict)
    assert len(fake.violations) == 1 and "CreateResponse" in fake.violations[0]
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == BAD_PARAMS[name]
    assert (await sdk.responses.create(model="gpt-6.2-sol", input="hi")).output_text == "never sent"


@pytest.mark.parametrize("which", ["found", "bundled", "sdk-fallback"])
def test_validators_accept_what_threadline_sends_and_catch_type_errors(which: str):
    validator: spec.BodyValidator
    if which == "found":
        validator = spec.validator()
    elif which == "bundled":
        validator = spec.validator(spec.BUNDLED)
    else:
        validator = spec.SdkValidator()
    assert validator.check("CreateResponse", GOOD_BODY) == []
    assert validator.check("CreateResponse", BAD_BODIES["string temperature"])[0].param == "$.temperature"
    assert validator.check("CreateResponse", BAD_BODIES["misspelt part type"])
    assert (
        validator.check("CreateSpeechRequest", {"model": "gpt-4o-mini-tts", "input": "hi"})[0].code
        == "missing_required_parameter"
    )
    form = {"file": spec.BINARY, "model": "gpt-transcribe", "temperature": "0.2"}
    assert validator.check_form("CreateTranscriptionRequest", form) == []


def test_bundled_copy_judges_like_the_spec_in_use():
    """The repo ships the bundled copy, so the SDK fallback never engages; and the bundled copy reports exactly
    what the spec in use reports (with the full spec beside the repo, that is the full spec)."""
    in_use = spec.locate()
    assert in_use.origin != "sdk" and in_use.describe() == spec.SOURCE
    bundled = spec.validator(spec.BUNDLED)
    for name, body in {"good": GOOD_BODY, **BAD_BODIES}.items():
        body = {"model": "gpt-6.2-sol", **body}
        problems = bundled.check("CreateResponse", body)
        assert problems == spec.validator().check("CreateResponse", body), name
        assert [p.param for p in problems] == ([BAD_PARAMS[name]] if name in BAD_PARAMS else []), name


@pytest.mark.parametrize("source", ["in use", "bundled"])
def test_request_schemas_match_the_spec(source: str):
    """Each route's body schema in the spec is the one ``REQUEST_SCHEMAS`` names; the retired ``retrieval`` tool,
    which the SDK fallback can't see, is caught."""
    location = spec.locate() if source == "in use" else spec.locate(spec.BUNDLED)
    assert location.path is not None, location
    assert spec.open_validator(location).check("CreateResponse", BAD_BODIES["retired retrieval tool"])
    document = json.loads(location.path.read_text(encoding="utf-8"))
    kinds = {"application/json": "json", "multipart/form-data": "multipart"}
    for (method, path, kind), schema in spec.REQUEST_SCHEMAS.items():
        content = document["paths"][path][method.lower()]["requestBody"]["content"]
        refs = {kinds[ct]: body["schema"]["$ref"].rsplit("/", 1)[-1] for ct, body in content.items() if ct in kinds}
        assert refs[kind] == schema


def test_spec_location_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv(spec.SPEC_ENV, str(tmp_path / "openapi.json"))
    with pytest.raises(FileNotFoundError, match=spec.SPEC_ENV):
        spec.find_spec()
    (tmp_path / "openapi.json").write_text("{}", encoding="utf-8")
    assert spec.find_spec() == tmp_path / "openapi.json"
    monkeypatch.setenv(spec.SPEC_ENV, spec.BUNDLED)
    assert spec.find_spec() == spec.BUNDLED_SPEC


def test_keys_newer_than_the_spec_are_not_unknown():
    body = {"model": "gpt-image-2.6-sunburst", "prompt": "a fox", "safety_identifier": "user-hash"}
    assert spec.validator().check("CreateImageRequest", body) == []


# --- files, audio, images -------------------------------------------------------------------------


async def test_files_are_kept(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI):
    image = media.jpeg(16, 16)
    uploaded = await client.files.create(file=("cat.jpg", image, "image/jpeg"), purpose="vision")
    assert uploaded.id.startswith("file-") and uploaded.bytes == len(image) and uploaded.filename == "cat.jpg"
    assert fake_openai.files[uploaded.id].data == image and fake_openai.files[uploaded.id].purpose == "vision"
    (upload,) = [r for r in fake_openai.requests if r.path == "/v1/files"]
    assert upload.form is not None and upload.form["file"].data == image


async def test_speech_is_real_opus(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI):
    speech = await client.audio.speech.create(
        model="gpt-4o-mini-tts", voice="alloy", input="Thirty characters of speech.", response_format="opus"
    )
    data = await speech.aread()
    assert data[:4] == b"OggS" and speech.response.headers["content-type"] == "audio/ogg"
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        assert stream.codec_context.name == "opus" and 1.5 < samples / stream.rate < 2.5
    wav = await (
        await client.audio.speech.create(model="gpt-4o-mini-tts", voice="alloy", input="hi", response_format="wav")
    ).aread()
    assert wav[:4] == b"RIFF"


async def test_transcription_returns_text_and_rejects_broken_audio(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI):
    fake_openai.transcript = "remind me at noon"
    voice = media.ogg_opus_voice(0.5)
    result = await client.audio.transcriptions.create(model="gpt-transcribe", file=("voice.ogg", voice, "audio/ogg"))
    assert result.text == "remind me at noon"
    with pytest.raises(openai.BadRequestError, match="corrupted"):
        await client.audio.transcriptions.create(
            model="gpt-transcribe", file=("bad.ogg", media.corrupt(voice), "audio/ogg")
        )


async def test_images_are_real_pngs(client: openai.AsyncOpenAI):
    generated = await client.images.generate(
        model="gpt-image-2.6-sunburst", prompt="a red fox", size="1024x1536", quality="low"
    )
    assert generated.data and generated.data[0].b64_json
    assert Image.open(io.BytesIO(base64.b64decode(generated.data[0].b64_json))).size == (1024, 1536)
    edited = await client.images.edit(
        model="gpt-image-2.6-sunburst", image=("in.png", media.png(20, 10), "image/png"), prompt="invert"
    )
    assert edited.data and edited.data[0].b64_json
    assert Image.open(io.BytesIO(base64.b64decode(edited.data[0].b64_json))).getpixel((0, 0)) == (0, 255, 255)


def test_media_makers_produce_real_files():
    assert Image.open(io.BytesIO(media.png(3, 2))).size == (3, 2)
    assert Image.open(io.BytesIO(media.jpeg())).format == "JPEG"
    assert media.m4a(0.3)[4:8] == b"ftyp" and media.wav(0.3)[:4] == b"RIFF" and media.pdf().startswith(b"%PDF-")
    with av.open(io.BytesIO(media.ogg_opus_voice(0.5))) as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.name, stream.rate, stream.channels) == ("opus", 48_000, 1)
    broken = media.corrupt(media.png(20, 20))
    assert broken[:8] == media.png(20, 20)[:8]
    with pytest.raises(OSError):
        Image.open(io.BytesIO(broken)).load()
