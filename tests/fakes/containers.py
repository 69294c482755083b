"""Code-interpreter containers for the fake OpenAI: the container API, and the code the fake model runs in one.

Routes (mounted by ``FakeOpenAI._routes``): ``POST /containers``, ``GET``/``DELETE /containers/{id}``,
``GET``/``POST /containers/{id}/files`` (a multipart upload or ``{"file_id"}`` copying an uploaded file),
``GET /containers/{id}/files/{file_id}/content``. A container the test expires (``expire``) answers with status
``expired``; using it (its files, or a response's ``code_interpreter`` tool naming it) is refused, as is an unknown
one (404), like the real API.

The fake model: when a response offers ``code_interpreter`` with a container id and the user asks for a chart
("plot", "chart", "graph", "by week"…), it emits a ``code_interpreter_call`` (code that reads the container's data
files, registers the CJK font when the instructions name one, and saves a PNG), writes that PNG (drawn with
Pillow from the spreadsheet's numbers) into the container, and cites it with a ``container_file_citation``
(unless ``omit_citations``: real models sometimes forget). The code's logs come back with
``include=["code_interpreter_call.outputs"]``, on the create request or when the response is read back.
"""

from __future__ import annotations

import io
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from aiohttp import web
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from tests.fakes.openai_server import FakeOpenAI, Recorded, Reply, Turn

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

WANTS_CHART = re.compile(r"\b(plot|chart|graph|draw|visuali[sz]e|by (?:week|month|day))", re.IGNORECASE)
FONT_PATH = re.compile(r"(/mnt/data/\S+\.(?:ttc|otf|ttf))")
DATA_SUFFIXES = (".xlsx", ".xls", ".csv", ".tsv", ".json", ".parquet")
OUTPUTS = "code_interpreter_call.outputs"


@dataclass(slots=True)
class FakeContainerFile:
    id: str
    container_id: str
    path: str
    data: bytes = field(repr=False)
    source: str  # "user" (uploaded or copied in) or "assistant" (made by code)
    created_at: int = field(default_factory=lambda: int(time.time()))

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "container.file",
            "container_id": self.container_id,
            "created_at": self.created_at,
            "bytes": len(self.data),
            "path": self.path,
            "source": self.source,
        }


@dataclass(slots=True)
class FakeContainer:
    id: str
    name: str
    memory_limit: str
    status: str = "running"
    created_at: int = field(default_factory=lambda: int(time.time()))
    files: dict[str, FakeContainerFile] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "container",
            "name": self.name,
            "created_at": self.created_at,
            "status": self.status,
            "last_active_at": self.created_at,
            "expires_after": {"anchor": "last_active_at", "minutes": 20},
            "memory_limit": self.memory_limit,
        }

    def add(self, filename: str, data: bytes, source: str, *, prefixed: bool = True) -> FakeContainerFile:
        # Uploaded files land under a hashed prefix, as the real API puts them: code must use the given path.
        name = f"{uuid.uuid4().hex[:12]}-{filename}" if prefixed else filename
        made = FakeContainerFile(f"cfile_{uuid.uuid4().hex}", self.id, f"/mnt/data/{name}", data, source)
        self.files[made.id] = made
        return made


def _recorded(request: web.Request) -> Recorded:
    from tests.fakes.openai_server import RECORDED  # the server imports this module

    return request[RECORDED]


