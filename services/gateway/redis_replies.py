"""Reading redis-py's replies about the runs stream.

The gateway's Redis client returns bytes (`decode_responses` is off: a job's fields
travel as bytes end to end), so the names and ids in replies are decoded here, and the
consumer group's `XINFO GROUPS` record, which the queue statistics and the sweeper's
look at waiting jobs both start from, is found in one place.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.contract.jobs import StreamNames


def text(value: Any) -> str:
    """A reply field as text, whether the client decoded it or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


async def runs_group(redis: Redis, streams: StreamNames) -> dict[str, Any] | None:
    """The runs stream's consumer group as `XINFO GROUPS` describes it; None when there
    is no stream or no group yet (nothing published, no worker started, or Redis lost
    its data)."""
    try:
        groups = await redis.xinfo_groups(streams.runs)
    except ResponseError:  # no stream
        return None
    found: dict[str, Any] | None = next(
        (g for g in groups if text(g["name"]) == streams.group), None
    )
    return found


async def undelivered(redis: Redis, streams: StreamNames, at_most: int) -> int:
    """Entries of the runs stream not yet delivered to the workers' group, counted up to
    `at_most`. The group's `lag` says it in one reply; when Redis cannot tell (it reports
    no lag after entries were deleted), the entries past the last delivered id are read,
    at most `at_most` of them."""
    group = await runs_group(redis, streams)
    if group is None:
        return min(int(await redis.xlen(streams.runs)), at_most)
    lag = group.get("lag")
    if lag is not None:
        return min(int(lag), at_most)
    after = "(" + text(group["last-delivered-id"])
    entries = await redis.xrange(streams.runs, min=after, max="+", count=at_most)
    return len(entries or [])
