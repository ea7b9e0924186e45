"""The transactional outbox: jobs are written with the state change that causes them, and
a relay moves them onto the runs stream.

`enqueue` inserts the outbox row inside the caller's transaction, so a job exists exactly
when its run change committed. The relay takes rows with `FOR UPDATE SKIP LOCKED`,
publishes them with one pipelined `XADD` batch, and deletes them in the same transaction:
any number of gateways can relay side by side, and a row is only gone once Redis has it.
If Redis is down the transaction rolls back and the rows wait. Publishing twice (a crash
between `XADD` and commit) is harmless: workers fence duplicate jobs at claim time.

A request that just committed a run wakes the relay so the job reaches the stream at
once; the periodic poll picks up whatever another gateway or a failure left behind.
"""

from __future__ import annotations

import logging
import uuid

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.contract.jobs import JobMessage, JobReason, StreamNames
from services.gateway.audit import APPEND
from services.gateway.background import BackgroundLoop
from services.gateway.redis_replies import text

log = logging.getLogger(__name__)

_MAX_BACKOFF_SECONDS = 5.0


async def enqueue(conn: asyncpg.Connection, run_id: uuid.UUID, reason: JobReason) -> None:
    """Publish a job for `run_id` when the surrounding transaction commits, never before."""
    await conn.execute("INSERT INTO outbox (run_id, reason) VALUES ($1, $2)", run_id, reason.value)


# Take a batch of jobs and record their `run.dispatched` events in one statement. Its
# transaction's commit need not wait for its WAL flush: if a crash loses it, the outbox
# rows come back and are published again, which the claim makes harmless. Run creation
# stays synchronous, so a 202 still means durable; this takes a flush per batch off a
# run's path. `set_config(…, true)` is `SET LOCAL` inside the statement, saving its round
# trip (evaluated for the rows taken; with none, there is nothing to commit).
_TAKE = f"""
WITH taken AS (
    DELETE FROM outbox WHERE id IN (
        SELECT id FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
    RETURNING id, run_id, reason
), dispatched AS (
    {APPEND}
    SELECT r.project, 'outbox-relay', 'system', 'run.dispatched', 'run:' || r.id,
           jsonb_build_object('reason', t.reason), NULL
      FROM taken t JOIN runs r ON r.id = t.run_id
)
SELECT id, run_id, reason, set_config('synchronous_commit', 'off', true) AS commit_mode
  FROM taken ORDER BY id"""


class OutboxRelay(BackgroundLoop):
    name = "outbox-relay"

    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        streams: StreamNames,
        *,
        batch: int,
        poll_seconds: float,
    ) -> None:
        super().__init__()
        self._pool = pool
        self._redis = redis
        self._streams = streams
        self._batch = batch
        self._poll_seconds = poll_seconds
        self._backoff = 0.1

    async def publish_batch(self) -> int:
        """Publish up to one batch; returns how many jobs went out."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_TAKE, self._batch)
            if not rows:
                return 0
            async with self._redis.pipeline(transaction=False) as pipe:
                for row in rows:
                    job = JobMessage(run_id=row["run_id"], reason=JobReason(row["reason"]))
                    pipe.xadd(self._streams.runs, job.to_fields())  # type: ignore[arg-type]
                entry_ids = await pipe.execute()
            # Which entry carries each run's latest job, for the sweeper to look for.
            await conn.execute(
                """UPDATE runs SET job_id = j.entry_id
                     FROM unnest($1::uuid[], $2::text[]) AS j(run_id, entry_id)
                    WHERE runs.id = j.run_id""",
                [row["run_id"] for row in rows],
                [text(entry_id) for entry_id in entry_ids],
            )
        return len(rows)

    async def step(self) -> float:
        try:
            published = await self.publish_batch()
        except (RedisError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("outbox relay cannot publish, retrying in %.1fs: %s", self._backoff, exc)
            rest, self._backoff = self._backoff, min(self._backoff * 2, _MAX_BACKOFF_SECONDS)
            return rest
        self._backoff = 0.1
        return 0 if published == self._batch else self._poll_seconds
