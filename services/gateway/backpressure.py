"""Refusing work the workers cannot start: `POST /v1/runs` answers 429 while the runs
stream's backlog is past its bound.

Accepting runs faster than workers take them only grows a queue whose every entry
waits longer; a client told "429, retry after N s" can slow down or go elsewhere. The
backlog is read from Redis (undelivered entries and the oldest unacknowledged entry's
age) at most once per `refresh_seconds` per process, so the check costs run creation
nothing on most requests. If Redis cannot be read, runs are still accepted: the outbox
holds their jobs until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.contract.jobs import StreamNames
from services.contract.queue import QueueStats
from services.gateway.errors import TooManyRequests
from services.gateway.queue_stats import queue_stats

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class Bounds:
    max_lag: int
    max_oldest_pending_seconds: float

    def breach(self, stats: QueueStats) -> str | None:
        lag = stats.lag if stats.lag is not None else stats.depth
        if lag > self.max_lag:
            return f"{lag} runs are waiting for a worker (the bound is {self.max_lag})"
        oldest = stats.oldest_pending_seconds
        if oldest is not None and oldest > self.max_oldest_pending_seconds:
            return (
                f"the oldest unfinished job is {oldest:.0f}s old "
                f"(the bound is {self.max_oldest_pending_seconds:.0f}s)"
            )
        return None

    def describe(self, stats: QueueStats) -> QueueStats:
        """The backlog as operators see it: with these bounds and whether runs get in."""
        return stats.model_copy(
            update={
                "max_lag": self.max_lag,
                "max_oldest_pending_seconds": self.max_oldest_pending_seconds,
                "accepting_runs": self.breach(stats) is None,
            }
        )


class Backpressure:
    def __init__(
        self, redis: Redis, streams: StreamNames, bounds: Bounds, *, refresh_seconds: float
    ) -> None:
        self._redis = redis
        self._streams = streams
        self.bounds = bounds
        self._refresh_seconds = refresh_seconds
        self._checked_at = float("-inf")
        self._breach: str | None = None
        self._lock = asyncio.Lock()

    async def admit(self) -> None:
        """Raise 429 while the backlog is past its bound."""
        if time.monotonic() - self._checked_at >= self._refresh_seconds:
            async with self._lock:
                if time.monotonic() - self._checked_at >= self._refresh_seconds:
                    await self._refresh()
        if self._breach is not None:
            raise TooManyRequests(
                f"not accepting runs now: {self._breach}", retry_after=RETRY_AFTER_SECONDS
            )

    async def _refresh(self) -> None:
        try:
            self._breach = self.bounds.breach(await queue_stats(self._redis, self._streams))
        except (RedisError, OSError) as exc:
            log.warning("cannot read the queue backlog, accepting runs: %s", exc)
            self._breach = None
        self._checked_at = time.monotonic()
