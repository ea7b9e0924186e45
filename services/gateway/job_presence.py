"""Which published jobs are still on their way to a worker: undelivered in the runs
stream, or pending with a consumer (delivered, not acknowledged).

The sweeper asks before it publishes a run again. A job still waiting will be read, or
reclaimed from a dead consumer by `XAUTOCLAIM` with its delivery count going up, which is
what dead-lettering counts; a second job beside it would only add a duplicate, inflate
the backlog that backpressure reads, and reset that count.
"""

from __future__ import annotations

from redis.asyncio import Redis

from services.contract.jobs import StreamNames
from services.gateway.redis_replies import runs_group
from services.gateway.stream_trim import StreamId


async def jobs_waiting(redis: Redis, streams: StreamNames, job_ids: list[str]) -> set[str]:
    """The ids among `job_ids` still undelivered or pending; none when the group is
    gone (Redis lost its data), so every one of them is published again."""
    if not job_ids:
        return set()
    group = await runs_group(redis, streams)
    if group is None:
        return set()
    delivered_up_to = StreamId.parse(group["last-delivered-id"])
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.xpending_range(streams.runs, streams.group, min=job_id, max=job_id, count=1)
            pipe.xrange(streams.runs, min=job_id, max=job_id, count=1)
        replies = await pipe.execute()
    waiting = set()
    for n, job_id in enumerate(job_ids):
        pending, present = replies[2 * n], replies[2 * n + 1]
        if pending or (present and StreamId.parse(job_id) > delivered_up_to):
            waiting.add(job_id)
    return waiting
