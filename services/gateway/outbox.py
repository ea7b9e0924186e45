"""The outbox relay: moves committed outbox rows onto the runs stream.

Rows are taken with `FOR UPDATE SKIP LOCKED`, published with one pipelined `XADD` batch,
and deleted in the same transaction, so any number of gateways can relay side by side and
a row is only gone once Redis has it. If Redis is down the transaction rolls back and the
rows wait. Publishing twice (a crash between `XADD` and commit) is harmless: workers fence
duplicate jobs at claim time.

A request that just committed a run calls `wake()` so the job reaches the stream at once;
the periodic poll picks up whatever was left behind by another gateway or a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.contract.jobs import JobMessage, JobReason, StreamNames

log = logging.getLogger(__name__)

_MAX_BACKOFF_SECONDS = 5.0


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        redis: Redis,
        streams: StreamNames,
        *,
        batch: int,
        poll_seconds: float,
    ) -> None:
        self._pool = pool
        self._redis = redis
        self._streams = streams
        self._batch = batch
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Let the current batch finish, then end. A flag rather than a bare cancel: a
        cancellation that lands inside a driver call can be absorbed by it."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            async with asyncio.timeout(5):
                await self._task
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def publish_batch(self) -> int:
        """Publish up to one batch; returns how many jobs went out."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """DELETE FROM outbox WHERE id IN (
                       SELECT id FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
                   RETURNING id, run_id, reason""",
                self._batch,
            )
            if not rows:
                return 0
            async with self._redis.pipeline(transaction=False) as pipe:
                for row in sorted(rows, key=lambda r: r["id"]):
                    job = JobMessage(run_id=row["run_id"], reason=JobReason(row["reason"]))
                    pipe.xadd(self._streams.runs, job.to_fields())  # type: ignore[arg-type]
                await pipe.execute()
        return len(rows)

    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            self._wake.clear()
            try:
                published = await self.publish_batch()
            except (RedisError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("outbox relay cannot publish, retrying in %.1fs: %s", backoff, exc)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff):
                        await self._wake.wait()
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
                continue
            backoff = 0.1
            if published == self._batch:
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the
            # cancellation that stops the relay when the wake-up lands at the same time.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_seconds):
                    await self._wake.wait()
