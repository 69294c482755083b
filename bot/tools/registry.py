"""The tool registry: which tools a turn offers the model, and running the function calls the model makes.

Three kinds contribute to a turn's ``tools`` list: hosted tools (``THREADLINE_TOOLS``: run by OpenAI), function
tools (``THREADLINE_FUNCTION_TOOLS`` and installed ``threadline.tools`` entry points: run here) and remote MCP
servers (``THREADLINE_MCP_SERVERS``: called by OpenAI). A per-turn ``ToolContext`` carries what the turn adds
(its code files) and the names switched off for it (per-channel settings plug in there).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import MappingProxyType
from typing import Any

import aiohttp

from bot.errors import StartupError
from bot.settings import Settings
from bot.stream_events import ToolCall
from bot.tools.calculator import calculate
from bot.tools.clock import current_time
from bot.tools.functions import FunctionTool, ToolDefinitionError, function_tool, load_dotted, run_calls
from bot.tools.mcp import mcp_tools
from bot.tools.weather import weather_tool

log = logging.getLogger("threadline.tools")

ENTRY_POINT_GROUP = "threadline.tools"


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What one turn adds to its tools: the files its code interpreter gets, the vector stores its file search
    searches (the thread's, the channel's knowledge base), and the tool names (hosted tools, functions, MCP server
    labels) switched off for it."""

    code_file_ids: Sequence[str] = ()
    container_id: str | None = None  # the thread's container (bot.containers); None: a fresh "auto" one
    vector_store_ids: Sequence[str] = ()
    disabled: frozenset[str] = frozenset()


HostedTool = Callable[[Settings, ToolContext], dict[str, Any]]

HOSTED_TOOLS: Mapping[str, HostedTool] = MappingProxyType(
    {
        "code_interpreter": lambda settings, turn: {
            "type": "code_interpreter",
            "container": turn.container_id or {"type": "auto", "file_ids": list(turn.code_file_ids)},
        },
        "image_generation": lambda settings, turn: {
            "type": "image_generation",
            "model": settings.image_model,
            "partial_images": 1,
        },
        "web_search": lambda settings, turn: {"type": "web_search"},
    }
)

# What a request includes for the tools it offers (``include``): the output each needs to be shown.
INCLUDES: Mapping[str, str] = MappingProxyType({"file_search": "file_search_call.results"})


def includes_for(tools: Sequence[Mapping[str, Any]]) -> list[str]:
    """The ``include`` list of a request offering ``tools`` (file search: the passages it found, for quotes)."""
    return sorted({INCLUDES[str(tool.get("type"))] for tool in tools if tool.get("type") in INCLUDES})


def builtin_functions(settings: Settings, http: aiohttp.ClientSession) -> dict[str, Callable[..., Any]]:
    """The built-in function tools by name."""
    return {
        "current_time": current_time,
        "calculate": calculate,
        "get_weather": weather_tool(
            http, forecast_url=settings.open_meteo_url, geocoding_url=settings.open_meteo_geocoding_url
        ),
    }


class ToolRegistry:
    def __init__(
        self,
        *,
        settings: Settings,
        hosted: Sequence[str],
        functions: Mapping[str, FunctionTool],
        mcp: Mapping[str, dict[str, Any]],
    ) -> None:
        self.settings = settings
        self.hosted = tuple(hosted)
        self.functions = dict(functions)
        self.mcp = dict(mcp)
        self._function_specs = {name: tool.spec() for name, tool in self.functions.items()}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        http: aiohttp.ClientSession,
        *,
        environ: Mapping[str, str] | None = None,
        plugins: Iterable[EntryPoint] | None = None,
    ) -> ToolRegistry:
        """Build the registry once at start-up. An unknown hosted tool is warned about and skipped (as before);
        a function tool that cannot be loaded, or an MCP server without its secret, is a ``StartupError``."""
        hosted = []
        for name in settings.tools:
            if name in HOSTED_TOOLS:
                hosted.append(name)
            else:
                log.warning("unknown tool %r in THREADLINE_TOOLS ignored (known: %s)", name, ", ".join(HOSTED_TOOLS))
        found = plugins if plugins is not None else entry_points(group=ENTRY_POINT_GROUP)
        functions = load_functions(settings.function_tools, builtin_functions(settings, http), found)
        mcp = mcp_tools(settings.mcp_servers, os.environ if environ is None else environ)
        return cls(settings=settings, hosted=hosted, functions=functions, mcp=mcp)

    def describe(self) -> str:
        """One line for the doctor: what the model is offered."""
        return (
            f"tools: hosted {', '.join(self.hosted) or 'none'}; functions {', '.join(self.functions) or 'none'}; "
            f"MCP servers {', '.join(self.mcp) or 'none'}"
        )

    def tools_for(self, context: ToolContext) -> list[dict[str, Any]]:
        """The ``tools`` list of one turn's requests."""
        off = context.disabled
        tools = [HOSTED_TOOLS[name](self.settings, context) for name in self.hosted if name not in off]
        if context.vector_store_ids and "file_search" not in off:
            tools.append({"type": "file_search", "vector_store_ids": list(context.vector_store_ids)})
        tools += [spec for name, spec in self._function_specs.items() if name not in off]
        tools += [tool for label, tool in self.mcp.items() if label not in off]
        return tools

    async def run(self, calls: Sequence[ToolCall], context: ToolContext) -> list[str]:
        """Run one response's function calls concurrently, each within ``THREADLINE_TOOL_TIMEOUT_SECS``; the
        outputs (errors included, as text) come back in the calls' order."""
        enabled = {name: tool for name, tool in self.functions.items() if name not in context.disabled}
        return await run_calls(enabled, calls, limit_secs=self.settings.tool_timeout_secs)


def load_functions(
    names: Sequence[str], builtins: Mapping[str, Callable[..., Any]], plugins: Iterable[EntryPoint]
) -> dict[str, FunctionTool]:
    """Every installed ``threadline.tools`` entry point (named by the entry point), then each name of the setting:
    a built-in, an entry point's name (already there), or ``package.module:function``."""
    found: dict[str, FunctionTool] = {}

    def add(tool: FunctionTool, origin: str) -> None:
        if tool.name in found:
            raise StartupError(f"two function tools are named {tool.name!r} (the second from {origin})")
        found[tool.name] = tool

    from_plugins: set[str] = set()
    for plugin in plugins:
        try:
            add(_as_tool(plugin.load(), plugin.name), f"entry point {plugin.value}")
        except StartupError:
            raise
        except Exception as exc:
            raise StartupError(f"the tool entry point {plugin.name} = {plugin.value} cannot be loaded: {exc}") from exc
        from_plugins.add(plugin.name)
    for name in names:
        try:
            if name in builtins:
                add(function_tool(builtins[name], name=name), "THREADLINE_FUNCTION_TOOLS")
            elif ":" in name:
                add(_as_tool(load_dotted(name), None), name)
            elif name not in from_plugins:
                known = ", ".join(builtins)
                raise StartupError(
                    f"THREADLINE_FUNCTION_TOOLS: unknown tool {name!r} (built-in: {known}; "
                    "or a path like package.module:function)"
                )
        except ToolDefinitionError as exc:
            raise StartupError(f"THREADLINE_FUNCTION_TOOLS: {exc}") from exc
    return found


def _as_tool(target: Any, name: str | None) -> FunctionTool:
    if isinstance(target, FunctionTool):
        return target
    if not callable(target):
        raise ToolDefinitionError(f"{target!r} is not a function")
    return function_tool(target, name=name)
