"""A real gateway served by hypercorn inside the test process, on a real port, so HTTP
clients (httpx, SSE, the TUI) talk to it exactly as they would in production."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart

from services.gateway.app import create_app
from services.gateway.events import EventHub
from services.gateway.settings import GatewaySettings


@dataclass
class ServedGateway:
    url: str
    port: int
    app: Quart

    @property
    def hub(self) -> EventHub:
        hub: EventHub = self.app.extensions["ferrumdeck.events"]
        return hub


def _listening_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serve_gateway(settings: GatewaySettings, port: int = 0) -> AsyncIterator[ServedGateway]:
    """Serve until the block ends; `port=0` picks a free one, a given port is reused (for
    restarts)."""
    sock = _listening_socket(port)
    bound = sock.getsockname()[1]
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    app = create_app(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    url = f"http://127.0.0.1:{bound}"
    try:
        while "ferrumdeck.events" not in app.extensions:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        yield ServedGateway(url, bound, app)
    finally:
        stop.set()
        await task
