"""Runs whose job no worker could finish: failing them, and queueing them again.

A job delivered more than `max_deliveries` times without its run finishing is poison for
the workers (it crashes them, or outlasts every lease). The worker that notices asks the
gateway to fail the run before it sets the entry aside, and the gateway agrees only when
nobody holds a live lease on it (a run someone is still working on is not dead) and the
stream shows the job really was delivered that often (`job_deliveries.py`): the worker's
word alone would let any worker key fail any project's queued run. The run
keeps its steps and usage and is marked `dead_lettered_at`, so an operator can find it
(`GET /v1/runs?dead_lettered=true`) and, once the cause is fixed, queue it again.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from services.contract.api import Run
from services.contract.errors import ErrorCode
from services.contract.jobs import JobReason
from services.contract.runs import RunStatus
from services.contract.worker_api import DeadLetterReport
from services.gateway import metrics
from services.gateway.audit import Actor, record
from services.gateway.errors import Conflict, NotFound
from services.gateway.outbox import enqueue
from services.gateway.store.runs import RUN_COLUMNS, get_run, to_run
from services.gateway.store.thread_queue import promote_next


def _error(deliveries: int, reason: str) -> str:
    return f"dead-lettered: its job was delivered {deliveries} times without finishing ({reason})"


async def dead_letter(
    pool: asyncpg.Pool,
    run_id: uuid.UUID,
    report: DeadLetterReport,
    evidence: Callable[[], Awaitable[int]],
    max_deliveries: int,
    key_id: uuid.UUID,
) -> None:
    """Fail a run whose job was delivered too often: `queued`, or `running` with no live
    lease. A live lease is `409 lease_held` (someone is working on it); a parked or
    finished run is `409 run_not_claimable` (its job is not what moves it); a job that
    `evidence` (its delivery count in the stream) does not show delivered more than
    `max_deliveries` times is `409 deliveries_unproven`."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """SELECT project, status, thread_id,
                      coalesce(lease_expires_at > now(), false) AS lease_live
                 FROM runs WHERE id = $1 FOR UPDATE""",
            run_id,
        )
        if row is None:
            raise NotFound(f"no run {run_id}")
        if row["status"] == RunStatus.RUNNING and row["lease_live"]:
            raise Conflict(
                "run is running under a live lease",
                code=ErrorCode.LEASE_HELD,
                details={"status": "running"},
            )
        if row["status"] not in (RunStatus.QUEUED, RunStatus.RUNNING):
            raise Conflict(
                f"run is {row['status']}; its job no longer moves it",
                code=ErrorCode.RUN_NOT_CLAIMABLE,
                details={"status": row["status"]},
            )
        deliveries = await evidence()
        if deliveries <= max_deliveries:
            raise Conflict(
                f"job {report.entry_id} is not a pending job of this run delivered more than "
                f"{max_deliveries} times",
                code=ErrorCode.DELIVERIES_UNPROVEN,
                details={"status": row["status"]},
            )
        await conn.execute(
            """UPDATE runs SET status = 'failed', error = $2, dead_lettered_at = now(),
                               finished_at = now(), updated_at = now(),
                               lease_owner = NULL, lease_expires_at = NULL
                WHERE id = $1""",
            run_id,
            _error(deliveries, report.reason),
        )
        await record(
            conn,
            row["project"],
            Actor.worker(report.worker_id, key_id),
            "run.dead_lettered",
            f"run:{run_id}",
            {
                "deliveries": deliveries,
                "entry_id": report.entry_id,
                "reason": report.reason,
                "worker": report.worker_id,
            },
        )
        if row["thread_id"] is not None:
            await promote_next(conn, row["thread_id"])
    metrics.run_finished(RunStatus.FAILED)


async def requeue(pool: asyncpg.Pool, project: str, run_id: uuid.UUID, actor: Actor) -> Run:
    """Queue a dead-lettered run again with a fresh job; it resumes from its recorded steps.

    Only dead-lettered runs: any other finished run ended for a reason a retry would not
    change (an error the model or a tool reported, a budget, a human's cancel). The
    run's clock starts again, or a time budget spent waiting in the dead-letter queue
    would fail it at once."""
    try:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""UPDATE runs SET status = 'queued', error = NULL, finished_at = NULL,
                                    started_at = NULL, dead_lettered_at = NULL, updated_at = now()
                     WHERE project = $1 AND id = $2
                       AND status = 'failed' AND dead_lettered_at IS NOT NULL
                     RETURNING {RUN_COLUMNS}""",
                project,
                run_id,
            )
            if row is not None:
                await enqueue(conn, run_id, JobReason.REQUEUED)
                await record(conn, project, actor, "run.requeued", f"run:{run_id}")
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "runs_open_on_thread":
            raise
        raise Conflict(
            "the run's thread has another run in progress; queue it again when that ends",
            code=ErrorCode.THREAD_BUSY,
        ) from None
    if row is not None:
        return to_run(row)
    current = await get_run(pool, project, run_id)
    raise Conflict(
        f"run is {current.status.value} and was not dead-lettered; only dead-lettered runs "
        "can be queued again",
        code=ErrorCode.NOT_DEAD_LETTERED,
        details={"status": current.status.value},
    )
