"""Consumers of the runs stream's group that are gone (earlier dev starts, crashed
workers) are removed by the sweeper once idle with nothing pending; one holding an
entry is never removed, since removing it would drop the entry from the group. On Redis
before 7.2, where a quiet live worker looks idle, none is removed.

The removals run against an embedded Valkey (what `make dev` uses, and whose `idle`
counts from the last attempted read); the suite's Redis may be older."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.contract.jobs import StreamNames
from services.devstack.embedded import EmbeddedValkey
from services.gateway.idle_consumers import forget_idle_consumers
from services.gateway.settings import GatewaySettings
from services.gateway.sweeper import Sweeper
from testbed.streams import append, read_new

STREAMS = StreamNames("idle-consumers")


@pytest.fixture(scope="module")
async def valkey(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Redis]:
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"))
    client = Redis.from_url(server.start())
    try:
        yield client
    finally:
        await client.aclose()
        server.stop()


@pytest.fixture
async def fresh(valkey: Redis) -> AsyncIterator[Redis]:
    yield valkey
    await valkey.delete(STREAMS.runs)


async def _consumers(redis: Redis, streams: StreamNames) -> set[str]:
    return {c["name"].decode() for c in await redis.xinfo_consumers(streams.runs, streams.group)}


async def _join(redis: Redis, streams: StreamNames, *names: str) -> None:
    for name in names:
        await redis.xgroup_createconsumer(streams.runs, streams.group, name)


async def test_only_idle_consumers_with_nothing_pending_are_removed(fresh: Redis) -> None:
    await append(fresh, STREAMS.runs, {"n": "1"})
    await fresh.xgroup_create(STREAMS.runs, STREAMS.group, id="0")
    await _join(fresh, STREAMS, "busy", "gone")
    assert await read_new(fresh, STREAMS.group, "busy", STREAMS.runs, 1)

    assert await forget_idle_consumers(fresh, STREAMS, idle_seconds=3600) == []
    assert await forget_idle_consumers(fresh, STREAMS, idle_seconds=0) == ["gone"]
    assert await _consumers(fresh, STREAMS) == {"busy"}
    (pending,) = await fresh.xpending_range(STREAMS.runs, STREAMS.group, "-", "+", 10)
    assert pending["consumer"] == b"busy"


async def test_no_stream_or_no_group_is_nothing_to_remove(fresh: Redis) -> None:
    assert await forget_idle_consumers(fresh, STREAMS, idle_seconds=0) == []
    await append(fresh, STREAMS.runs, {"n": "1"})
    assert await forget_idle_consumers(fresh, STREAMS, idle_seconds=0) == []


async def test_the_sweeper_removes_them(fresh: Redis) -> None:
    await fresh.xgroup_create(STREAMS.runs, STREAMS.group, id="0", mkstream=True)
    await _join(fresh, STREAMS, "dev-0ld5tart")
    sweeper = Sweeper(
        None,  # only the Redis half runs here: no pool
        None,  # type: ignore[arg-type]  # nor relay
        fresh,
        STREAMS,
        interval_seconds=0.05,
        requeue_after=30,
        forget_consumers_after=0,
    )
    await sweeper._trim_stream()
    assert await _consumers(fresh, STREAMS) == set()


async def test_redis_before_7_2_has_none_removed(redis: Redis, settings: GatewaySettings) -> None:
    version = (await redis.info("server"))["redis_version"]
    if tuple(int(part) for part in str(version).split(".")[:2]) >= (7, 2):
        pytest.skip(f"the suite's Redis is {version}")
    streams = settings.streams
    await redis.xgroup_create(streams.runs, streams.group, id="0", mkstream=True)
    await _join(redis, streams, "quiet-but-alive")
    assert await forget_idle_consumers(redis, streams, idle_seconds=0) == []
    assert await _consumers(redis, streams) == {"quiet-but-alive"}
