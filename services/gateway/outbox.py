"""The transactional outbox: jobs are written with the state change that causes them, and
a relay moves them onto the runs stream, fairly across projects.

`enqueue` inserts the outbox row inside the caller's transaction, so a job exists exactly
when its run change committed. The relay takes rows with `FOR UPDATE SKIP LOCKED`,
publishes them with one pipelined `XADD` batch, and deletes them in the same transaction:
any number of gateways can relay side by side, and a row is only gone once Redis has it.
If Redis is down the transaction rolls back and the rows wait. Publishing twice (a crash
between `XADD` and commit) is harmless: workers fence duplicate jobs at claim time.

**Fair dispatch.** The stream is first come, first served, so a project that enqueued
2,000 runs made every other project wait behind all of them (26 s for one run, measured).
So the backlog waits here, in PostgreSQL, and the stream holds only a window of
`dispatch_window` undelivered jobs: enough that workers never wait for the relay, few
enough that a run is at most a window behind whatever came before it. Each batch fills
the room left in the window by taking every waiting project's oldest jobs in turn — one
of each project's, then a second of each, and so on — so a project with one waiting run
gets the next free place whatever another project's backlog. Within a turn the project
served least recently goes first, not the one with the oldest job: under a flood the
window frees one place at a time, and the flooding project's backlog is always older, so
ordering by age alone gave it every single place (B's run waited 284 ms p50 in the
outbox behind A's flood, measured). Finding the waiting projects walks the `(project, id)`
index (one probe per project, not per row), so a backlog of a million rows costs a batch
what ten do.

A request that just committed a run wakes the relay so the job reaches the stream at
once; the periodic poll picks up whatever another gateway or a failure left behind, and
while the window is full it looks again every `_TOP_UP_SECONDS`.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Iterable

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.contract.jobs import JobMessage, JobReason, StreamNames
from services.gateway.audit import APPEND, Actor, seal
from services.gateway.background import BackgroundLoop
from services.gateway.redis_replies import text, undelivered

log = logging.getLogger(__name__)

_MAX_BACKOFF_SECONDS = 5.0
_RELAY = Actor.system("outbox-relay")


async def enqueue(conn: asyncpg.Connection, run_id: uuid.UUID, reason: JobReason) -> None:
    """Publish a job for `run_id` when the surrounding transaction commits, never before."""
    await conn.execute(
        """INSERT INTO outbox (run_id, reason, project)
           SELECT $1, $2, project FROM runs WHERE id = $1""",
        run_id,
        reason.value,
    )


# Take up to $1 jobs, every waiting project's in turn. Within a turn, projects go in the
# order this relay last served them ($2, least recently served first; one it does not
# remember goes first), then oldest job first. Its transaction's commit need not wait
# for its WAL flush: if a crash loses it, the outbox rows come back and are published
# again, which the claim makes harmless. Run creation stays synchronous, so a 202 still
# means durable; this takes a flush per batch off a run's path. `set_config(…, true)` is
# `SET LOCAL` inside the statement, saving its round trip (evaluated for the rows taken;
# with none, there is nothing to commit).
_TAKE = """
WITH RECURSIVE waiting(project) AS (
    (SELECT project FROM outbox ORDER BY project LIMIT 1)
    UNION ALL
    SELECT (SELECT o.project FROM outbox o WHERE o.project > w.project
             ORDER BY o.project LIMIT 1)
      FROM waiting w WHERE w.project IS NOT NULL
), projects AS (
    SELECT project FROM waiting WHERE project IS NOT NULL
), share AS (
    SELECT greatest(1, ceil($1::float8 / greatest(count(*), 1)))::int AS n FROM projects
), candidates AS (
    SELECT c.id, c.project FROM projects p CROSS JOIN share s CROSS JOIN LATERAL (
        SELECT o.id, o.project FROM outbox o WHERE o.project = p.project
         ORDER BY o.id LIMIT s.n FOR UPDATE SKIP LOCKED) c
), turns AS (
    SELECT id, row_number() OVER (PARTITION BY project ORDER BY id) AS turn,
           coalesce(array_position($2::text[], project), 0) AS served
      FROM candidates
), taken AS (
    DELETE FROM outbox WHERE id IN (SELECT id FROM turns ORDER BY turn, served, id LIMIT $1)
    RETURNING id, run_id, reason, project
)
SELECT t.id, t.run_id, t.reason, t.project,
       set_config('synchronous_commit', 'off', true) AS commit_mode
  FROM taken t JOIN turns USING (id) ORDER BY turns.turn, turns.served, t.id"""

# While the window is full, how soon the relay looks for room again: workers drain a
# window of 8 in 40 ms at 200 runs/s, so this keeps it topped up (up to 400 jobs/s).
_TOP_UP_SECONDS = 0.02
# How many projects the relay remembers serving. One it forgot is served as if new: first.
_SERVED_REMEMBERED = 1024


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
        window: int,
    ) -> None:
        super().__init__()
        self._pool = pool
        self._redis = redis
        self._streams = streams
        self._batch = batch
        self._poll_seconds = poll_seconds
        self._window = window
        self._backoff = 0.1
        # Projects this relay published for, least recently served first.
        self._served: OrderedDict[str, None] = OrderedDict()

    def on_notify(self, _payload: str) -> None:
        """A notification that a job was committed where no relay could be woken."""
        self.wake()

    async def room(self) -> int:
        """How many jobs the stream's window has room for now."""
        return max(0, self._window - await undelivered(self._redis, self._streams, self._window))

    async def publish_batch(self, limit: int | None = None) -> int:
        """Publish up to one batch (or `limit` jobs), fairly across projects; returns how
        many jobs went out."""
        wanted = self._batch if limit is None else min(limit, self._batch)
        if wanted <= 0:
            return 0
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_TAKE, wanted, list(self._served))
            if not rows:
                return 0
            # The jobs' `run.dispatched` events go in before the jobs reach the stream,
            # so a worker's `run.claimed` always comes after them in the trail; they are
            # sealed here since the rows taken were known only now.
            sealed = [
                seal(
                    conn,
                    row["project"],
                    _RELAY,
                    "run.dispatched",
                    f"run:{row['run_id']}",
                    {"reason": row["reason"]},
                    None,
                )
                for row in rows
            ]
            await conn.execute(
                f"""{APPEND}
                    SELECT e.project, $1, $2, 'run.dispatched', 'run:' || e.run_id,
                           jsonb_build_object('reason', e.reason), NULL, e.created_at,
                           e.mac_key_id, e.mac
                      FROM unnest($3::text[], $4::uuid[], $5::text[], $6::timestamptz[],
                                  $7::text[], $8::text[])
                           AS e(project, run_id, reason, created_at, mac_key_id, mac)""",
                _RELAY.audited,
                _RELAY.kind.value,
                [row["project"] for row in rows],
                [row["run_id"] for row in rows],
                [row["reason"] for row in rows],
                [s.created_at for s in sealed],
                [s.key_id for s in sealed],
                [s.mac for s in sealed],
            )
            async with self._redis.pipeline(transaction=False) as pipe:
                for row in rows:
                    job = JobMessage(
                        run_id=row["run_id"],
                        reason=JobReason(row["reason"]),
                        project=row["project"],
                    )
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
        self._remember_served(row["project"] for row in rows)
        return len(rows)

    def _remember_served(self, projects: Iterable[str]) -> None:
        for project in projects:
            self._served.pop(project, None)
            self._served[project] = None
        while len(self._served) > _SERVED_REMEMBERED:
            self._served.popitem(last=False)

    async def step(self) -> float:
        try:
            room = await self.room()
            published = await self.publish_batch(room)
            # A turn can leave room unused (a project had fewer waiting than its share):
            # fill it from those that have more.
            while 0 < published < min(room, self._batch):
                more = await self.publish_batch(min(room, self._batch) - published)
                if more == 0:
                    break
                published += more
        except (RedisError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("outbox relay cannot publish, retrying in %.1fs: %s", self._backoff, exc)
            rest, self._backoff = self._backoff, min(self._backoff * 2, _MAX_BACKOFF_SECONDS)
            return rest
        self._backoff = 0.1
        if published == self._batch:
            return 0
        if room == 0 or published == room:
            # The window is full: the rest (if any) waits for workers to take some.
            return _TOP_UP_SECONDS
        return self._poll_seconds
