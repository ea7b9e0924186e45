"""`/readyz` on both planes answers the contract's `Readiness`, ready or not, so one probe
configuration and one curl read a gateway and a worker alike."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from services.contract.health import Readiness, ReadyStatus
from services.contract.jobs import StreamNames
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.worker.gateway_client import GatewayClient
from services.worker.probe_server import create_probe_app


def _gateway_answering(status: int) -> GatewayClient:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json={}))
    return GatewayClient("http://gateway.test", "fd_worker", transport)


async def test_a_worker_says_why_it_is_not_ready_then_that_it_is(redis: Redis, prefix: str) -> None:
    streams = StreamNames(prefix)
    gateway = _gateway_answering(503)
    client = create_probe_app(redis, streams, gateway, "w-ready").test_client()
    await redis.xgroup_create(streams.runs, streams.group, id="0", mkstream=True)
    try:
        response = await client.get("/readyz")
        assert response.status_code == 503
        body = Readiness.model_validate(await response.get_json())
        assert body.status is ReadyStatus.NOT_READY
        assert len(body.problems) == 2, body.problems
        assert any("has not joined" in problem for problem in body.problems)
        assert any("gateway" in problem for problem in body.problems)

        await redis.xgroup_createconsumer(streams.runs, streams.group, "w-ready")
        ready = create_probe_app(redis, streams, _gateway_answering(200), "w-ready")
        response = await ready.test_client().get("/readyz")
        assert response.status_code == 200, await response.get_json()
        assert Readiness.model_validate(await response.get_json()) == Readiness(
            status=ReadyStatus.READY
        )
    finally:
        await gateway.aclose()


async def test_a_gateway_answers_the_same_shape(settings: GatewaySettings) -> None:
    async with create_app(settings).test_app() as app:
        response = await app.test_client().get("/readyz")
        assert response.status_code == 200
        assert Readiness.model_validate(await response.get_json()) == Readiness(
            status=ReadyStatus.READY
        )
