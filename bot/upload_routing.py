"""Where each file a user sends goes: the code interpreter, retrieval (``file_search``), vision or transcription.

The table (README, "Files: where they go"):

| files | route |
|---|---|
| data: csv, tsv, xlsx, xls, json, parquet | the code interpreter (the thread's container) |
| documents: pdf, docx, pptx, md, txt, html, source code | retrieval (and the interpreter for analysis) |
| images (by MIME type) | vision |
| audio and voice notes (by MIME type) | transcription |
| anything else | refused, naming the file and what is accepted |

``THREADLINE_UPLOAD_ROUTES`` changes it per extension: ``ext=route`` pairs (``log=retrieval,xml=interpreter``) or a
JSON object; ``ext=refuse`` takes an extension out. Images and audio go by their MIME type, whatever the table.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from bot.types import AttachmentKind


class Route(enum.StrEnum):
    INTERPRETER = "interpreter"  # the code interpreter: the thread's container
    RETRIEVAL = "retrieval"  # file_search over the thread's vector store
    VISION = "vision"  # the model looks at it
    TRANSCRIPTION = "transcription"  # speech to text


REFUSE = "refuse"  # in THREADLINE_UPLOAD_ROUTES: take an extension out of the table

DATA_SUFFIXES = ("csv", "tsv", "xlsx", "xls", "json", "parquet")
DOCUMENT_SUFFIXES = ("pdf", "docx", "pptx", "md", "markdown", "txt", "html", "htm", "tex", "rst")
SOURCE_SUFFIXES = (
    "c",
    "cc",
    "cpp",
    "h",
    "hpp",
    "cs",
    "css",
    "go",
    "java",
    "js",
    "mjs",
    "ts",
    "php",
    "py",
    "rb",
    "rs",
    "sh",
    "kt",
    "swift",
    "sql",
)
IMAGE_SUFFIXES = ("png", "jpg", "jpeg", "gif", "webp", "heic", "heif")
AUDIO_SUFFIXES = ("flac", "mp3", "m4a", "mp4", "mpeg", "mpga", "ogg", "oga", "opus", "wav", "webm")

DEFAULT_ROUTES: Mapping[str, Route] = MappingProxyType(
    {
        **dict.fromkeys(DATA_SUFFIXES, Route.INTERPRETER),
        **dict.fromkeys(DOCUMENT_SUFFIXES + SOURCE_SUFFIXES, Route.RETRIEVAL),
        **dict.fromkeys(IMAGE_SUFFIXES, Route.VISION),
        **dict.fromkeys(AUDIO_SUFFIXES, Route.TRANSCRIPTION),
    }
)

# A message that asks for numbers, tables or charts: documents go to the interpreter too. Stems, so "analyse",
# "analyze" and "analysis" all count; short words whole ("sum", not "summary": a summary is retrieval's).
_ANALYSIS = re.compile(
    r"analy[sz]|\bplot|\bchart|\bgraph|\bcompute|\bcalculat|\btables?\b|\bsum(?:s|med)?\b|\btotals?\b|\baverage"
    r"|\bmean\b|\bmedian\b|\bstatistic|\bcorrelat|\bregress|\bhistogram|\bvisuali[sz]|\bpivot|\btrend"
    r"|\bspreadsheet|\bextract (?:the )?(?:data|numbers|table)|分析|统计|计算|图表|画图|绘制|折线|柱状|汇总|平均",
    re.IGNORECASE,
)


def asks_for_analysis(text: str) -> bool:
    """Whether the message asks for numbers worked out, a table or a chart (then documents go to the code
    interpreter as well as to retrieval)."""
    return bool(_ANALYSIS.search(text))


def suffix_of(filename: str) -> str:
    return filename.rsplit(".", 1)[-1].lower() if "." in filename else ""


def parse_routes(value: Any) -> dict[str, str]:
    """``THREADLINE_UPLOAD_ROUTES`` as {extension: route or "refuse"}: ``ext=route`` pairs separated by commas,
    or a JSON object. Raises ``ValueError`` naming a route that does not exist."""
    if isinstance(value, Mapping):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, str) and value.strip().startswith("{"):
        loaded = json.loads(value)
        if not isinstance(loaded, dict):
            raise ValueError("THREADLINE_UPLOAD_ROUTES: a JSON value must be an object")
        pairs = [(str(k), str(v)) for k, v in loaded.items()]
    elif isinstance(value, str):
        pairs = []
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            ext, sep, route = item.partition("=")
            if not sep:
                raise ValueError(f"THREADLINE_UPLOAD_ROUTES: {item!r} is not ext=route")
            pairs.append((ext, route))
    else:
        raise ValueError("THREADLINE_UPLOAD_ROUTES must be ext=route pairs or a JSON object")
    routes: dict[str, str] = {}
    allowed = [*(r.value for r in Route), REFUSE]
    for ext, route in pairs:
        ext, route = ext.strip().lower().lstrip("."), route.strip().lower()
        if not ext or route not in allowed:
            raise ValueError(f"THREADLINE_UPLOAD_ROUTES: {ext}={route} (routes: {', '.join(allowed)})")
        routes[ext] = route
    return routes


@dataclass(frozen=True, slots=True)
class RoutedFile:
    """A file the user sent, read and checked, on its way to the interpreter or retrieval."""

    name: str
    mime: str
    data: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class UploadRoutes:
    """The table with the setting's overrides applied."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        table: dict[str, Route] = dict(DEFAULT_ROUTES)
        for ext, route in (overrides or {}).items():
            if route == REFUSE:
                table.pop(ext, None)
            else:
                table[ext] = Route(route)
        self.table: Mapping[str, Route] = MappingProxyType(table)

    def route(self, filename: str, kind: AttachmentKind) -> Route | None:
        """Where a file goes: images and audio by their MIME type (``kind``), the rest by extension; None when
        the file is not accepted."""
        if kind is AttachmentKind.IMAGE:
            return Route.VISION
        if kind in {AttachmentKind.VOICE, AttachmentKind.AUDIO}:
            return Route.TRANSCRIPTION
        return self.table.get(suffix_of(filename))

    def is_document(self, filename: str) -> bool:
        """Whether a file goes to retrieval."""
        return self.table.get(suffix_of(filename)) is Route.RETRIEVAL

    def accepted(self, route: Route | None = None) -> list[str]:
        """The accepted extensions (of one route), sorted."""
        return sorted(ext for ext, to in self.table.items() if route is None or to is route)

    def refusal(self, filename: str) -> str:
        """One line naming the file and what is accepted."""
        data = ", ".join(self.accepted(Route.INTERPRETER))
        documents = ", ".join(self.accepted(Route.RETRIEVAL))
        return (
            f"I can't use {filename}: that kind of file isn't accepted. I take data files ({data}), documents "
            f"({documents}), images and audio."
        )
