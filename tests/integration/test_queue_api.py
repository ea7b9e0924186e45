"""`GET /v1/queue`: the runs stream's backlog as Redis reports it."""

from __future__ import annotations

from quart.typing import TestClientProtocol as Client
from redis.asyncio import Redis

from services.contract.queue import QueueStats
from services.gateway.settings import GatewaySettings
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
    assert [(c.name, c.pending) for c in stats.consumers] == [("worker-a", 1)]
    assert stats.consumers[0].idle_seconds >= 0
    assert stats.oldest_pending_seconds is not None
    assert 0 <= stats.oldest_pending_seconds < 60


async def test_needs_a_key(client: Client) -> None:
    response = await client.get("/v1/queue")
    assert response.status_code == 401
