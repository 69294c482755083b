"""Where files go (the routing table and its setting), what counts as asking for analysis, the checks that refuse
bad input before anything is uploaded, and the CJK font: units, then the console as a new user meets them."""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path

import pytest

from bot.doctor import check_cjk_font
from bot.errors import AttachmentError
from bot.file_checks import check_file
from bot.fonts import FONT_FILE, font_instruction, font_path
from bot.settings import Settings
from bot.types import AttachmentKind
from bot.upload_routing import Route, UploadRoutes, asks_for_analysis, parse_routes
from tests.fakes.openai_server import FakeOpenAI
from tests.helpers import make_settings, spawn_threadline, user_env
from tests.test_containers_e2e import sales_xlsx

DOC = AttachmentKind.DOCUMENT


# --- the table and its setting ------------------------------------------------------------------------------------


def test_the_default_table_routes_data_documents_images_and_audio() -> None:
    routes = UploadRoutes()
    for name in ("sales.xlsx", "old.XLS", "a.csv", "t.tsv", "d.json", "p.parquet"):
        assert routes.route(name, DOC) is Route.INTERPRETER, name
    for name in ("handbook.pdf", "memo.docx", "deck.pptx", "notes.md", "a.txt", "page.html", "main.py", "x.go"):
        assert routes.route(name, DOC) is Route.RETRIEVAL, name
    assert routes.route("photo.bin", AttachmentKind.IMAGE) is Route.VISION, "images go by their MIME type"
    assert routes.route("memo.m4a", AttachmentKind.AUDIO) is Route.TRANSCRIPTION
    assert routes.route("voice", AttachmentKind.VOICE) is Route.TRANSCRIPTION
    assert routes.route("data.bin", AttachmentKind.OTHER) is None and routes.route("archive.zip", DOC) is None


def test_the_refusal_names_the_file_and_what_is_accepted() -> None:
    line = UploadRoutes().refusal("data.bin")
    assert "\n" not in line and line.startswith("I can't use data.bin")
    assert "csv, json, parquet, tsv, xls, xlsx" in line and "pdf" in line and "images and audio" in line


def test_the_setting_overrides_the_table() -> None:
    assert parse_routes("log=retrieval, .XML = interpreter,json=refuse") == {
        "log": "retrieval",
        "xml": "interpreter",
        "json": "refuse",
    }
    assert parse_routes('{"log": "retrieval"}') == {"log": "retrieval"}
    settings = Settings(_env_file=None, upload_routes="log=retrieval,json=refuse,pdf=interpreter")  # type: ignore[call-arg]
    routes = UploadRoutes(settings.upload_routes)
    assert routes.route("server.log", DOC) is Route.RETRIEVAL
    assert routes.route("d.json", DOC) is None, "refuse takes an extension out"
    assert routes.route("scan.pdf", DOC) is Route.INTERPRETER
    for bad in ("x=nowhere", "justaword", "[1, 2]"):
        with pytest.raises(ValueError, match="THREADLINE_UPLOAD_ROUTES"):
            parse_routes(bad)


@pytest.mark.parametrize(
    "text",
    [
        "plot the sales as a line chart",
        "Analyse this report",
        "what is the total by region?",
        "compute the average price",
        "make a table of the results",
        "sum the second column",
        "把销量画成折线图",
        "分析一下这个文件",
    ],
)
def test_messages_that_ask_for_analysis(text: str) -> None:
    assert asks_for_analysis(text)


@pytest.mark.parametrize(
    "text", ["summarize this handbook", "what does section 3 say?", "who wrote this?", "translate it", ""]
)
def test_messages_that_do_not(text: str) -> None:
    assert not asks_for_analysis(text)


# --- checks before upload ------------------------------------------------------------------------------------------


def zip_bomb(name: str = "book.xlsx") -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", b"0" * (64 * 1024 * 1024))
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("sales.xlsx", b"this is not a spreadsheet", "sales.xlsx is not a valid .xlsx file"),
        ("sales.xlsx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512, "sales.xlsx is not a plain .xlsx file"),
        ("old.xls", b"name,amount\n", "old.xls is not an Excel workbook"),
        ("data.csv", bytes(range(256)) * 4, "data.csv is not a text file"),
        ("table.parquet", b"not parquet at all", "table.parquet is not a Parquet file"),
        ("empty.csv", b"", "empty.csv is empty"),
        ("big.csv", b"a,b\n" * 1000, "big.csv is 0.0 MB; the limit is 0.0 MB"),
    ],
)
def test_bad_files_are_refused_naming_the_file_and_the_problem(name: str, data: bytes, problem: str) -> None:
    with pytest.raises(AttachmentError, match="^" + problem.replace(".", r"\.")):
        check_file(name, data, max_bytes=2000)


