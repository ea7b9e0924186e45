"""Serve an MCP server over streamable HTTP inside the test process.

The socket is bound here and handed to hypercorn as `fd://`, so there is no window in
which another process can take the port; a test that stops a server can serve again on
the same port to play "the server came back".

`legacy_only` makes the server look like one built before the 2026-07-28 revision, as
most deployed servers still are: it refuses the newer era's requests, so clients fall
back to the initialize handshake and an `Mcp-Session-Id` session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator

from hypercorn.asyncio import serve
from hypercorn.config import Config
from mcp.server.mcpserver import MCPServer
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.types import ASGIApp, Receive, Scope, Send

_METHOD_NOT_FOUND = json.dumps(
    {"jsonrpc": "2.0", "id": None, "error": {"code": -32601, "message": "Method not found"}}
).encode()


@contextlib.asynccontextmanager
async def serve_streamable_http(
    server: MCPServer, port: int = 0, *, legacy_only: bool = False
) -> AsyncIterator[str]:
    """Yield the server's MCP endpoint URL; stop serving on exit."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    bound = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns and closes it from here
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.5
    stop = asyncio.Event()
    app: ASGIApp = server.streamable_http_app()  # a fresh session manager: each runs once
    if legacy_only:
        app = _refusing_the_2026_era(app)
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        yield f"http://127.0.0.1:{bound}/mcp"
    finally:
        stop.set()
        await task


def _refusing_the_2026_era(app: ASGIApp) -> ASGIApp:
    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        version = dict(scope.get("headers", [])).get(b"mcp-protocol-version")
        if version is not None and version.decode() not in HANDSHAKE_PROTOCOL_VERSIONS:
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": _METHOD_NOT_FOUND})
            return
        await app(scope, receive, send)

    return guarded
