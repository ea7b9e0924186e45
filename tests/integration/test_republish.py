"""PostgreSQL is the source of truth: runs whose job was lost, or whose worker died, are
published again by the sweeper."""

from __future__ import annotations

import uuid

import asyncpg
from redis.asyncio import Redis

from services.gateway.settings import GatewaySettings
from services.gateway.store.runs import republish_stale
from tests.support.harness import ToolHarness
from tests.support.waiting import eventually


async def _published(redis: Redis, settings: GatewaySettings, run_id: str) -> int:
    entries = await redis.xrange(settings.streams.runs)
    return sum(1 for _, fields in entries if fields[b"run_id"].decode() == run_id)


async def _age(db: asyncpg.Pool, run_id: str, **columns: str) -> None:
    sets = ", ".join(f"{name} = now() - interval '{ago}'" for name, ago in columns.items())
    await db.execute(f"UPDATE runs SET {sets} WHERE id = $1", uuid.UUID(run_id))


async def test_a_queued_run_whose_job_redis_lost_is_published_again(
    h: ToolHarness, db: asyncpg.Pool, redis: Redis, settings: GatewaySettings
) -> None:
    run_id = await h.run()
    await eventually(lambda: _published(redis, settings, run_id), lambda n: n == 1)
    await redis.delete(settings.streams.runs)
    await _age(db, run_id, updated_at="1 minute")
    assert await republish_stale(db, after_seconds=30) >= 1
    await eventually(lambda: _published(redis, settings, run_id), lambda n: n == 1)
    events = await (
        await h.client.get(f"/v1/audit?target=run:{run_id}&action=run.republished", headers=h.admin)
    ).get_json()
    assert events["items"][0]["actor"] == "sweeper"


async def test_a_run_whose_worker_died_is_published_again_and_claimed_under_a_new_epoch(
    h: ToolHarness, db: asyncpg.Pool, redis: Redis, settings: GatewaySettings
) -> None:
    run_id, epoch = await h.running()
    await eventually(lambda: _published(redis, settings, run_id), lambda n: n == 1)
    await _age(db, run_id, updated_at="1 minute", lease_expires_at="1 second")
    assert await republish_stale(db, after_seconds=30) >= 1
    await eventually(lambda: _published(redis, settings, run_id), lambda n: n == 2)
    status, grant = await h.claim(run_id, "rescuer")
    assert (status, grant["epoch"]) == (200, epoch + 1)


async def test_runs_that_are_moving_are_left_alone(h: ToolHarness, db: asyncpg.Pool) -> None:
    await republish_stale(db, after_seconds=30)
    moving, _ = await h.running()
    await h.run()
    await _age(db, moving, updated_at="1 minute")
    assert await republish_stale(db, after_seconds=30) == 0