def test_a_zip_bomb_is_refused_before_it_is_opened() -> None:
    with pytest.raises(AttachmentError, match=r"^bomb\.xlsx unpacks to 64\.0 MB .* zip bomb"):
        check_file("bomb.xlsx", zip_bomb(), max_bytes=25 * 1024 * 1024)


def test_good_files_pass() -> None:
    check_file("sales.xlsx", sales_xlsx(), max_bytes=25 * 1024 * 1024)
    check_file("utf16.csv", "a,b\n1,2\n".encode("utf-16"), max_bytes=1000)
    check_file("p.parquet", b"PAR1" + b"\0" * 16 + b"PAR1", max_bytes=1000)
    check_file("notes.txt", "时间,销量\n".encode(), max_bytes=1000)


# --- the CJK font ---------------------------------------------------------------------------------------------------


def test_the_cjk_font_ships_with_the_package_and_the_doctor_checks_it(tmp_path: Path) -> None:
    found = font_path()
    assert found is not None and found.name == FONT_FILE
    assert found.read_bytes()[:4] == b"ttcf", "an OpenType collection"
    settings = make_settings(tmp_path, "http://127.0.0.1:9/v1", tools=["code_interpreter"])
    assert check_cjk_font(settings)[0] == "ok"
    level, line = check_cjk_font(settings, None)
    assert level == "warn" and "no CJK chart font" in line and "noto-cjk-sans-otc" in line
    assert check_cjk_font(make_settings(tmp_path, "http://127.0.0.1:9/v1"), None)[0] == "ok", "not needed"
    instruction = font_instruction("/mnt/data/x-font.ttc")
    assert "fontManager.addfont('/mnt/data/x-font.ttc')" in instruction and "rcParams['font.family']" in instruction


# --- bad input through the console -----------------------------------------------------------------------------------


async def test_bad_data_files_get_a_clear_reply_nothing_is_uploaded_and_the_thread_goes_on(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    files = {
        "fake.xlsx": b"PK but not really a zip",
        "empty.csv": b"",
        "binary.csv": bytes(range(256)) * 40,
        "bomb.xlsx": zip_bomb(),
        "huge.csv": b"x,y\n" * 400_000,
        "data.bin": b"\x00\x01\x02",
    }
    lines = []
    for name, data in files.items():
        await asyncio.to_thread((tmp_path / name).write_bytes, data)
        lines += [f"/attach {name}", f"look at {name}"]
    env = user_env(
        tmp_path,
        fake_openai.base_url,
        THREADLINE_DATABASE=str(tmp_path / "db" / "threadline.db"),
        THREADLINE_TOOLS="code_interpreter",
        THREADLINE_MAX_ATTACHMENT_BYTES=str(1024 * 1024),
    )
    proc = await spawn_threadline(tmp_path, env, "run")
    script = "\n".join([*lines, "and now just hello"]) + "\n"
    out_bytes, err_bytes = await asyncio.wait_for(proc.communicate(script.encode()), timeout=60)
    out = out_bytes.decode()
    assert proc.returncode == 0, err_bytes.decode()
    warnings = [line for line in out.splitlines() if "⚠" in line]
    assert len(warnings) == len(files), out
    expected = [
        "fake.xlsx is not a valid .xlsx file.",
        "empty.csv is empty",
        "binary.csv is not a text file",
        "bomb.xlsx unpacks to 64.0 MB",
        "huge.csv is 1.5 MB; the limit is 1.0 MB.",
        "I can't use data.bin: that kind of file isn't accepted.",
    ]
    for warning, problem in zip(warnings, expected, strict=True):
        assert problem in warning, (warning, problem)
    uploads = [r for r in fake_openai.requests if r.method == "POST" and r.path.startswith(("/v1/files", "/v1/cont"))]
    assert uploads == [], "nothing was uploaded"
    assert "You said: «and now just hello»" in out, "the thread goes on"