def _error(status: int, message: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    return web.json_response(body, status=status)


class FakeContainers:
    def __init__(self, server: FakeOpenAI) -> None:
        self.server = server
        self.containers: dict[str, FakeContainer] = {}
        self.omit_citations = False
        """Test hook: the model cites no file it made (the bot must find it in the container's file list)."""
        self.forged: tuple[str, str, str, bytes] | None = None
        """Test hook: the next answer cites this (container id, file id, filename, data) without running code, as a
        model naming another thread's container would."""
        self.vanish_on_use: set[str] = set()
        """Test hook: these containers disappear when a response next names them (a 404 mid-turn, after the
        bot found them running)."""
        self.outputs: dict[str, list[dict[str, Any]]] = {}  # code_interpreter_call id → its logs
        self.runs: list[tuple[str, str]] = []  # (container id, code) of every code the fake model ran

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/containers", self._create),
            ("GET", "/containers/{container_id}", self._get),
            ("DELETE", "/containers/{container_id}", self._delete),
            ("GET", "/containers/{container_id}/files", self._list_files),
            ("POST", "/containers/{container_id}/files", self._add_file),
            ("GET", "/containers/{container_id}/files/{file_id}/content", self._content),
        ]

    # --- test hooks ----------------------------------------------------------------------------------------
    def expire(self, container_id: str) -> None:
        """OpenAI dropped the idle container: status ``expired``, its files gone, every use refused."""
        container = self.containers[container_id]
        container.status = "expired"
        container.files.clear()

    def paths(self, container_id: str) -> list[str]:
        return [f.path for f in self.containers[container_id].files.values()]

    # --- the API -------------------------------------------------------------------------------------------
    def _usable(self, container_id: str) -> FakeContainer | web.Response:
        container = self.containers.get(container_id)
        if container is None:
            return _error(404, f"Container with id '{container_id}' not found.", "container_id")
        if container.status != "running":
            return _error(400, "Container is expired.", "container_id")
        return container

    async def _create(self, request: web.Request) -> web.Response:
        body = _recorded(request).json or {}
        container = FakeContainer(f"cntr_{uuid.uuid4().hex}", str(body["name"]), body.get("memory_limit") or "1g")
        self.containers[container.id] = container
        for file_id in body.get("file_ids") or []:
            stored = self.server.files.get(file_id)
            if stored is None:
                return _error(404, f"No such File object: {file_id}", "file_ids")
            container.add(stored.filename, stored.data, "user")
        return web.json_response(container.json())

    async def _get(self, request: web.Request) -> web.Response:
        container = self.containers.get(request.match_info["container_id"])
        if container is None:
            return _error(404, f"Container with id '{request.match_info['container_id']}' not found.")
        return web.json_response(container.json())

    async def _delete(self, request: web.Request) -> web.Response:
        container_id = request.match_info["container_id"]
        if self.containers.pop(container_id, None) is None:
            return _error(404, f"Container with id '{container_id}' not found.")
        return web.json_response({"id": container_id, "object": "container.deleted", "deleted": True})

    async def _list_files(self, request: web.Request) -> web.Response:
        container = self._usable(request.match_info["container_id"])
        if isinstance(container, web.Response):
            return container
        files = sorted(container.files.values(), key=lambda f: f.created_at)
        if request.query.get("order", "desc") == "desc":
            files.reverse()
        if after := request.query.get("after"):
            ids = [f.id for f in files]
            files = files[ids.index(after) + 1 :] if after in ids else []
        limit = int(request.query.get("limit", "20"))
        page = files[:limit]
        return web.json_response(
            {
                "object": "list",
                "data": [f.json() for f in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(files) > limit,
            }
        )

    async def _add_file(self, request: web.Request) -> web.Response:
        container = self._usable(request.match_info["container_id"])
        if isinstance(container, web.Response):
            return container
        form = _recorded(request).form
        if form is not None:
            upload = form.get("file")
            if upload is None or not hasattr(upload, "data"):
                return _error(400, "'file' must be a file upload.", "file")
            return web.json_response(container.add(upload.filename or "upload", upload.data, "user").json())
        file_id = (_recorded(request).json or {}).get("file_id")
        stored = self.server.files.get(str(file_id))
        if stored is None:
            return _error(404, f"No such File object: {file_id}", "file_id")
        return web.json_response(container.add(stored.filename, stored.data, "user").json())

    async def _content(self, request: web.Request) -> web.Response:
        container_id, file_id = request.match_info["container_id"], request.match_info["file_id"]
        container = self.containers.get(container_id)
        if container is not None:
            if container.status != "running":
                return _error(400, "Container is expired.", "container_id")
            if file_id in container.files:
                return web.Response(body=container.files[file_id].data, content_type="application/octet-stream")
        if (container_id, file_id) in self.server.container_files:  # a scripted Reply(container_file=…)
            data = self.server.container_files[(container_id, file_id)]
            return web.Response(body=data, content_type="application/octet-stream")
        return _error(404, f"No such container file: {file_id} in {container_id}", "file_id")

    # --- responses -----------------------------------------------------------------------------------------
    @staticmethod
    def named(body: Mapping[str, Any]) -> list[str]:
        """The container ids a response's ``code_interpreter`` tools name."""
        return [
            str(tool["container"])
            for tool in body.get("tools") or []
            if isinstance(tool, Mapping) and tool.get("type") == "code_interpreter"
            if isinstance(tool.get("container"), str)
        ]

    def scripted(self, reply: Reply, body: Mapping[str, Any]) -> Reply:
        """A scripted ``Reply(container_file=…)`` in a response that names a container: the code ran there (the
        model cannot run code anywhere else), so the file is made in that container."""
        named = self.named(body)
        if not reply.container_file or not named or named[0] not in self.containers:
            return reply
        _container_id, _file_id, filename, data = reply.container_file
        made = self.containers[named[0]].add(filename, data, "assistant", prefixed=False)
        return replace(reply, container_file=(named[0], made.id, filename, data))

    def refusal(self, body: Mapping[str, Any]) -> web.Response | None:
        """A response naming an unknown (404) or expired (400) container is refused before anything runs."""
        for container_id in self.named(body):
            if container_id in self.vanish_on_use:
                self.vanish_on_use.discard(container_id)
                self.containers.pop(container_id, None)
            usable = self._usable(container_id)
            if isinstance(usable, web.Response):
                return usable
        return None

    def plan(self, turn: Turn, current: str) -> None:
        """The fake model runs code when asked for a chart and given a container: see the module docstring."""
        for item in turn.tool_items:  # a scripted Reply(container_file=…)'s code: its logs, for read-backs
            if item.get("type") == "code_interpreter_call":
                self.outputs.setdefault(item["id"], [{"type": "logs", "logs": "ran the scripted code"}])
        if self.forged is not None:
            forged, self.forged = self.forged, None
            turn.reply = replace(turn.reply, container_file=forged)
            return
        named = self.named(turn.body)
        if not named or turn.reply.container_file or turn.reply.end in {"failed", "error"}:
            return
        if not WANTS_CHART.search(current):
            return
        container = self.containers[named[0]]
        data_files = [f for f in container.files.values() if f.source == "user" and f.path.endswith(DATA_SUFFIXES)]
        font = FONT_PATH.search(str(turn.body.get("instructions") or ""))
        values = _numbers(data_files[0].data, data_files[0].path) if data_files else [1.0, 3.0, 2.0]
        weekly = "week" in current.lower()
        if weekly:
            values = [sum(values[i : i + 7]) for i in range(0, len(values), 7)]
        name = "sales_by_week.png" if weekly else "chart.png"
        chart = container.add(name, _line_chart(values), "assistant", prefixed=False)
        code = _code(data_files, font[1] if font else None, chart.path)
        logs = f"read {len(values)} values from {data_files[0].path if data_files else 'sample data'}\n"
        logs += f"saved {chart.path}"
        item_id = f"ci_{uuid.uuid4().hex}"
        self.outputs[item_id] = [{"type": "logs", "logs": logs}]
        self.runs.append((container.id, code))
        wants = OUTPUTS in (turn.body.get("include") or [])
        item = {
            "id": item_id,
            "type": "code_interpreter_call",
            "status": "completed",
            "container_id": container.id,
            "code": code,
            "outputs": self.outputs[item_id] if wants else None,
        }
        turn.tool_items.append(item)
        if not self.omit_citations:
            turn.reply = replace(turn.reply, container_file=(container.id, chart.id, name, chart.data))

    def read_back(self, response: dict[str, Any], include: list[str]) -> dict[str, Any]:
        """``GET /responses/{id}``: a code_interpreter_call's outputs when ``include`` asks for them, else null."""
        wanted = OUTPUTS in include
        response["output"] = [dict(item) for item in response.get("output") or []]
        for item in response["output"]:
            if item.get("type") == "code_interpreter_call" and item.get("id") in self.outputs:
                item["outputs"] = self.outputs[item["id"]] if wanted else None
        return response


def _numbers(data: bytes, path: str) -> list[float]:
    """The numbers of a data file's last numeric column (an xlsx read with openpyxl, or a csv)."""
    rows: list[list[Any]] = []
    try:
        if path.endswith(".xlsx"):
            import openpyxl

            sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=True).active
            rows = [list(row) for row in sheet.iter_rows(values_only=True)] if sheet is not None else []
        else:
            rows = [line.split(",") for line in data.decode("utf-8", "replace").splitlines()]
    except Exception:
        return [1.0, 3.0, 2.0]
    values: list[float] = []
    for row in rows[1:]:
        for cell in reversed(row):
            try:
                values.append(float(cell))
                break
            except (TypeError, ValueError):
                continue
    return values or [1.0, 3.0, 2.0]


