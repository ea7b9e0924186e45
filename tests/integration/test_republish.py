"""PostgreSQL is the source of truth: runs whose job was lost, or whose worker died, are
published again by the sweeper."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from functools import partial

import asyncpg
from redis.asyncio import Redis

from services.gateway.job_presence import jobs_waiting
from services.gateway.settings import GatewaySettings
from services.gateway.store.runs import republish_stale
from testbed.streams import entries
from testbed.waiting import eventually
from tests.support.harness import ToolHarness


async def _published(redis: Redis, settings: GatewaySettings, run_id: str) -> int:
    found = await entries(redis, settings.streams.runs)
    return sum(1 for _, fields in found if fields[b"run_id"].decode() == run_id)


def _waiting(redis: Redis, settings: GatewaySettings) -> Callable[[list[str]], Awaitable[set[str]]]:
    return partial(jobs_waiting, redis, settings.streams)


async def _age(db: asyncpg.Pool, run_id: str, **columns: str) -> None:
    sets = ", ".join(f"{name} = now() - interval '{ago}'" for name, ago in columns.items())
    await db.execute(f"UPDATE runs SET {sets} WHERE id = $1", uuid.UUID(run_id))


async def test_a_queued_run_whose_job_redis_lost_is_published_again(
    harness: ToolHarness, db: asyncpg.Pool, redis: Redis, settings: GatewaySettings
) -> None:
    run_id = await harness.run()
    await eventually(lambda: _published(redis, settings, run_id), lambda n: n == 1)
    await redis.delete(settings.streams.runs)
    await _age(db, run_id, updated_at="1 minute")
    assert await republish_stale(db, after_seconds=30, waiting=_waiting(redis, settings)) >= 1
    await eventually(lambda: _published(redis, settings, run_id), lambda n: n == 1)
    events = await (
        await harness.client.get(
            f"/v1/audit?target=run:{run_id}&action=run.republished", headers=harness.admin
        )
    ).get_json()
    assert events["items"][0]["actor"] == "sweeper"


async def test_a_run_whose_worker_died_is_published_again_and_claimed_under_a_new_epoch(
    harness: ToolHarness, db: asyncpg.Pool, redis: Redis, settings: GatewaySettings
) -> None:
    run_id, epoch = await harness.running()
    await eventually(lambda: _published(redis, settings, run_id), lambda n: n == 1)
    await _age(db, run_id, updated_at="1 minute", lease_expires_at="1 second")
    assert await republish_stale(db, after_seconds=30, waiting=_waiting(redis, settings)) >= 1
    await eventually(lambda: _published(redis, settings, run_id), lambda n: n == 2)
    status, grant = await harness.claim(run_id, "rescuer")
    assert (status, grant["epoch"]) == (200, epoch + 1)


async def test_runs_that_are_moving_are_left_alone(
    harness: ToolHarness, db: asyncpg.Pool, redis: Redis, settings: GatewaySettings
) -> None:
    """A run under a live lease, however long untouched, and a queued run whose job is in
    the stream. Judged by these two runs' own trail, not by the sweep's count: the
    database also holds earlier tests' runs, whose leases may run out meanwhile."""
    moving, _ = await harness.running()
    queued = await harness.run()
    await eventually(lambda: _published(redis, settings, queued), lambda n: n == 1)
    await _age(db, moving, updated_at="1 minute")
    await republish_stale(db, after_seconds=30, waiting=_waiting(redis, settings))
    republished = await db.fetchval(
        """SELECT count(*) FROM audit_events
            WHERE action = 'run.republished' AND target = ANY($1::text[])""",
        [f"run:{moving}", f"run:{queued}"],
    )
    assert republished == 0


async def test_jobs_still_waiting_in_the_stream_are_not_published_twice(
    harness: ToolHarness, db: asyncpg.Pool, redis: Redis, settings: GatewaySettings
) -> None:
    """A backlog (undelivered) and a dead worker's job (pending, left to XAUTOCLAIM and
    its delivery count) are not lost: publishing them again would only add duplicates."""
    streams = settings.streams
    await redis.xgroup_create(streams.runs, streams.group, id="$", mkstream=True)
    dead_workers_run = await harness.run()
    await eventually(lambda: _published(redis, settings, dead_workers_run), lambda n: n == 1)
    waiting_run = await harness.run()
    await redis.xreadgroup(streams.group, "dies", {streams.runs: ">"}, count=1)
    await eventually(lambda: _published(redis, settings, waiting_run), lambda n: n == 1)
    await _age(db, waiting_run, updated_at="1 minute")
    await _age(db, dead_workers_run, updated_at="1 minute")
    # Other tests' old runs share the database, so count this test's jobs, not the total.
    await republish_stale(db, after_seconds=30, waiting=_waiting(redis, settings))
    ids = [uuid.UUID(dead_workers_run), uuid.UUID(waiting_run)]
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE run_id = ANY($1)", ids) == 0
    (pending,) = await redis.xpending_range(streams.runs, streams.group, "-", "+", 10)
    assert pending["consumer"] == b"dies"
    assert [await _published(redis, settings, r) for r in (waiting_run, dead_workers_run)] == [
        1,
        1,
    ]
