"""Runs: creation through the outbox, reads, cancellation.

The worker side of a run's life (claim, steps, completion) is in `store.leases`.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal

import asyncpg

from services.contract.api import Agent, Run, RunCreate
from services.contract.ids import uuid7
from services.contract.jobs import JobReason
from services.contract.runs import RunStatus, Usage
from services.gateway import metrics
from services.gateway.audit import Actor, record
from services.gateway.errors import Conflict, NotFound
from services.gateway.outbox import enqueue
from services.gateway.store.approvals import cancel_for_run

RUN_COLUMNS = """id, agent_name, agent_version, status, input, output, error, metadata,
    prompt_tokens, completion_tokens, cost_usd, steps_count, created_at, started_at,
    finished_at, dead_lettered_at, request_hash"""

_SWEEPER = Actor.system("sweeper")
_OPEN = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING_APPROVAL)


def to_run(row: asyncpg.Record) -> Run:
    cost: Decimal | None = row["cost_usd"]
    return Run(
        id=row["id"],
        agent=row["agent_name"],
        agent_version=row["agent_version"],
        status=RunStatus(row["status"]),
        input=row["input"],
        output=row["output"],
        error=row["error"],
        metadata=row["metadata"],
        usage=Usage(
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            total_tokens=row["prompt_tokens"] + row["completion_tokens"],
            cost_usd=None if cost is None else float(cost),
        ),
        steps_count=row["steps_count"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        dead_lettered_at=row["dead_lettered_at"],
    )


async def create_run(
    pool: asyncpg.Pool,
    project: str,
    agent: Agent,
    body: RunCreate,
    *,
    idempotency_key: str | None,
    request_hash: str | None,
    actor: Actor,
) -> tuple[Run, bool]:
    """Insert a queued run and its outbox row together; returns the run and whether it is new.

    A repeated `Idempotency-Key` returns the run it first created, unless the request
    differs, which is a client bug worth a 409 rather than a silent mix-up.
    """
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""INSERT INTO runs (project, id, agent_name, agent_version, status, input,
                                  metadata, idempotency_key, request_hash)
                VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8)
                ON CONFLICT (project, idempotency_key) WHERE idempotency_key IS NOT NULL
                DO NOTHING
                RETURNING {RUN_COLUMNS}""",
            project,
            uuid7(),
            agent.name,
            agent.version,
            body.input,
            body.metadata,
            idempotency_key,
            request_hash,
        )
        if row is None:
            existing = await conn.fetchrow(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE project = $1 AND idempotency_key = $2",
                project,
                idempotency_key,
            )
            assert existing is not None
            if existing["request_hash"] != request_hash:
                raise Conflict(
                    "this Idempotency-Key was already used for a different request",
                    code="idempotency_key_reused",
                )
            return to_run(existing), False
        await enqueue(conn, row["id"], JobReason.CREATED)
        await record(
            conn,
            project,
            actor,
            "run.created",
            f"run:{row['id']}",
            {"agent": f"{agent.name}@{agent.version}"},
        )
    return to_run(row), True


async def get_run(conn: asyncpg.Pool | asyncpg.Connection, project: str, run_id: uuid.UUID) -> Run:
    row = await conn.fetchrow(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE project = $1 AND id = $2", project, run_id
    )
    if row is None:
        raise NotFound(f"no run {run_id}")
    return to_run(row)


async def list_runs(
    pool: asyncpg.Pool,
    project: str,
    *,
    status: RunStatus | None,
    agent: str | None,
    dead_lettered: bool | None,
    before: uuid.UUID | None,
    limit: int,
) -> list[Run]:
    """Newest first; ids are UUIDv7, so id order is creation order."""
    rows = await pool.fetch(
        f"""SELECT {RUN_COLUMNS} FROM runs
             WHERE project = $1
               AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR agent_name = $3)
               AND ($4::uuid IS NULL OR id < $4)
               AND ($6::boolean IS NULL OR (dead_lettered_at IS NOT NULL) = $6)
             ORDER BY id DESC LIMIT $5""",
        project,
        status.value if status else None,
        agent,
        before,
        limit,
        dead_lettered,
    )
    return [to_run(r) for r in rows]


async def cancel_run(pool: asyncpg.Pool, project: str, run_id: uuid.UUID, actor: Actor) -> Run:
    """Make an open run `cancelled` at once; its worker learns it on its next callback,
    and a parked run's pending approval can no longer be decided."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""UPDATE runs SET status = 'cancelled', error = $2, finished_at = now(),
                                updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
                 WHERE project = $4 AND id = $1 AND status = ANY($3::text[])
                 RETURNING {RUN_COLUMNS}""",
            run_id,
            f"cancelled by {actor.name}",
            [s.value for s in _OPEN],
            project,
        )
        if row is not None:
            await cancel_for_run(conn, run_id)
            await record(conn, project, actor, "run.cancelled", f"run:{run_id}")
    if row is not None:
        metrics.run_finished(RunStatus.CANCELLED)
        return to_run(row)
    current = await get_run(pool, project, run_id)
    raise Conflict(f"run is already {current.status.value}", code="run_finished")


async def republish_stale(
    pool: asyncpg.Pool,
    *,
    after_seconds: float,
    waiting: Callable[[list[str]], Awaitable[set[str]]],
    batch: int = 500,
) -> int:
    """Publish again the runs no worker is moving: `queued` with no job waiting in the
    outbox, or `running` under an expired lease, untouched for `after_seconds`, whose
    last job is no longer `waiting` in the stream (undelivered, or pending with a
    consumer, from which `XAUTOCLAIM` will take it).

    PostgreSQL is the source of truth, so this recovers runs whose job Redis lost (a
    restart without persistence, FLUSHALL) and runs whose job was acknowledged by a
    worker that then died. A duplicate job is harmless (the claim fences it), but not
    free, hence the look at the stream first. Touching `updated_at` spaces out the
    checks of a run nobody picks up.
    """
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT id, project, status, job_id FROM runs
                WHERE updated_at < now() - make_interval(secs => $1)
                  AND ((status = 'queued'
                        AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.run_id = runs.id))
                       OR (status = 'running' AND lease_expires_at < now()))
                ORDER BY id LIMIT $2
                FOR UPDATE SKIP LOCKED""",
            after_seconds,
            batch,
        )
        if not rows:
            return 0
        still_waiting = await waiting([row["job_id"] for row in rows if row["job_id"]])
        await conn.execute(
            "UPDATE runs SET updated_at = now() WHERE id = ANY($1::uuid[])",
            [row["id"] for row in rows],
        )
        lost = [row for row in rows if row["job_id"] not in still_waiting]
        for row in lost:
            await enqueue(conn, row["id"], JobReason.REQUEUED)
            await record(
                conn,
                row["project"],
                _SWEEPER,
                "run.republished",
                f"run:{row['id']}",
                {"status": row["status"]},
            )
    return len(lost)
