"""`GET /v1/queue`: the runs stream's backlog as Redis reports it."""

from __future__ import annotations

import json
import uuid

import asyncpg
from quart.typing import TestClientProtocol as Client
from redis.asyncio import Redis

from services.contract.api import Role
from services.contract.queue import QueueStats
from services.gateway.app import create_app
from services.gateway.audit import Actor
from services.gateway.settings import GatewaySettings
from services.gateway.store.keys import create_key
from testbed.waiting import eventually
from tests.support.harness import Harness


async def _stats(client: Client, admin: dict[str, str]) -> QueueStats:
    response = await client.get("/v1/queue", headers=admin)
    assert response.status_code == 200, await response.get_json()
    return QueueStats.model_validate(await response.get_json())


async def test_an_unused_stream_is_empty(client: Client, admin: dict[str, str]) -> None:
    stats = await _stats(client, admin)
    assert (stats.depth, stats.pending, stats.lag, stats.consumers) == (0, 0, 0, [])
    assert stats.oldest_pending_seconds is None


async def test_backlog_pending_and_consumers(
    client: Client,
    admin: dict[str, str],
    worker: dict[str, str],
    redis: Redis,
    settings: GatewaySettings,
) -> None:
    harness = Harness(client, admin, worker)
    await harness.run()
    await harness.run()
    waiting = await eventually(lambda: _stats(client, admin), lambda s: s.depth == 2)
    assert waiting.lag == 2
    assert waiting.pending == 0
    assert waiting.consumers == []

    streams = settings.streams
    await redis.xgroup_create(streams.runs, streams.group, id="0")
    await redis.xreadgroup(streams.group, "worker-a", {streams.runs: ">"}, count=1)
    stats = await _stats(client, admin)
    assert (stats.depth, stats.pending, stats.lag) == (2, 1, 1)
    assert stats.consumers is not None  # the operator's view
    assert [(c.name, c.pending) for c in stats.consumers] == [("worker-a", 1)]
    assert stats.consumers[0].idle_seconds >= 0
    assert stats.oldest_pending_seconds is not None
    assert 0 <= stats.oldest_pending_seconds < 60


async def test_needs_a_key(client: Client) -> None:
    response = await client.get("/v1/queue")
    assert response.status_code == 401


async def test_a_project_sees_its_own_runs_not_the_platforms_stream_or_workers(
    settings: GatewaySettings,
    admin: dict[str, str],
    worker: dict[str, str],
    db: asyncpg.Pool,
    redis: Redis,
) -> None:
    """Without the operator's opt-in, each project is told its own runs waiting and
    running, and nothing of the stream's backlog, the dead letters or the workers."""
    own = settings.model_copy(update={"platform_view": False, "backpressure_refresh_seconds": 0})
    other = f"other-{uuid.uuid4().hex[:6]}"
    async with db.acquire() as conn:
        _, secret = await create_key(conn, "other-admin", Role.ADMIN, other, Actor.system("t"))
    theirs = {"Authorization": f"Bearer {secret}"}
    async with create_app(own).test_app() as app:
        client = app.test_client()
        harness = Harness(client, admin, worker)
        run_id = await harness.run()
        await harness.claim(run_id)
        await harness.run()
        streams = settings.streams
        await redis.xgroup_create(streams.runs, streams.group, id="0", mkstream=True)
        await redis.xreadgroup(streams.group, "worker-secret-name", {streams.runs: ">"})

        mine = await (await client.get("/v1/queue", headers=admin)).get_json()
        for platform_only in ("stream", "group", "depth", "pending", "lag", "consumers"):
            assert mine[platform_only] is None, platform_only
        assert mine["dead_letter"] is None
        assert mine["project"] == "default"
        assert mine["waiting"] >= 1
        assert mine["running"] >= 1
        assert "worker-secret-name" not in json.dumps(mine)

        seen = await (await client.get("/v1/queue", headers=theirs)).get_json()
        assert (seen["project"], seen["waiting"], seen["running"]) == (other, 0, 0)
        assert seen["accepting_runs"] is True
