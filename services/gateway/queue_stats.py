"""Reading the runs stream's backlog from Redis, for `GET /v1/queue` and the SSE feed.

Everything comes from Redis itself (XLEN, XINFO GROUPS, XINFO CONSUMERS, XPENDING, and
the dead-letter stream's XLEN), so
every gateway reports the same numbers and no counter can drift. The oldest pending
entry's age is measured from its id (the millisecond it was published) against the Redis
server's clock, so clock skew between hosts does not enter.
"""

from __future__ import annotations

from redis.asyncio import Redis

from services.contract.jobs import StreamNames
from services.contract.queue import ConsumerStats, QueueStats
from services.gateway import dead_letter_stream
from services.gateway.redis_replies import runs_group, text
from services.gateway.stream_trim import StreamId


async def queue_stats(redis: Redis, streams: StreamNames) -> QueueStats:
    depth = int(await redis.xlen(streams.runs))
    dead_letter = await dead_letter_stream.depth(redis, streams)
    group = await runs_group(redis, streams)
    if group is None:
        return QueueStats(
            stream=streams.runs,
            group=streams.group,
            depth=depth,
            pending=0,
            lag=depth,
            oldest_pending_seconds=None,
            consumers=[],
            dead_letter=dead_letter,
        )
    consumers = await redis.xinfo_consumers(streams.runs, streams.group)
    summary = await redis.xpending(streams.runs, streams.group)
    oldest: float | None = None
    if summary["pending"] and summary["min"] is not None:
        seconds, micros = await redis.time()
        now_ms = seconds * 1000 + micros // 1000
        oldest = max(0.0, (now_ms - StreamId.parse(summary["min"]).ms) / 1000)
    lag = group.get("lag")
    return QueueStats(
        stream=streams.runs,
        group=streams.group,
        depth=depth,
        pending=int(group["pending"]),
        lag=None if lag is None else int(lag),
        oldest_pending_seconds=oldest,
        consumers=[
            ConsumerStats(
                name=text(c["name"]), pending=int(c["pending"]), idle_seconds=c["idle"] / 1000
            )
            for c in consumers
        ],
        dead_letter=dead_letter,
    )
