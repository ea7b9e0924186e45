"""Tools as both planes name them.

A tool is `<server>.<tool>` everywhere in the API, in agent tool lists, in policy rules
and in steps: the MCP server's name from the workers' `mcpServers` file, then the tool's
own name on that server.

A server's entry may limit its tools to some projects (`projects`); a tool reported with
`projects` is offered to, and authorised for, runs of those projects only.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from services.contract.projects import ProjectScope


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
    projects: ProjectScope | None = Field(
        default=None,
        description="The only projects whose runs may be offered and may call the tool; "
        "absent: every project (the server's entry names none).",
    )

    def offered_to(self, project: str) -> bool:
        return self.projects is None or project in self.projects
