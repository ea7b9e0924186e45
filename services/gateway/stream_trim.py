"""Keeping the runs stream short without ever dropping a job no worker has finished.

An acknowledged entry serves no one, but a blind `MAXLEN` would also cut entries still
pending (a worker is on them, or died and they wait to be reclaimed) or not delivered
yet. So the bound comes from the consumer groups: for each, its oldest pending entry if
any, else the entry after the last one it was delivered; the stream is trimmed exactly
(`XTRIM MINID`) below the lowest bound over all groups. Everything below it was
delivered to every group and acknowledged. With no group, nobody has read anything yet,
and nothing is trimmed.

The bound is read before the trim, not atomically with it, which is safe: meanwhile
entries can only be acknowledged (the bound was too low: trimmed next round), delivered
(they lie at or above the bound), or appended (above everything).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.contract.jobs import StreamNames
from services.gateway.redis_replies import text

_MAX_SEQ = 2**64 - 1


@dataclass(frozen=True, order=True)
class StreamId:
    ms: int
    seq: int

    @classmethod
    def parse(cls, value: Any) -> StreamId:
        ms, _, seq = text(value).partition("-")
        return cls(int(ms), int(seq or 0))

    def successor(self) -> StreamId:
        if self.seq == _MAX_SEQ:
            return StreamId(self.ms + 1, 0)
        return StreamId(self.ms, self.seq + 1)

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"


async def safe_min_id(redis: Redis, stream: str) -> StreamId | None:
    """The lowest id some consumer group may still need; None when there is no group."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no stream: nothing to trim
        return None
    bounds = []
    for group in groups:
        bound = StreamId.parse(group["last-delivered-id"]).successor()
        if int(group["pending"]):
            summary = await redis.xpending(stream, group["name"])
            if summary["pending"] and summary["min"] is not None:
                bound = min(bound, StreamId.parse(summary["min"]))
        bounds.append(bound)
    return min(bounds, default=None)


async def trim_runs_stream(redis: Redis, streams: StreamNames) -> int:
    """Drop the runs stream's entries every group has acknowledged; returns how many."""
    bound = await safe_min_id(redis, streams.runs)
    if bound is None:
        return 0
    return int(await redis.xtrim(streams.runs, minid=str(bound), approximate=False))
