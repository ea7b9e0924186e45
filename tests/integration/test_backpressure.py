"""Past the backlog bound, new runs are refused with 429 instead of queued forever."""

from __future__ import annotations

import uuid

import asyncpg
from redis.asyncio import Redis

from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from testbed.streams import read_new
from testbed.waiting import eventually
from tests.support.harness import ToolHarness


async def test_runs_are_refused_while_the_backlog_is_past_its_bound(
    settings: GatewaySettings, admin: dict[str, str], redis: Redis, db: asyncpg.Pool
) -> None:
    bounded = settings.model_copy(update={"max_queue_lag": 2, "backpressure_refresh_seconds": 0})
    async with create_app(bounded).test_app() as app:
        client = app.test_client()
        agent = f"agent-{uuid.uuid4().hex[:8]}"
        await client.post("/v1/agents", json={"name": agent, "model": "scripted"}, headers=admin)
        await redis.xgroup_create(
            settings.streams.runs, settings.streams.group, id="0", mkstream=True
        )
        accepted = []
        for n in range(3):
            response = await client.post(
                "/v1/runs", json={"agent": agent, "input": f"n{n}"}, headers=admin
            )
            assert response.status_code == 202
            accepted.append((await response.get_json())["id"])
        await eventually(lambda: redis.xlen(settings.streams.runs), lambda n: n == 3)

        before = await db.fetchval("SELECT count(*) FROM runs WHERE agent_name = $1", agent)
        refused = await client.post("/v1/runs", json={"agent": agent, "input": "x"}, headers=admin)
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "5"
        error = (await refused.get_json())["error"]
        assert error["code"] == "too_many_requests"
        assert "3 runs are waiting" in error["message"]
        assert await db.fetchval("SELECT count(*) FROM runs WHERE agent_name = $1", agent) == before

        queue = await (await client.get("/v1/queue", headers=admin)).get_json()
        assert (queue["lag"], queue["max_lag"], queue["accepting_runs"]) == (3, 2, False)

        delivered = await read_new(
            redis, settings.streams.group, "drainer", settings.streams.runs, count=10
        )
        await redis.xack(settings.streams.runs, settings.streams.group, *[i for i, _ in delivered])
        again = await client.post("/v1/runs", json={"agent": agent, "input": "y"}, headers=admin)
        assert again.status_code == 202


async def test_queue_shows_the_bounds_while_accepting(harness: ToolHarness) -> None:
    queue = await (await harness.client.get("/v1/queue", headers=harness.admin)).get_json()
    assert queue["accepting_runs"] is True
    assert queue["max_lag"] == 10_000
