"""Runs waiting for their thread: what `if_busy: "enqueue"` asks for.

A thread runs one run at a time (a unique index of open runs per thread, migration
0021), so a run created while its thread is busy cannot simply be queued. Instead it is
kept as `waiting_thread`, with no job, and queued when the run before it ends: in the
transaction that ends that run (`promote_next`, called wherever a run ends), so the
next turn of a conversation is dispatched as soon as the last one's answer is recorded.

A waiting run can also miss that moment: it was created after the ending transaction
looked for one, while the ending had not committed yet. The sweeper looks for threads
with waiting runs and none open now and then (`promote_stranded`), so such a run waits
one sweep, never forever. Two promoters racing for one thread are kept apart by the
same unique index: the loser's promotion is rolled back to its savepoint, unseen.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.contract.jobs import JobReason
from services.gateway.audit import Actor, record
from services.gateway.outbox import enqueue

_THREAD_QUEUE = Actor.system("thread-queue")
CHANNEL = "ferrumdeck_thread_queue"
"""Told on commit of a promotion, so every gateway's relay publishes the job at once
rather than at its next poll (a promotion mostly happens in a worker's callback, where
no relay is at hand)."""

_PROMOTE = """
UPDATE runs SET status = 'queued', updated_at = now()
 WHERE id = (SELECT w.id FROM runs w
              WHERE w.thread_id = $1 AND w.status = 'waiting_thread'
                AND NOT EXISTS (SELECT 1 FROM runs o
                                 WHERE o.thread_id = $1
                                   AND o.status IN ('queued', 'running', 'waiting_approval'))
              ORDER BY w.id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, project"""

_STRANDED = """
SELECT DISTINCT w.thread_id FROM runs w
 WHERE w.status = 'waiting_thread'
   AND NOT EXISTS (SELECT 1 FROM runs o
                    WHERE o.thread_id = w.thread_id
                      AND o.status IN ('queued', 'running', 'waiting_approval'))
 LIMIT $1"""


async def promote_next(conn: asyncpg.Connection, thread_id: uuid.UUID) -> uuid.UUID | None:
    """Queue the oldest run waiting for `thread_id` if the thread has no open run (as
    seen by this transaction); returns it. Call it after ending a run of the thread, in
    the same transaction."""
    try:
        async with conn.transaction():
            row = await conn.fetchrow(_PROMOTE, thread_id)
            if row is None:
                return None
            await enqueue(conn, row["id"], JobReason.CREATED)
            await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
            await record(
                conn,
                row["project"],
                _THREAD_QUEUE,
                "run.queued",
                f"run:{row['id']}",
                {"thread": str(thread_id)},
            )
    except asyncpg.UniqueViolationError:
        # Another promoter queued a run of this thread first.
        return None
    promoted: uuid.UUID = row["id"]
    return promoted


async def promote_stranded(pool: asyncpg.Pool, *, batch: int = 100) -> int:
    """Queue the next run of every thread that has runs waiting and none open; returns
    how many were queued."""
    async with pool.acquire() as conn:
        threads = [row["thread_id"] for row in await conn.fetch(_STRANDED, batch)]
        promoted = 0
        for thread_id in threads:
            async with conn.transaction():
                promoted += await promote_next(conn, thread_id) is not None
    return promoted
