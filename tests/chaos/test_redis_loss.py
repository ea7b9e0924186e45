"""Redis loses everything under load: flushed, or killed and restarted without
persistence. PostgreSQL is the source of truth: the sweeper publishes the runs whose
jobs vanished again, the workers recreate their consumer group and carry on, and every
accepted run still finishes exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from testbed.waiting import eventually
from tests.chaos.driving import accepted_more, under_load
from tests.chaos.invariants import assert_invariants
from tests.support.chaos_load import Workload
from tests.support.chaos_stack import ChaosRedis, ChaosStack, exited


async def _group_exists(stack: ChaosStack) -> bool:
    redis = Redis.from_url(stack.redis_url)
    try:
        groups = await redis.xinfo_groups(stack.streams.runs)
    except ResponseError:  # no stream at all
        return False
    finally:
        await redis.aclose()
    return any(g["name"].decode() == stack.streams.group for g in groups)


async def _lose_redis_under_load(
    chaos: ChaosStack, label: str, lose: Callable[[ChaosRedis], Awaitable[None]]
) -> None:
    assert chaos.own_redis is not None
    agent = await chaos.agent(label)
    work = Workload(chaos.llm, label)
    async with under_load(chaos, agent, work.mixed) as integration:
        await accepted_more(integration, 8)
        await lose(chaos.own_redis)
        await accepted_more(integration, 8)
    down = [w for w in chaos.workers if not await w.healthy()]
    if down:  # let them finish dying, for their last words
        await asyncio.gather(*(exited(w.current.process, 15) for w in down if w.current))
    assert not down, "workers died of it:\n" + "\n".join(w.last_words() for w in down)
    assert await eventually(lambda: _group_exists(chaos), bool)
    await assert_invariants(chaos, integration.accepted, [agent])
    assert 500 not in integration.seen, integration.seen


async def _flush_while_a_worker_waits(server: ChaosRedis) -> None:
    """FLUSHALL while a worker is blocked reading the stream, where idle workers spend
    their time (and where Redis answers them differently than between two reads)."""
    redis = Redis.from_url(server.url)

    async def blocked_readers() -> int:
        clients = await redis.client_list()
        return sum(1 for c in clients if c["cmd"] == "xreadgroup" and "b" in c["flags"])

    try:
        await eventually(blocked_readers, bool, within=15)
        await redis.flushall()
    finally:
        await redis.aclose()


async def test_runs_finish_exactly_once_when_redis_is_flushed_under_load(
    chaos: ChaosStack,
) -> None:
    await _lose_redis_under_load(chaos, "flushed", _flush_while_a_worker_waits)


async def test_runs_finish_exactly_once_when_redis_restarts_empty_under_load(
    chaos: ChaosStack,
) -> None:
    await _lose_redis_under_load(chaos, "restarted", ChaosRedis.restart)
