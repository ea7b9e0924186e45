"""The worker's MCP router: a live connection per configured server, and tool calls routed
by their `<server>.<tool>` name.

Each server has exactly one task that owns its connection: it opens the transport and
the session, lists the tools, holds them open until the connection ends, and closes
them. The transports run anyio task groups whose cancel scopes must be entered and left
by the same task, so no other task ever opens or closes a session; callers from any task
only send requests over the live one, which the SDK multiplexes. When a connection ends
(the stdio process exited, an HTTP request could not reach the server) calls fail at
once as "unavailable" and the owning task reconnects with capped exponential backoff,
listing the tools again.

A call is made for a run (`Caller`): a server limited to some projects (`projects` in
its entry) is called only for runs of those, and every request carries the run's project
and id in its `_meta` (`ferrumdeck/project`, `ferrumdeck/run_id`), so a server that
serves several tenants itself can keep their data apart.

`call` never raises for a tool-side problem: a tool error, a timeout, a lost server or an
unknown name is a `ToolOutcome` with `ok=False` and a text the model can read. Failures
of the way to the server (unavailable, connection lost mid-call, no answer in time) are
marked `transient`: the tool itself said nothing, and the same call may work later.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, cast

import anyio
import httpx2
from mcp import Client, MCPError, StdioServerParameters, stdio_client
from mcp.client._transport import ReadStream, TransportStreams
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.message import SessionMessage
from mcp.types import (
    CONNECTION_CLOSED,
    CallToolResult,
    RequestParamsMeta,
    Tool,
)
from pydantic import ValidationError

from services.contract.tools import ToolSpec, tool_name
from services.worker.mcp_config import HttpServer, StdioServer
from services.worker.server_stderr import ServerStderr
from services.worker.tool_content import described

log = logging.getLogger(__name__)

_FIRST_RETRY_SECONDS = 0.5
_MAX_RETRY_SECONDS = 30.0
# A connection that lasted this long was healthy: the next reconnect starts the backoff
# over. One that dies sooner keeps doubling it, so a server that crashes right after its
# handshake is not restarted in a tight loop.
_STABLE_SECONDS = 30.0
# Per HTTP read; a call as a whole is bounded by `call_timeout_seconds`.
_HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)


PROJECT_META = "ferrumdeck/project"
RUN_META = "ferrumdeck/run_id"


@dataclass(frozen=True)
class Caller:
    """The run a tool call is made for."""

    project: str
    run_id: uuid.UUID

    def meta(self) -> RequestParamsMeta:
        """What the MCP request's `_meta` tells the server about the caller."""
        return cast(RequestParamsMeta, {PROJECT_META: self.project, RUN_META: str(self.run_id)})


@dataclass(frozen=True)
class ToolOutcome:
    """What a tool call came to, as the agent loop records it and the model reads it."""

    ok: bool  # False: the tool reported an error, timed out, or its server is unavailable
    content: str  # what the model is told: the text result, or the error text
    structured: Any | None  # structuredContent if the server sent it
    seconds: float  # wall time of the MCP call itself
    truncated: bool
    # The call failed on its way to or from the server, not in the tool: it may or may not
    # have run, and trying again may work.
    transient: bool = False


