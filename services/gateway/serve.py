"""Serving the gateway with hypercorn, stopping cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings


async def serve(settings: GatewaySettings) -> None:
    """Serve until SIGINT or SIGTERM; in-flight requests finish before exit."""
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.accesslog = None
    config.graceful_timeout = 10.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await hypercorn_serve(create_app(settings), config, shutdown_trigger=stop.wait)
