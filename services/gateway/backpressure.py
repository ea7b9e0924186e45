"""Refusing work the workers cannot start: `POST /v1/runs` answers 429 while the backlog
is past its bound — for the projects that make it so, not for everyone.

Accepting runs faster than workers take them only grows a queue whose every entry
waits longer; a client told "429, retry after N s" can slow down or go elsewhere. The
backlog is what waits for a worker: each project's queued runs, wherever their jobs are
(fair dispatch keeps most of a backlog in the outbox, `outbox.py`, and only a window in
the stream), and the oldest unfinished job's age. It is read at most once per
`refresh_seconds` per process (an index-only count of the queued runs in PostgreSQL, and
Redis for the stream), so the check costs run creation nothing on most requests.

Past `max_lag`, a project is refused only while its own queued runs are at least its
share of the bound (`max_lag` over the projects with runs queued, itself included): a
project that floods fills its share and gets 429, one with a run or two still gets in.
Each refusal speaks of the caller's project only. The age bound says the workers are
stuck for everyone, so it refuses every project.

An operator may also set quotas on a project (`store/quotas.py`): runs queued and
running at once, checked against the same once-a-second counts (so a burst may overshoot
by what one second admits), and runs created per second, counted in Redis across every
gateway in windows of at least a second (one `INCR` per run, only for projects that have
such a quota). Past a quota, only that project gets 429, whatever the platform's bound.

If Redis or PostgreSQL cannot be read, runs are still accepted: the outbox holds their
jobs until the workers take them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.contract.jobs import StreamNames
from services.contract.queue import ProjectQuota, QueueStats
from services.gateway.errors import TooManyRequests
from services.gateway.queue_stats import queue_stats
from services.gateway.refusals import Refusals
from services.gateway.store.quotas import quotas

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True)
class Backlog:
    """What waits for a worker: the stream as Redis reports it, and each project's
    queued runs."""

    stats: QueueStats
    queued: dict[str, int] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)
    quotas: dict[str, ProjectQuota] = field(default_factory=dict)

    @property
    def waiting(self) -> int:
        return sum(self.queued.values())


@dataclass(frozen=True)
class Bounds:
    max_lag: int
    max_oldest_pending_seconds: float

    def breach(self, backlog: Backlog, project: str | None = None) -> str | None:
        """Why runs are not accepted now (from `project`, when given), or None."""
        quota = None if project is None else backlog.quotas.get(project)
        if quota is not None and project is not None:
            queued, running = backlog.queued.get(project, 0), backlog.running.get(project, 0)
            if quota.max_queued is not None and queued >= quota.max_queued:
                return f"this project's quota of {quota.max_queued} queued runs is reached"
            if quota.max_running is not None and running >= quota.max_running:
                return f"this project's quota of {quota.max_running} running runs is reached"
        if backlog.waiting > self.max_lag:
            if project is None:
                return (
                    f"{backlog.waiting} runs are waiting for a worker (the bound is {self.max_lag})"
                )
            share = self.max_lag / len(set(backlog.queued) | {project})
            mine = backlog.queued.get(project, 0)
            if mine >= share:
                return (
                    f"this project has {mine} runs waiting for a worker, its share of the "
                    "platform's capacity"
                )
        oldest = backlog.stats.oldest_pending_seconds
        if oldest is not None and oldest > self.max_oldest_pending_seconds:
            return (
                f"the oldest unfinished job is {oldest:.0f}s old "
                f"(the bound is {self.max_oldest_pending_seconds:.0f}s)"
            )
        return None

    def describe(self, backlog: Backlog, project: str, *, platform: bool) -> QueueStats:
        """The backlog as `project` sees it: its own runs waiting and running, the bounds
        and whether its runs get in; the stream's platform-wide figures and the workers'
        names only when the operator opted into showing them."""
        base = backlog.stats if platform else QueueStats()
        return base.model_copy(
            update={
                "project": project,
                "waiting": backlog.queued.get(project, 0),
                "running": backlog.running.get(project, 0),
                "quota": backlog.quotas.get(project),
                "max_lag": self.max_lag,
                "max_oldest_pending_seconds": self.max_oldest_pending_seconds,
                "accepting_runs": self.breach(backlog, project) is None,
            }
        )


async def _by_project(pool: asyncpg.Pool) -> tuple[dict[str, int], dict[str, int]]:
    """Each project's queued runs, and its running ones."""
    rows = await pool.fetch(
        """SELECT project, status, count(*) AS runs FROM runs
            WHERE status IN ('queued', 'running') GROUP BY project, status"""
    )
    counts: dict[str, dict[str, int]] = {"queued": {}, "running": {}}
    for row in rows:
        counts[row["status"]][row["project"]] = row["runs"]
    return counts["queued"], counts["running"]


class Backpressure:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        streams: StreamNames,
        bounds: Bounds,
        *,
        refresh_seconds: float,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._streams = streams
        self.bounds = bounds
        self._refresh_seconds = refresh_seconds
        self._checked_at = float("-inf")
        self._backlog: Backlog | None = None
        self._lock = asyncio.Lock()
        self.refusals = Refusals(redis, streams)

    async def admit(self, project: str) -> None:
        """Raise 429 while the backlog is past its bound and `project` holds its share, or
        `project` is past one of its quotas; each refusal is counted for the project's
        summary (`refusals.py`)."""
        try:
            await self._admit(project)
        except TooManyRequests:
            await self.refusals.count(project)
            raise

    async def _admit(self, project: str) -> None:
        backlog = await self._current()
        breach = None if backlog is None else self.bounds.breach(backlog, project)
        if breach is not None:
            raise TooManyRequests(
                f"not accepting runs now: {breach}", retry_after=RETRY_AFTER_SECONDS
            )
        quota = None if backlog is None else backlog.quotas.get(project)
        if quota is not None and quota.runs_per_second is not None:
            await self._count_rate(project, quota.runs_per_second)

    async def _count_rate(self, project: str, per_second: float) -> None:
        """Count this run in the project's current window; refuse past the rate. A rate
        below one a second is counted over as many seconds as one run takes."""
        window = max(1, math.ceil(1 / per_second))
        allowed = max(1, math.floor(per_second * window))
        slot = int(time.time()) // window
        key = f"{self._streams.prefix}:rate:{project}:{window}:{slot}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, window + 1)
                created, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            log.warning("cannot count %s's rate, accepting the run: %s", project, exc)
            return
        if created > allowed:
            raise TooManyRequests(
                f"not accepting runs now: this project's quota of {per_second:g} runs per "
                "second is reached",
                retry_after=window,
            )

    async def describe(self, stats: QueueStats, project: str, *, platform: bool) -> QueueStats:
        """`stats` just read from Redis, as `project` sees them (`Bounds.describe`)."""
        backlog = await self._current()
        if backlog is None:
            backlog = Backlog(stats)
        return self.bounds.describe(
            Backlog(stats, backlog.queued, backlog.running, backlog.quotas),
            project,
            platform=platform,
        )

    async def _current(self) -> Backlog | None:
        if time.monotonic() - self._checked_at >= self._refresh_seconds:
            async with self._lock:
                if time.monotonic() - self._checked_at >= self._refresh_seconds:
                    await self._refresh()
        return self._backlog

    async def _refresh(self) -> None:
        try:
            stats = await queue_stats(self._redis, self._streams)
            queued, running = await _by_project(self._pool)
            self._backlog = Backlog(stats, queued, running, await quotas(self._pool))
        except (RedisError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("cannot read the backlog, accepting runs: %s", exc)
            self._backlog = None
        self._checked_at = time.monotonic()
