"""The worker's MCP servers file (`FERRUMDECK_MCP_SERVERS`).

It has the shape common MCP clients use (`{"mcpServers": {name: entry}}`) so operators
can reuse what they already have: an entry with `command` is a stdio server the worker
starts, an entry with `url` a streamable-HTTP server it connects to. Names become the
`<server>` of tool names `<server>.<tool>`, hence no dots.

Secrets stay out of the file: `${NAME}` in an `env` or `headers` value is replaced by the
worker's environment variable at load, and a missing variable fails the start instead of
handing the server an empty credential. Every error names the file and the entry.

FerrumDeck adds one key: `"projects": ["acme", "beta"]` limits an entry's tools to runs
of those projects (a server whose `env` or `headers` hold one customer's credentials, or
whose data is one tenant's). Project names are checked as the gateway allows them, and
the list may not be empty: a typo fails the start rather than offering the server to
nobody. An entry without `projects` is shared by every project, which the worker says
once at start (`log_shared_servers`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.contract.projects import ProjectScope

log = logging.getLogger(__name__)

SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class McpConfigError(Exception):
    """The MCP servers file cannot be used; the message says where and why."""


class _Scoped(BaseModel):
    """The FerrumDeck key of every entry: the projects its tools are offered to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    projects: ProjectScope | None = None
    """None: every project. Explicitly `null` in the file is refused, like `[]`."""

    @field_validator("projects", mode="before")
    @classmethod
    def _a_list_when_given(cls, value: Any) -> Any:
        if value is None:
            raise ValueError(
                "Input should be a valid list of project names (leave the key "
                "out to offer the server to every project)"
            )
        return value


class StdioServer(_Scoped):
    """A server the worker runs as a child process and talks to over stdin/stdout."""

    type: Literal["stdio"] = "stdio"
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: Path | None = None


class HttpServer(_Scoped):
    """A server the worker reaches over streamable HTTP."""

    type: Literal["http", "streamable-http"] = "http"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return value


McpServer = StdioServer | HttpServer


def load_mcp_servers(path: Path | None) -> dict[str, McpServer]:
    """The servers `path` configures, by name; no file configured means no servers."""
    if path is None:
        return {}
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise McpConfigError(f"{path}: cannot read the MCP servers file: {exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise McpConfigError(f"{path}: not valid JSON: {exc}") from exc
    entries = document.get("mcpServers") if isinstance(document, dict) else None
    if not isinstance(entries, dict):
        raise McpConfigError(f'{path}: expected an object {{"mcpServers": {{name: server}}}}')
    return {name: _server(path, name, entry) for name, entry in entries.items()}


def log_shared_servers(servers: dict[str, McpServer]) -> None:
    """Say which servers every project's runs are offered, so an operator who meant to
    limit one sees it in the start-up log."""
    shared = sorted(name for name, server in servers.items() if server.projects is None)
    if shared:
        log.info(
            "MCP servers %s have no `projects`: their tools are offered to runs of every project",
            ", ".join(shared),
        )


def _server(path: Path, name: str, entry: Any) -> McpServer:
    where = f"{path}: mcpServers.{name}"
    if not SERVER_NAME.match(name):
        raise McpConfigError(
            f"{path}: server name {name!r} must be 1-64 letters, digits, '_' or '-' "
            "(it becomes the part before the dot in tool names)"
        )
    if not isinstance(entry, dict):
        raise McpConfigError(f"{where}: expected an object with `command` or `url`")
    if ("command" in entry) == ("url" in entry):
        raise McpConfigError(
            f"{where}: give exactly one of `command` (a stdio server) "
            "or `url` (a streamable-HTTP server)"
        )
    model: type[StdioServer] | type[HttpServer] = StdioServer if "command" in entry else HttpServer
    try:
        server = model.model_validate(entry)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise McpConfigError(f"{where}: {problems}") from exc
    if isinstance(server, StdioServer):
        return server.model_copy(update={"env": _expand(server.env, f"{where}.env")})
    return server.model_copy(update={"headers": _expand(server.headers, f"{where}.headers")})


def _expand(values: dict[str, str], where: str) -> dict[str, str]:
    """Replace each `${NAME}` with the worker's environment variable NAME."""
    return {
        key: _REFERENCE.sub(functools.partial(_lookup, f"{where}.{key}"), value)
        for key, value in values.items()
    }


def _lookup(where: str, reference: re.Match[str]) -> str:
    variable = reference.group(1)
    if not _VARIABLE_NAME.match(variable):
        raise McpConfigError(f"{where}: {reference.group(0)!r} is not a variable reference")
    try:
        return os.environ[variable]
    except KeyError:
        raise McpConfigError(f"{where}: environment variable {variable} is not set") from None
