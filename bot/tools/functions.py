"""Function tools: typed Python functions offered to the model as strict JSON-schema tools, and run here.

The schema comes from the function's type hints (through a pydantic model, made strict by the openai SDK's
``pydantic_function_tool``: every parameter required, no extra keys) and its docstring (the first paragraph
describes the tool; an ``Args:`` section or ``:param name:`` lines describe the parameters). Calls run
concurrently, each with a timeout; whatever goes wrong goes back to the model as text, never to the turn.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import openai
import pydantic

from bot.stream_events import ToolCall

log = logging.getLogger("threadline.tools")

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SECTION = re.compile(r"^[A-Z][A-Za-z ]*:$")
OUTPUT_LIMIT = 100_000  # characters of one tool's output sent back to the model


class ToolError(Exception):
    """A tool's failure whose message is meant for the model as it stands ("Unknown time zone 'X'")."""


class ToolDefinitionError(Exception):
    """A function that cannot be offered as a tool (no type hints, *args, a bad name…)."""


@dataclass(frozen=True, slots=True)
class FunctionTool:
    name: str
    description: str
    parameters: dict[str, Any]
    arguments: type[pydantic.BaseModel]
    fn: Callable[..., Any]

    def spec(self) -> dict[str, Any]:
        """The Responses API tool definition."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "strict": True,
        }

    async def call(self, arguments: str) -> Any:
        """Validate the model's JSON arguments and run the function (a plain function in a worker thread)."""
        parsed = self.arguments.model_validate_json(arguments or "{}")
        kwargs = {name: getattr(parsed, name) for name in type(parsed).model_fields}
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(**kwargs)
        result = await asyncio.to_thread(self.fn, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result


def function_tool(fn: Callable[..., Any], *, name: str | None = None) -> FunctionTool:
    """A strict function tool from a typed function (sync or async)."""
    name = name or str(getattr(fn, "__name__", ""))
    if not NAME.match(name):
        raise ToolDefinitionError(f"{name!r} is not a valid tool name (letters, digits, _ and -, at most 64)")
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
        signature = inspect.signature(fn)
    except (NameError, TypeError, ValueError) as exc:
        raise ToolDefinitionError(f"{name}: cannot read its signature ({exc})") from exc
    summary, described = parse_docstring(inspect.getdoc(fn) or "")
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise ToolDefinitionError(f"{name}: parameter {param.name} must be a plain named parameter")
        if param.name not in hints:
            raise ToolDefinitionError(f"{name}: parameter {param.name} has no type hint")
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (hints[param.name], pydantic.Field(default, description=described.get(param.name)))
    try:
        model = pydantic.create_model(f"{name}_arguments", __config__=pydantic.ConfigDict(extra="forbid"), **fields)
        definition = openai.pydantic_function_tool(model, name=name)["function"]
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as exc:
        raise ToolDefinitionError(f"{name}: its parameters cannot be a JSON schema ({exc})") from exc
    parameters = dict(definition.get("parameters") or {})
    parameters.pop("title", None)
    return FunctionTool(name, summary or name, parameters, model, fn)


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(first paragraph, {parameter: description}) from a Google-style ``Args:`` section or ``:param x:`` lines."""
    prose: list[str] = []
    for line in doc.strip().split("\n\n", 1)[0].splitlines():
        if _SECTION.match(line.strip()):
            break
        if not line.strip().startswith(":"):
            prose.append(line)
    summary = " ".join(" ".join(prose).split())
    described: dict[str, str] = {}
    in_args, indent, current = False, -1, ""
    for raw in doc.splitlines():
        line = raw.strip()
        if match := re.match(r":param\s+(?:\S+\s+)?(\w+):\s*(.*)", line):
            described[match[1]] = match[2]
        elif _SECTION.match(line):
            in_args, indent, current = line.lower() in {"args:", "arguments:", "parameters:"}, -1, ""
        elif in_args and not line:
            in_args = False
        elif in_args:
            depth = len(raw) - len(raw.lstrip())
            match = re.match(r"(\w+)\s*(?:\([^)]*\))?:\s*(.*)", line)
            if match and (indent < 0 or depth <= indent):
                indent, current = depth, match[1]
                described[current] = match[2]
            elif current:
                described[current] = f"{described[current]} {line}".strip()
    return summary, described


def output_text(result: Any) -> str:
    """A tool's result as the text the model reads (JSON for anything but a string), capped in length."""
    text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
    return text if len(text) <= OUTPUT_LIMIT else text[:OUTPUT_LIMIT] + "… (truncated)"


async def run_call(tools: Mapping[str, FunctionTool], call: ToolCall, *, limit_secs: float) -> str:
    """Run one call; a failure, a bad argument or a timeout becomes the text the model gets back."""
    tool = tools.get(call.name)
    if tool is None:
        return f"Error: there is no tool named {call.name!r} here."
    try:
        async with asyncio.timeout(limit_secs):
            return output_text(await tool.call(call.arguments))
    except TimeoutError:
        log.warning("tool %s timed out after %g s", call.name, limit_secs)
        return f"Error: {call.name} did not answer within {limit_secs:g} seconds."
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
        return f"Error: bad arguments for {call.name}: {problems}"
    except ToolError as exc:
        return f"Error: {exc}"
    except Exception as exc:
        log.warning("tool %s raised %s", call.name, type(exc).__name__, exc_info=True)
        return f"Error: {call.name} failed: {type(exc).__name__}: {exc}"


async def run_calls(tools: Mapping[str, FunctionTool], calls: Sequence[ToolCall], *, limit_secs: float) -> list[str]:
    """Run the calls of one response concurrently; the outputs come back in the calls' order."""
    return list(await asyncio.gather(*(run_call(tools, call, limit_secs=limit_secs) for call in calls)))


def load_dotted(path: str) -> Callable[..., Any]:
    """``package.module:function`` → the function."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ToolDefinitionError(f"{path!r} is not a tool name or a path like package.module:function")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ToolDefinitionError(f"cannot load the tool {path}: {exc}") from exc
    if not callable(target):
        raise ToolDefinitionError(f"{path} is not a function")
    return typing.cast(Callable[..., Any], target)
