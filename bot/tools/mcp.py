"""Remote MCP servers as Responses ``mcp`` tools: OpenAI calls the server during the response (``mcp_call``
items), so threadline only describes the server. Calls never wait for an approval (``require_approval: never``);
``allowed_tools`` limits what the model may call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bot.errors import StartupError
from bot.settings import McpServer


def mcp_tools(servers: Sequence[McpServer], environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Each server's tool definition by label. A server whose ``authorization_env`` is unset is a start-up error
    naming the variable (never its value)."""
    tools: dict[str, dict[str, Any]] = {}
    for server in servers:
        if server.label in tools:
            raise StartupError(f"THREADLINE_MCP_SERVERS: the label {server.label!r} is used twice")
        tool: dict[str, Any] = {
            "type": "mcp",
            "server_label": server.label,
            "server_url": server.url,
            "require_approval": "never",
        }
        if server.description:
            tool["server_description"] = server.description
        if server.allowed_tools is not None:
            tool["allowed_tools"] = list(server.allowed_tools)
        if server.authorization_env:
            secret = environ.get(server.authorization_env, "")
            if not secret:
                raise StartupError(
                    f"THREADLINE_MCP_SERVERS: server {server.label!r} takes its {server.header} header from "
                    f"${server.authorization_env}, which is not set"
                )
            tool["headers"] = {server.header: secret}
        tools[server.label] = tool
    return tools
