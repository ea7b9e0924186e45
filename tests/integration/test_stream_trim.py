"""The runs stream stays short: entries every worker group acknowledged are trimmed, and
never one still pending or not yet delivered."""

from __future__ import annotations

from quart.typing import TestClientProtocol as Client
from redis.asyncio import Redis

from services.gateway.settings import GatewaySettings
from services.gateway.stream_trim import StreamId, trim_runs_stream
from testbed.streams import append, entries, read_new
from testbed.waiting import eventually
from tests.support.harness import Harness


async def _publish(redis: Redis, stream: str, count: int) -> list[bytes]:
    return [await append(redis, stream, {"n": str(n)}) for n in range(count)]


async def _left(redis: Redis, stream: str) -> list[bytes]:
    return [entry_id for entry_id, _ in await entries(redis, stream)]


async def _deliver(redis: Redis, stream: str, group: str, count: int) -> list[bytes]:
    return [entry_id for entry_id, _ in await read_new(redis, group, "worker-a", stream, count)]


async def test_only_entries_acknowledged_below_the_oldest_pending_are_trimmed(
    redis: Redis, settings: GatewaySettings
) -> None:
    streams = settings.streams
    e1, e2, e3, e4, e5, e6 = await _publish(redis, streams.runs, 6)
    await redis.xgroup_create(streams.runs, streams.group, id="0")
    assert await _deliver(redis, streams.runs, streams.group, 4) == [e1, e2, e3, e4]
    await redis.xack(streams.runs, streams.group, e1, e2, e4)

    assert await trim_runs_stream(redis, streams) == 2
    assert await _left(redis, streams.runs) == [e3, e4, e5, e6]

    await redis.xack(streams.runs, streams.group, e3)
    assert await trim_runs_stream(redis, streams) == 2
    assert await _left(redis, streams.runs) == [e5, e6], "undelivered entries stay"
    assert await trim_runs_stream(redis, streams) == 0


async def test_the_slowest_group_sets_the_bound(redis: Redis, settings: GatewaySettings) -> None:
    streams = settings.streams
    e1, e2, e3 = await _publish(redis, streams.runs, 3)
    await redis.xgroup_create(streams.runs, streams.group, id="0")
    await redis.xgroup_create(streams.runs, "auditors", id="0")
    await _deliver(redis, streams.runs, streams.group, 3)
    await redis.xack(streams.runs, streams.group, e1, e2, e3)
    await _deliver(redis, streams.runs, "auditors", 1)
    await redis.xack(streams.runs, "auditors", e1)

    assert await trim_runs_stream(redis, streams) == 1
    assert await _left(redis, streams.runs) == [e2, e3]


async def test_nothing_is_trimmed_before_a_group_exists(
    redis: Redis, settings: GatewaySettings
) -> None:
    streams = settings.streams
    assert await trim_runs_stream(redis, streams) == 0, "no stream at all"
    await _publish(redis, streams.runs, 3)
    assert await trim_runs_stream(redis, streams) == 0
    assert len(await _left(redis, streams.runs)) == 3


def test_the_bound_after_the_last_delivered_entry_is_its_successor() -> None:
    assert str(StreamId.parse(b"1700000000000-4").successor()) == "1700000000000-5"
    assert StreamId.parse("5-18446744073709551615").successor() == StreamId(6, 0)
    assert StreamId.parse("0-0") < StreamId.parse("0-1") < StreamId.parse("1-0")


async def test_the_sweeper_trims_what_workers_finished(
    client: Client,
    admin: dict[str, str],
    worker: dict[str, str],
    redis: Redis,
    settings: GatewaySettings,
) -> None:
    harness = Harness(client, admin, worker)
    streams = settings.streams
    for _ in range(3):
        await harness.run()
    await eventually(lambda: redis.xlen(streams.runs), lambda n: n == 3)
    await redis.xgroup_create(streams.runs, streams.group, id="0")
    done = await _deliver(redis, streams.runs, streams.group, 2)
    before = await _trimmed_total(client)
    await redis.xack(streams.runs, streams.group, done[0])

    await eventually(lambda: _left(redis, streams.runs), lambda left: len(left) == 2)
    assert (await _left(redis, streams.runs))[0] == done[1], "the pending entry stays"
    assert await _trimmed_total(client) >= before + 1


async def _trimmed_total(client: Client) -> float:
    scraped = await (await client.get("/metrics")).get_data(as_text=True)
    (line,) = [
        line for line in scraped.splitlines() if line.startswith("ferrumdeck_stream_trimmed_total ")
    ]
    return float(line.split()[1])