class McpRouter:
    def __init__(
        self,
        servers: Mapping[str, StdioServer | HttpServer],
        *,
        call_timeout_seconds: float = 60.0,
        max_result_chars: int = 100_000,
        connect_timeout_seconds: float = 15.0,
        on_catalogue_change: Callable[[], None] | None = None,
    ) -> None:
        """`on_catalogue_change` is called (synchronously; it must not block) whenever a
        server's tools appear or disappear, so the worker can report its catalogue again."""
        self._links = {
            name: _Link(name, spec, connect_timeout_seconds, self._catalogue_changed)
            for name, spec in servers.items()
        }
        self._call_timeout = call_timeout_seconds
        self._max_chars = max_result_chars
        self._on_catalogue_change = on_catalogue_change

    async def start(self) -> None:
        """Connect to every server at once; return when each is connected or has failed its
        first attempt (failed ones keep retrying in the background)."""
        for link in self._links.values():
            link.start()
        await asyncio.gather(*(link.settled.wait() for link in self._links.values()))

    async def aclose(self) -> None:
        """Close every session and stop every stdio server; calls in flight fail."""
        await asyncio.gather(*(link.stop() for link in self._links.values()))

    def catalogue(self) -> list[ToolSpec]:
        """The tools of the servers connected now, sorted by name."""
        specs = [
            _tool_spec(link.name, tool, link.projects)
            for link in self._links.values()
            if link.live is not None
            for tool in link.live.tools.values()
        ]
        return sorted(specs, key=lambda spec: spec.name)

    def unavailable(self, project: str) -> set[str]:
        """The servers offered to `project` that are not connected now."""
        return {
            link.name
            for link in self._links.values()
            if link.live is None and (link.projects is None or project in link.projects)
        }

    async def call(
        self, name: str, arguments: Mapping[str, Any], caller: Caller | None = None
    ) -> ToolOutcome:
        """Call tool `name` for `caller` (None: for no run, so no server limited to some
        projects will do)."""
        server, _, tool = name.partition(".")
        link = self._links.get(server)
        if link is None:
            return _failure(f"unknown tool {name!r}: there is no MCP server {server!r}")
        if link.projects is not None and (caller is None or caller.project not in link.projects):
            # The offer and the gateway refuse this first; a call that got here anyway is
            # answered like a tool of a server this worker does not have.
            return _failure(f"unknown tool {name!r}: there is no MCP server {server!r}")
        live = link.live
        if live is None:
            return _failure(link.unavailable(), transient=True)
        if tool not in live.tools:
            return _failure(f"unknown tool {name!r}: MCP server {server!r} has no tool {tool!r}")
        started = time.perf_counter()
        try:
            with anyio.fail_after(self._call_timeout):
                result = await live.client.call_tool(
                    tool, dict(arguments), meta=None if caller is None else caller.meta()
                )
        except TimeoutError:
            return _failure(
                f"tool {name!r} timed out after {self._call_timeout:g}s",
                time.perf_counter() - started,
                transient=True,
            )
        except (MCPError, RuntimeError, ValidationError) as exc:
            seconds = time.perf_counter() - started
            if isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED:
                live.ending.end("the connection closed")  # the owner may not know yet
            if live.ending.over:
                return _failure(
                    f"MCP server {server!r} is unavailable: the connection was lost mid-call",
                    seconds,
                    transient=True,
                )
            if isinstance(exc, MCPError):
                return _failure(f"MCP server {server!r} refused the call: {exc.message}", seconds)
            return _failure(f"MCP server {server!r} sent an unusable result: {exc}", seconds)
        return self._outcome(result, time.perf_counter() - started)

    def _outcome(self, result: CallToolResult, seconds: float) -> ToolOutcome:
        structured = result.structured_content
        text = "\n".join(described(block) for block in result.content)
        if not result.content and structured is not None:
            text = _json(structured)
        truncated = len(text) > self._max_chars
        if truncated:
            text = (
                f"{text[: self._max_chars]}\n[truncated: showing the first "
                f"{self._max_chars} of {len(text)} characters]"
            )
        if structured is not None and len(_json(structured)) > self._max_chars:
            structured, truncated = None, True
        return ToolOutcome(
            ok=not result.is_error,
            content=text,
            structured=structured,
            seconds=seconds,
            truncated=truncated,
        )

    def _catalogue_changed(self) -> None:
        if self._on_catalogue_change is not None:
            self._on_catalogue_change()


@dataclass(frozen=True)
class _Live:
    """A connected server: its session and the tools it listed, by their own names."""

    client: Client
    tools: dict[str, Tool]
    ending: _Ending