def _line_chart(values: list[float]) -> bytes:
    """A PNG line chart of ``values`` (what the fake model's matplotlib would save)."""
    width, height, pad = 640, 400, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.line([(pad, pad), (pad, height - pad), (width - pad, height - pad)], fill="black", width=2)
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = (width - 2 * pad) / max(1, len(values) - 1)
    points = [(pad + i * step, height - pad - (v - low) / span * (height - 2 * pad)) for i, v in enumerate(values)]
    if len(points) > 1:
        draw.line(points, fill=(31, 119, 180), width=3)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _code(data_files: list[FakeContainerFile], font: str | None, chart: str) -> str:
    lines = ["import pandas as pd", "from matplotlib import font_manager, pyplot as plt"]
    if font:
        lines += [
            f"font_manager.fontManager.addfont({font!r})",
            f"plt.rcParams['font.family'] = font_manager.FontProperties(fname={font!r}).get_name()",
        ]
    source = data_files[0].path if data_files else None
    lines.append(f"df = pd.read_excel({source!r})" if source else "df = pd.DataFrame({'y': [1, 3, 2]})")
    lines += ["df.plot(x=df.columns[0], y=df.columns[-1], kind='line')", f"plt.savefig({chart!r})"]
    return "\n".join(lines) + "\n"
