"""Tools as both planes name them.

A tool is `<server>.<tool>` everywhere in the API, in agent tool lists, in policy rules
and in steps: the MCP server's name from the workers' `mcpServers` file, then the tool's
own name on that server.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


def tool_name(server: str, tool: str) -> str:
    return f"{server}.{tool}"


class ToolSpec(BaseModel):
    """One tool a worker can call, as it reports it to the gateway."""

    name: str = Field(description="`<server>.<tool>`")
    server: str
    tool: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)
    idempotent: bool = Field(
        default=False,
        description="Safe to call again after a crash: the server marks it read-only or "
        "idempotent (MCP tool annotations).",
    )
