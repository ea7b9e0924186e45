"""Serving the gateway with hypercorn, stopping cleanly on SIGINT/SIGTERM.

The listening socket is bound here, before the application starts, so that when the
service manager is told `READY=1` (after the pool, Redis and the relay are up)
connections are already being accepted; hypercorn alone binds only after startup.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config

from services.gateway.app import create_app
from services.gateway.events import hub_of
from services.gateway.idle_close import let_requests_win_over_idle_close
from services.gateway.settings import GatewaySettings
from services.telemetry.sd_notify import notify

log = logging.getLogger(__name__)


async def serve(settings: GatewaySettings) -> None:
    """Serve until SIGINT or SIGTERM; in-flight requests finish before exit."""
    let_requests_win_over_idle_close()
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 10.0
    # Longer than clients keep idle connections (httpx: 5 s), so a client never sends a
    # request on a connection the server is closing at that very moment.
    config.keep_alive_timeout = 75.0
    listening = config.create_sockets().insecure_sockets
    for sock in listening:
        sock.listen(config.backlog)
    config.bind = [f"fd://{sock.detach()}" for sock in listening]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    app = create_app(settings)

    async def stopping() -> None:
        await stop.wait()
        notify("STOPPING=1")
        log.info("gateway stopping")
        hub = hub_of(app)
        if hub is not None:
            hub.close_streams()

    @app.before_serving
    async def _ready() -> None:
        log.info("gateway serving on %s:%d", settings.host, settings.port)
        notify("READY=1")
        # What is alive once started (modules, the app, the pool) is never garbage, yet
        # every full collection walked it: ~45 ms with the loop stopped, set off whenever
        # a request allocates a lot, such as a thread compiling a 2,000-rule policy.
        # Frozen, a full collection walks only what was made since.
        gc.freeze()

    await hypercorn_serve(app, config, shutdown_trigger=stopping)
