"""How often the runs stream delivered one job: the evidence a dead-letter request brings.

A run whose job kills every worker that takes it has no live lease to show, so the
worker asking to fail it cannot prove itself by the lease. The stream can: the entry it
names must be this run's job, still pending in the workers' group, and delivered more
than `max_deliveries` times. A worker key alone (stolen, say) cannot make Redis count
deliveries, so it cannot fail a healthy run by saying its job was poison.
"""

from __future__ import annotations

import uuid
from typing import Any

from redis.asyncio import Redis

from services.contract.jobs import StreamNames


async def deliveries_of(
    redis: Redis, streams: StreamNames, entry_id: str, run_id: uuid.UUID
) -> int:
    """How often `entry_id` was delivered, if it is a pending job of `run_id`; else 0."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xpending_range(streams.runs, streams.group, min=entry_id, max=entry_id, count=1)
        pipe.xrange(streams.runs, min=entry_id, max=entry_id, count=1)
        pending, found = await pipe.execute()
    entries: list[tuple[bytes, dict[bytes, Any]]] = found
    if not pending or not entries or entries[0][1].get(b"run_id") != str(run_id).encode():
        return 0
    return int(pending[0]["times_delivered"])
