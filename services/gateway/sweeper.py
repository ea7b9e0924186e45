"""System housekeeping every gateway runs: expire approvals nobody decided in time,
publish again the runs no worker is moving (their job was lost, or their worker died),
trim the runs stream of the entries every worker group has acknowledged, and remove the
group's consumers that are gone (`idle_consumers`).

Every query takes its rows with `SKIP LOCKED`, so gateways sweep side by side without
doing the same work twice; trimming twice is harmless. PostgreSQL and Redis work fail
apart: a database that is away does not keep the stream from being trimmed, nor the
other way round.
"""

from __future__ import annotations

import logging
from functools import partial

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.contract.jobs import StreamNames
from services.gateway import metrics
from services.gateway.background import BackgroundLoop
from services.gateway.idle_consumers import IDLE_CONSUMER_SECONDS, forget_idle_consumers
from services.gateway.job_presence import jobs_waiting
from services.gateway.outbox import OutboxRelay
from services.gateway.store.approvals import expire_due
from services.gateway.store.runs import republish_stale
from services.gateway.store.thread_queue import promote_stranded
from services.gateway.stream_trim import trim_runs_stream

log = logging.getLogger(__name__)


class Sweeper(BackgroundLoop):
    name = "sweeper"

    def __init__(
        self,
        pool: asyncpg.Pool,
        relay: OutboxRelay,
        redis: Redis,
        streams: StreamNames,
        *,
        interval_seconds: float,
        requeue_after: float,
        forget_consumers_after: float = IDLE_CONSUMER_SECONDS,
    ) -> None:
        super().__init__()
        self._pool = pool
        self._relay = relay
        self._redis = redis
        self._streams = streams
        self._interval = interval_seconds
        self._requeue_after = requeue_after
        self._forget_consumers_after = forget_consumers_after

    async def step(self) -> float:
        await self._sweep_database()
        await self._trim_stream()
        return self._interval

    async def _sweep_database(self) -> None:
        try:
            expired = await expire_due(self._pool)
            stranded = await promote_stranded(self._pool)
            republished = await republish_stale(
                self._pool,
                after_seconds=self._requeue_after,
                waiting=partial(jobs_waiting, self._redis, self._streams),
            )
        except (OSError, RedisError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("sweeper round failed: %s", exc)
            return
        if expired:
            log.info("expired %d approvals", expired)
        if republished:
            log.info("published %d stalled runs again", republished)
        if stranded:
            log.info("queued %d runs that were left waiting for an idle thread", stranded)
        if expired or republished or stranded:
            self._relay.wake()

    async def _trim_stream(self) -> None:
        try:
            trimmed = await trim_runs_stream(self._redis, self._streams)
            gone = await forget_idle_consumers(
                self._redis, self._streams, self._forget_consumers_after
            )
        except (RedisError, OSError) as exc:
            log.warning("cannot trim the runs stream: %s", exc)
            return
        if trimmed:
            log.debug("trimmed %d acknowledged entries from the runs stream", trimmed)
            metrics.stream_trimmed(trimmed)
        if gone:
            log.info(
                "removed consumers idle for %gs with nothing pending: %s",
                self._forget_consumers_after,
                ", ".join(gone),
            )
