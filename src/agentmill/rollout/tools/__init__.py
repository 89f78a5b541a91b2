"""Tools an agent can call, looked up by the config's `type` in one visible table.

A tool is anything with a `name`, a `schema()` (an OpenAI tool schema) and an async
`call(arguments) -> str` returning the observation text. A tool signals a problem the
model should see (bad arguments, nothing found) by raising `ToolError`; any other
exception is caught by the agent loop and shown to the model as an error observation too.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable


class ToolError(Exception):
    """A problem the model should read as the observation (`Error: <message>`)."""


@runtime_checkable
class Tool(Protocol):
    name: str

    def schema(self) -> dict[str, Any]:
        """`{"type": "function", "function": {"name", "description", "parameters"}}`."""
        ...

    async def call(self, arguments: dict[str, Any]) -> str: ...


# type -> "module:factory"; a factory takes the tool's config and returns a list of tools
TOOLS: dict[str, str] = {
    "calculator": "agentmill.rollout.tools.calculator:build",
    "python": "agentmill.rollout.tools.python:build",
    "search": "agentmill.rollout.tools.search:build",
    "function": "agentmill.rollout.tools.function:build",
}


def build_tools(configs: list[Any]) -> dict[str, Tool]:
    """Instantiate every configured tool; names must be unique."""
    tools: dict[str, Tool] = {}
    for cfg in configs:
        module, _, attr = TOOLS[cfg.type].partition(":")
        for tool in getattr(importlib.import_module(module), attr)(cfg):
            if tool.name in tools:
                from agentmill.errors import UserError

                raise UserError(f"two tools are named '{tool.name}'; give one a different `name`")
            tools[tool.name] = tool
    return tools


__all__ = ["TOOLS", "Tool", "ToolError", "build_tools"]
