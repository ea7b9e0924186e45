"""The tools a claimed run offers its model: those of this worker's catalogue offered to
the run's project (shared ones, and those of servers limited to it) that the agent's
`tools` patterns allow, under names LLM APIs accept. A tool of a server limited to other
projects is never shown to the model, whatever the agent asks for. The agent's patterns
nothing matched are `missing`, for the run's record (a `ToolsMissing` note).

A call of a name the run was not offered is still recorded (the model is owed an answer,
and a resumed run rebuilds its conversation from the steps), under the name an operator
recognises: the project's tool of that name, which the agent was not given (the gateway
refuses it as such), else the model's own name marked `(not offered)`, a name no worker
can list. Only tools offered to the project are looked up, so a step never reveals a tool
of another project's server.

The offer is fixed once per claim, so a server that reconnects mid-run cannot change the
names the model has already seen.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from services.contract.tools import ToolSpec
from services.contract.worker_api import MissingTool
from services.worker.tool_arguments import ArgumentSchema
from services.worker.tool_names import ToolNames

_UNDECLARED = ArgumentSchema(None)


class OfferedTools:
    def __init__(
        self,
        catalogue: list[ToolSpec],
        allowed: list[str],
        project: str,
        unavailable: set[str] | None = None,
    ) -> None:
        """`unavailable`: the servers offered to the project that are down right now."""
        offered = [
            spec
            for spec in catalogue
            if spec.offered_to(project)
            and any(fnmatchcase(spec.name, pattern) for pattern in allowed)
        ]
        self.missing = _missing(
            [spec for spec in catalogue if spec.offered_to(project)],
            allowed,
            unavailable or set(),
        )
        """The agent's patterns no offered tool matches, and why (`MissingTool`)."""
        self._names = ToolNames([spec.name for spec in offered])
        self._project_names = ToolNames(
            [spec.name for spec in catalogue if spec.offered_to(project)]
        )
        self._idempotent = {spec.name for spec in offered if spec.idempotent}
        self._input_schemas = {spec.name: spec.input_schema for spec in offered}
        self._argument_schemas: dict[str, ArgumentSchema] = {}
        self._functions = [
            {
                "type": "function",
                "function": {
                    "name": self._names.for_llm(spec.name),
                    "description": spec.description,
                    "parameters": spec.input_schema or {"type": "object", "properties": {}},
                },
            }
            for spec in offered
        ]

    @property
    def functions(self) -> list[dict[str, Any]]:
        """The offer as OpenAI function tools, as LiteLLM sends them."""
        return self._functions

    def tool(self, llm_name: str) -> str | None:
        """The tool the model meant, or None if it named one it was never offered."""
        return self._names.from_llm(llm_name)

    def recorded_name(self, llm_name: str) -> str:
        """The name a call of `llm_name` is recorded under (see the module docstring)."""
        offered = self._names.from_llm(llm_name)
        if offered is not None:
            return offered
        of_project = self._project_names.from_llm(llm_name)
        if of_project is not None:
            return of_project
        # The model chose it (at most 64 characters are valid); the space and parentheses
        # cannot occur in a listed `<server>.<tool>` name.
        return f"{llm_name[:64]} (not offered)"

    def idempotent(self, tool: str) -> bool:
        """Whether the tool may run twice by its own declaration: it may be retried."""
        return tool in self._idempotent

    def argument_schema(self, tool: str) -> ArgumentSchema:
        """What the tool's arguments are checked against: its declared `inputSchema`,
        checked itself once per claim, on the first call of the tool."""
        if tool not in self._input_schemas:
            return _UNDECLARED
        if tool not in self._argument_schemas:
            self._argument_schemas[tool] = ArgumentSchema(self._input_schemas[tool])
        return self._argument_schemas[tool]


def _missing(
    of_project: list[ToolSpec], allowed: list[str], unavailable: set[str]
) -> list[MissingTool]:
    found = []
    for pattern in allowed:
        if any(fnmatchcase(spec.name, pattern) for spec in of_project):
            continue
        servers = pattern.partition(".")[0]
        if any(fnmatchcase(server, servers) for server in unavailable):
            reason = "server_unavailable"
        elif any(fnmatchcase(spec.server, servers) for spec in of_project):
            reason = "no_such_tool"
        else:
            reason = "not_on_this_worker"
        found.append(MissingTool(pattern=pattern, reason=reason))
    return found
