"""The transactional outbox: no job lost while Redis is away, none published twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from quart.typing import TestClientProtocol as Client
from redis.asyncio import Redis

from services.contract.jobs import StreamNames
from services.devstack.embedded import EmbeddedValkey, free_port
from services.gateway.app import create_app
from services.gateway.outbox import OutboxRelay
from services.gateway.settings import GatewaySettings
from testbed.streams import entries
from testbed.waiting import eventually


@pytest.fixture
async def flaky_redis(tmp_path: Path) -> AsyncIterator[tuple[int, list[EmbeddedValkey]]]:
    """A Redis-compatible server on a fixed port that the test may stop and start again."""
    port = free_port()
    servers = [EmbeddedValkey(tmp_path / "valkey", port=port)]
    servers[0].start()
    yield port, servers
    for server in servers:
        server.stop()


async def test_a_run_created_while_redis_is_down_is_published_when_it_returns(
    settings: GatewaySettings,
    admin: dict[str, str],
    db: asyncpg.Pool,
    flaky_redis: tuple[int, list[EmbeddedValkey]],
    tmp_path: Path,
) -> None:
    port, servers = flaky_redis
    url = f"redis://127.0.0.1:{port}/0"
    app = create_app(settings.model_copy(update={"redis_url": url}))
    async with app.test_app() as test_app:
        client: Client = test_app.test_client()
        agent = f"agent-{uuid.uuid4().hex[:8]}"
        await client.post("/v1/agents", json={"name": agent, "model": "scripted"}, headers=admin)
        servers[0].stop()

        response = await client.post("/v1/runs", json={"agent": agent, "input": "x"}, headers=admin)
        assert response.status_code == 202
        run_id = uuid.UUID((await response.get_json())["id"])
        await asyncio.sleep(0.5)
        assert await db.fetchval("SELECT count(*) FROM outbox WHERE run_id = $1", run_id) == 1

        servers.append(EmbeddedValkey(tmp_path / "valkey-again", port=port))
        servers[-1].start()
        redis = Redis.from_url(url)
        try:
            found = await eventually(
                lambda: entries(redis, settings.streams.runs), lambda e: len(e) > 0, within=15
            )
        finally:
            await redis.aclose()
        assert [f[b"run_id"].decode() for _, f in found] == [str(run_id)]
        await eventually(
            lambda: db.fetchval("SELECT count(*) FROM outbox WHERE run_id = $1", run_id),
            lambda n: n == 0,
        )


async def test_relays_side_by_side_publish_every_row_exactly_once(
    db: asyncpg.Pool, redis: Redis, prefix: str
) -> None:
    streams = StreamNames(prefix)
    run_ids = [uuid.uuid4() for _ in range(300)]
    await db.executemany(
        "INSERT INTO outbox (run_id, reason, project) VALUES ($1, 'created', 'default')",
        [(r,) for r in run_ids],
    )
    relays = [
        OutboxRelay(db, redis, streams, batch=25, poll_seconds=1, window=10_000) for _ in range(3)
    ]

    async def drain(relay: OutboxRelay) -> int:
        total = 0
        while published := await relay.publish_batch():
            total += published
        return total

    counts = await asyncio.gather(*(drain(r) for r in relays))
    assert all(counts), "every relay took a share"
    ours = set(run_ids)
    published = [uuid.UUID(f[b"run_id"].decode()) for _, f in await entries(redis, streams.runs)]
    assert sorted(p for p in published if p in ours) == sorted(run_ids)


async def test_a_project_with_one_run_is_published_before_another_projects_backlog(
    db: asyncpg.Pool, redis: Redis, prefix: str
) -> None:
    """Jobs leave the outbox one project at a time in turn: the quiet project's run is
    in the first batch, however many the busy one enqueued before it."""
    streams = StreamNames(f"{prefix}:fair")
    busy, quiet = f"busy-{uuid.uuid4().hex[:6]}", f"quiet-{uuid.uuid4().hex[:6]}"
    flood = [uuid.uuid4() for _ in range(500)]
    await db.executemany(
        "INSERT INTO outbox (run_id, reason, project) VALUES ($1, 'created', $2)",
        [(run_id, busy) for run_id in flood],
    )
    late = uuid.uuid4()
    await db.execute(
        "INSERT INTO outbox (run_id, reason, project) VALUES ($1, 'created', $2)", late, quiet
    )
    relay = OutboxRelay(db, redis, streams, batch=500, poll_seconds=1, window=20)
    assert await relay.room() == 20
    await relay.step()
    assert await relay.room() == 0  # the window is full: the rest waits in the outbox
    first = [uuid.UUID(f[b"run_id"].decode()) for _, f in await entries(redis, streams.runs)]
    assert late in first[:2]
    assert [run for run in first if run in set(flood)] == flood[: len(first) - 1]
    left = await db.fetchval("SELECT count(*) FROM outbox WHERE project = $1", busy)
    assert left == 500 - (len(first) - 1)
    await db.execute("DELETE FROM outbox WHERE project = $1", busy)


async def test_places_freed_one_at_a_time_go_to_the_project_served_least_recently(
    db: asyncpg.Pool, redis: Redis, prefix: str
) -> None:
    """Under a flood the window frees one place at a time. The flooding project's backlog
    is always older than a newcomer's run, so handing each place to the oldest job gave
    the flood every place while it lasted: the quiet run must get the second place."""
    streams = StreamNames(f"{prefix}:one-by-one")
    busy, quiet = f"busy-{uuid.uuid4().hex[:6]}", f"quiet-{uuid.uuid4().hex[:6]}"
    flood = [uuid.uuid4() for _ in range(50)]
    await db.executemany(
        "INSERT INTO outbox (run_id, reason, project) VALUES ($1, 'created', $2)",
        [(run_id, busy) for run_id in flood],
    )
    relay = OutboxRelay(db, redis, streams, batch=500, poll_seconds=1, window=20)
    assert await relay.publish_batch(1) == 1
    late = uuid.uuid4()
    await db.execute(
        "INSERT INTO outbox (run_id, reason, project) VALUES ($1, 'created', $2)", late, quiet
    )
    for _ in range(3):
        assert await relay.publish_batch(1) == 1
    published = [uuid.UUID(f[b"run_id"].decode()) for _, f in await entries(redis, streams.runs)]
    assert published == [flood[0], late, flood[1], flood[2]]
    await db.execute("DELETE FROM outbox WHERE project = $1", busy)