class _Ending:
    """The end of one connection, and why, from whoever noticed it first: the transport
    running out, an HTTP 404 for the session, or a caller that found it closed. The
    owning task holds the connection open until then."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._over = anyio.Event()

    @property
    def over(self) -> bool:
        return self._over.is_set()

    def end(self, reason: str | None = None) -> None:
        """`None`: over, but let an exception on the way out say why."""
        if not self.over:
            self.reason = reason
            self._over.set()

    async def wait(self) -> None:
        await self._over.wait()


class _Link:
    """One configured server, kept connected by the one task that owns its session."""

    def __init__(
        self,
        name: str,
        spec: StdioServer | HttpServer,
        connect_timeout: float,
        on_change: Callable[[], None],
    ) -> None:
        self.name = name
        self.projects = spec.projects
        self.live: _Live | None = None
        self.settled = asyncio.Event()  # the first connection attempt is over
        self._spec = spec
        self._connect_timeout = connect_timeout
        self._on_change = on_change
        self._reason = "connecting"
        # An anyio scope, not Task.cancel(): the stdio transport's shielded shutdown, which
        # stops the server process, holds against anyio cancellation only.
        self._stopping = anyio.CancelScope()
        self._task: asyncio.Task[None] | None = None

    def unavailable(self) -> str:
        return f"MCP server {self.name!r} is unavailable: {self._reason}"

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_connected(), name=f"mcp-server-{self.name}")

    async def stop(self) -> None:
        self._stopping.cancel()
        if self._task is not None:
            await self._task
        self._reason = "the router is closed"
        self.settled.set()  # a start() still waiting on this server returns

    async def _keep_connected(self) -> None:
        delay = _FIRST_RETRY_SECONDS
        with self._stopping:
            while True:
                began = time.monotonic()
                ending = _Ending()
                try:
                    await self._connection(ending)
                    self._reason = ending.reason or "the connection ended"
                # Opening and holding a connection fails in many unrelated ways: OSError
                # from spawning, httpx2 errors, MCPError or pydantic errors in the
                # handshake, TimeoutError, and exception groups of these from the
                # transports' task groups. Each means only "unavailable for now", and
                # none may end the task that reconnects. When something else ended the
                # connection first, an error while closing it only echoes that cause.
                except Exception as exc:
                    self._reason = ending.reason or _describe(exc)
                if time.monotonic() - began >= _STABLE_SECONDS:
                    delay = _FIRST_RETRY_SECONDS
                log.warning("%s; reconnecting in %.1fs", self.unavailable(), delay)
                self.settled.set()
                await anyio.sleep(delay)
                delay = min(delay * 2, _MAX_RETRY_SECONDS)

    async def _connection(self, ending: _Ending) -> None:
        """Connect, list the tools, and hold the session open until the connection ends."""
        client = Client(_transport(self.name, self._spec, ending), cache=None)
        deadline = anyio.current_time() + self._connect_timeout
        with anyio.CancelScope(deadline=deadline) as connecting:
            async with client:
                tools = await _list_tools(client)
                connecting.deadline = math.inf
                self.live = _Live(client, tools, ending)
                log.info("MCP server %r connected: %d tools", self.name, len(tools))
                self.settled.set()
                self._on_change()
                try:
                    await ending.wait()
                finally:
                    ending.end()
                    self._reason = "the connection was lost; reconnecting"
                    self.live = None
                    self._on_change()
        if connecting.cancelled_caught:
            raise TimeoutError(f"no answer within {self._connect_timeout:g}s")


@contextlib.asynccontextmanager
async def _transport(
    name: str, spec: StdioServer | HttpServer, ending: _Ending
) -> AsyncIterator[TransportStreams]:
    async with contextlib.AsyncExitStack() as stack:
        if isinstance(spec, StdioServer):
            parameters = StdioServerParameters(
                command=spec.command, args=spec.args, env=spec.env, cwd=spec.cwd
            )
            stderr = ServerStderr(name)
            stack.callback(stderr.close)
            read, write = await stack.enter_async_context(
                stdio_client(parameters, errlog=stderr.errlog)
            )
        else:
            http = await stack.enter_async_context(
                httpx2.AsyncClient(
                    headers=spec.headers,
                    timeout=_HTTP_TIMEOUT,
                    event_hooks={"response": [functools.partial(_session_expiry, ending)]},
                )
            )
            read, write = await stack.enter_async_context(
                streamable_http_client(spec.url, http_client=http)
            )
        yield _EndWatchingStream(read, ending), write


class _EndWatchingStream:
    """A transport's read stream, passed through, that ends the connection when it runs out.

    When a stdio server exits, its transport only closes this stream: the SDK fails the
    requests waiting on it but tells no one else, and the owning task must learn of it
    to reconnect.
    """

    def __init__(self, inner: ReadStream[SessionMessage | Exception], ending: _Ending) -> None:
        self._inner = inner
        self._ending = ending

    @property
    def last_context(self) -> contextvars.Context | None:
        # The SDK dispatches each message in its sender's context when the stream has one.
        context: contextvars.Context | None = getattr(self._inner, "last_context", None)
        return context

    async def receive(self) -> SessionMessage | Exception:
        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._ending.end("the server closed the connection")
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _list_tools(client: Client) -> dict[str, Tool]:
    tools: dict[str, Tool] = {}
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools.update((tool.name, tool) for tool in page.tools)
        cursor = page.next_cursor
        if cursor is None:
            return tools


def _tool_spec(server: str, tool: Tool, projects: list[str] | None) -> ToolSpec:
    hints = tool.annotations
    return ToolSpec(
        projects=projects,
        name=tool_name(server, tool.name),
        server=server,
        tool=tool.name,
        description=tool.description or "",
        input_schema=tool.input_schema,
        idempotent=hints is not None and bool(hints.read_only_hint or hints.idempotent_hint),
    )


async def _session_expiry(ending: _Ending, response: httpx2.Response) -> None:
    # A 404 to a request that carried a session id means the server no longer knows the
    # session (it restarted, or expired it), and the spec says the client must start a
    # new one. Servers word the error body differently; the status is what counts.
    if response.status_code == 404 and "mcp-session-id" in response.request.headers:
        ending.end("the server no longer knows the session (HTTP 404)")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _failure(content: str, seconds: float = 0.0, *, transient: bool = False) -> ToolOutcome:
    return ToolOutcome(
        ok=False,
        content=content,
        structured=None,
        seconds=seconds,
        truncated=False,
        transient=transient,
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
