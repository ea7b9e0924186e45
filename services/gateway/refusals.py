"""How many runs each project was refused (429) lately, for the operator who asks why a
client says it cannot get in: counted in Redis per project and minute, so every gateway
adds to the same figures and none keeps state of its own.

A refusal costs one pipelined `INCR` + `EXPIRE` on a path that is already refusing work;
the counts live `KEPT_MINUTES`, and a summary reads the minutes of its window that are
still kept (one `MGET` of at most that many keys), saying which minutes those were. A
count that cannot be written or read is lost, never a reason to fail a request: the
refusal itself is what the client needs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.contract.jobs import StreamNames

log = logging.getLogger(__name__)

KEPT_MINUTES = 60


@dataclass(frozen=True)
class RefusedRuns:
    """Runs refused in the minutes `since`..`until` (whole minutes, the newest one still
    counting); `minutes` is 0 when none of the window's minutes is kept any more."""

    count: int
    minutes: int
    since: datetime | None


class Refusals:
    def __init__(self, redis: Redis, streams: StreamNames) -> None:
        self._redis = redis
        self._prefix = f"{streams.prefix}:refused"

    def _key(self, project: str, minute: int) -> str:
        return f"{self._prefix}:{project}:{minute}"

    async def count(self, project: str) -> None:
        key = self._key(project, int(time.time()) // 60)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.expire(key, (KEPT_MINUTES + 1) * 60)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("cannot count a refusal of %s's run: %s", project, exc)

    async def of(self, project: str, since: datetime, until: datetime) -> RefusedRuns:
        """The project's refusals in the kept minutes that `since`..`until` overlaps."""
        now = int(time.time()) // 60
        first = max(int(since.timestamp()) // 60, now - KEPT_MINUTES + 1)
        last = min(int(until.timestamp()) // 60, now)
        if last < first:
            return RefusedRuns(0, 0, None)
        try:
            counts = await self._redis.mget([self._key(project, m) for m in range(first, last + 1)])
        except (RedisError, OSError) as exc:
            log.warning("cannot read %s's refusals: %s", project, exc)
            return RefusedRuns(0, 0, None)
        return RefusedRuns(
            sum(int(c) for c in counts if c is not None),
            last - first + 1,
            datetime.fromtimestamp(first * 60, UTC),
        )
