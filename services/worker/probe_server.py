"""The worker's own small HTTP server: `/metrics` for Prometheus, `/healthz` (the process
answers) and `/readyz` (it can take work: Redis answers, this worker is in the consumer
group, the gateway answers).

It runs in the worker's event loop, so a loop blocked by a runaway call also stops
answering `/healthz`, which is what a liveness check should see. A port already taken
is logged and the worker carries on without it: serving runs matters more than being
scraped.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from hypercorn.asyncio import serve
from hypercorn.config import Config
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from quart import Quart, Response
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.contract.health import Readiness, ReadyStatus
from services.contract.jobs import StreamNames
from services.worker.gateway_client import GatewayClient

log = logging.getLogger(__name__)


def create_probe_app(
    redis: Redis, streams: StreamNames, gateway: GatewayClient, worker_id: str
) -> Quart:
    app = Quart("ferrumdeck-worker")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), content_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> tuple[dict[str, object], int]:
        problems = []
        try:
            async with asyncio.timeout(2):
                consumers = await redis.xinfo_consumers(streams.runs, streams.group)
            if not any(c["name"].decode() == worker_id for c in consumers):
                problems.append(f"worker {worker_id} has not joined {streams.group}")
        except (RedisError, OSError, TimeoutError) as exc:
            problems.append(f"redis: {exc}")
        if not await gateway.reachable():
            problems.append("gateway: /healthz does not answer")
        if problems:
            return Readiness(status=ReadyStatus.NOT_READY, problems=problems).model_dump(), 503
        return Readiness(status=ReadyStatus.READY).model_dump(), 200

    return app


class ProbeServer:
    def __init__(self, app: Quart, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._port == 0:
            return
        try:
            sock = socket.create_server((self._host, self._port), backlog=128)
        except OSError as exc:
            log.warning(
                "no /metrics, /healthz or /readyz: cannot listen on %s:%d: %s",
                self._host,
                self._port,
                exc,
            )
            return
        sock.setblocking(False)
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns and closes it from here
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        self._task = asyncio.create_task(
            serve(self._app, config, shutdown_trigger=self._stop.wait),
            name="probe-server",
        )
        log.info("metrics and probes on http://%s:%d", self._host, self._port)

    async def stop(self) -> None:
        if self._task is not None:
            self._stop.set()
            await self._task
