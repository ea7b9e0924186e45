"""The worker's side of a run: claim with a fencing epoch, heartbeat, steps, outcome.

Every write after the claim is conditional on `epoch` being the run's current one and the
run still `running`. A worker that lost its lease (expired, or the run was cancelled, or a
second claim from a duplicate message won) gets a `Conflict` and must drop the run.

The claim and every step's ack tell the worker what the run has spent, so it checks the
budget itself before each model call; recording a step checks it again with what was
really spent. The step carrying the run's answer completes the run in its transaction.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.contract.budget import Spent, overspent
from services.contract.errors import ErrorCode
from services.contract.jobs import JobReason
from services.contract.runs import Budget, RunStatus, StepStatus, Usage
from services.contract.worker_api import (
    AgentSpec,
    ClaimGrant,
    PriorStep,
    StepAck,
    StepReport,
)
from services.gateway import lease_tokens, metrics
from services.gateway.agent_cache import AgentCache
from services.gateway.audit import APPEND, Actor, record, request_id, seal
from services.gateway.db.named_statement import NamedStatement
from services.gateway.errors import Conflict, NotFound
from services.gateway.model_access import ModelAccess
from services.gateway.outbox import enqueue
from services.gateway.step_fence import (
    Action,
    Holder,
    LockedRun,
    check_lease,
    fence_report,
    refusal,
)
from services.gateway.store.agents import get_version
from services.gateway.store.runs import RUN_COLUMNS, to_run
from services.gateway.store.thread_queue import promote_next
from services.gateway.store.threads import PRIOR_STEPS, history

# The run under its row lock, with what budget checks need; for a step report also the
# status of that step (`$2`), which saves a round trip.
_LOCK = """SELECT r.project, r.lease_owner, r.lease_key, r.lease_token_digest, r.status,
                  r.epoch, r.steps_count, r.lease_expires_at, r.agent_name, r.thread_id,
                  r.prompt_tokens, r.completion_tokens, r.cost_usd,
                  extract(epoch FROM now() - r.started_at)::float8 AS elapsed,
                  (SELECT count(*) FROM steps n WHERE n.run_id = r.id AND n.kind = 'note')::int
                      AS notes,
                  a.budget, a.tools{step}
             FROM runs r JOIN agents a ON a.name = r.agent_name AND a.version = r.agent_version
            WHERE r.id = $1 FOR UPDATE OF r"""
_LOCK_RUN = _LOCK.format(step="")
_LOCK_RUN_AND_STEP = _LOCK.format(
    step=""",
                  (SELECT s.status FROM steps s WHERE s.run_id = r.id AND s.seq = $2)
                      AS step_status"""
)


_CLAIM = f"""
WITH claimed AS (
    UPDATE runs SET status = 'running', epoch = epoch + 1, lease_owner = $2, lease_key = $7,
                    lease_token_digest = $8,
                    lease_expires_at = now() + make_interval(secs => $3),
                    started_at = coalesce(started_at, now()), updated_at = now()
     WHERE id = $1 AND epoch = $9
       AND (status = 'queued' OR (status = 'running' AND lease_expires_at < now()))
     RETURNING {RUN_COLUMNS}, project, epoch, lease_expires_at,
               extract(epoch FROM now() - started_at)::float8 AS elapsed,
               {PRIOR_STEPS.format(run="runs")} AS prior_steps
), event AS (
    {APPEND}
    SELECT project, $4, $5, 'run.claimed', 'run:' || id, $10::jsonb, $6, $11, $12, $13
      FROM claimed
)
SELECT * FROM claimed"""

# What a claim needs to know first: whether the run can be claimed, and the project and
# epoch its sealed `run.claimed` event names.
_CLAIMABLE = """SELECT project, status, epoch,
                       status = 'queued' OR (status = 'running' AND lease_expires_at < now())
                           AS claimable
                  FROM runs WHERE id = $1"""
# Claims of one run racing each other: each lost race re-reads the run, and the run is
# then held by the winner, so a second attempt almost always ends it.
_CLAIM_ATTEMPTS = 3


# A step, its audit event and the run's totals and lease in one statement: every step of
# every run comes through here.
_RECORD_STEP = NamedStatement.compile(
    f"""WITH step AS (
           INSERT INTO steps (run_id, seq, kind, status, model, tool, input, output, error,
                              prompt_tokens, completion_tokens, cost_usd, epoch,
                              started_at, finished_at)
           VALUES (:run_id, :seq, :kind, :status, :model, :tool, :input, :output, :error,
                   :prompt_tokens, :completion_tokens, :cost::float8, :epoch,
                   :started_at, :finished_at)
           ON CONFLICT (run_id, seq) DO UPDATE SET
               status = EXCLUDED.status, output = EXCLUDED.output, error = EXCLUDED.error,
               prompt_tokens = EXCLUDED.prompt_tokens,
               completion_tokens = EXCLUDED.completion_tokens,
               cost_usd = EXCLUDED.cost_usd, epoch = EXCLUDED.epoch,
               finished_at = EXCLUDED.finished_at
       ), event AS (
           {APPEND}
           VALUES (:project, :actor, :actor_kind, 'step.recorded', 'run:' || :run_id,
                   :details::jsonb, :request_id, :created_at, :mac_key_id, :mac)
       )
       UPDATE runs SET
           steps_count = greatest(steps_count, :seq),
           prompt_tokens = prompt_tokens + :counted_prompt,
           completion_tokens = completion_tokens + :counted_completion,
           cost_usd = CASE WHEN NOT :counted THEN cost_usd
                           WHEN cost_usd IS NULL OR :cost::float8 IS NULL THEN NULL
                           ELSE cost_usd + :cost::float8 END,
           lease_expires_at = now() + make_interval(secs => :lease_seconds),
           updated_at = now()
        WHERE id = :run_id
        RETURNING prompt_tokens, completion_tokens, cost_usd, lease_expires_at,
                  extract(epoch FROM now() - started_at)::float8 AS elapsed"""
)


def _spent(row: asyncpg.Record) -> Spent:
    """What the run has spent, from a row with its usage columns and `elapsed`."""
    prompt, completion, cost = row["prompt_tokens"], row["completion_tokens"], row["cost_usd"]
    return Spent(
        usage=Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cost_usd=None if cost is None else float(cost),
        ),
        elapsed_seconds=max(0.0, row["elapsed"]),
    )


async def _refusal(
    conn: asyncpg.Connection | asyncpg.Pool, run_id: uuid.UUID, epoch: int
) -> Conflict:
    row = await conn.fetchrow("SELECT status, epoch FROM runs WHERE id = $1", run_id)
    if row is None:
        raise NotFound(f"no run {run_id}")
    return _refused(row, epoch)


def _refused(row: asyncpg.Record, epoch: int) -> Conflict:
    return refusal(row["status"], row["epoch"], epoch)


def _not_claimable(status: str) -> Conflict:
    code = ErrorCode.LEASE_HELD if status == "running" else ErrorCode.RUN_NOT_CLAIMABLE
    return Conflict(
        f"run is {status}" + (" under a live lease" if code is ErrorCode.LEASE_HELD else ""),
        code=code,
        details={"status": status},
    )


def lease_holder(run: asyncpg.Record) -> Actor:
    """The worker a run read with `_LOCK` is held by, as the audit names it: its key,
    and the name it gave itself."""
    return Actor.worker(run["lease_owner"], run["lease_key"])


def locked(row: asyncpg.Record) -> LockedRun:
    """The fence's view of a row read with `_LOCK`."""
    return LockedRun(
        epoch=row["epoch"],
        status=RunStatus(row["status"]),
        steps_count=row["steps_count"],
        budget=Budget.model_validate(row["budget"]),
        elapsed_seconds=row["elapsed"],
        lease_key=row["lease_key"],
        lease_token_digest=row["lease_token_digest"],
        notes=row["notes"],
    )


async def claim(
    pool: asyncpg.Pool,
    run_id: uuid.UUID,
    worker_id: str,
    lease_seconds: float,
    key_id: uuid.UUID,
    *,
    agents: AgentCache | None = None,
    models: ModelAccess | None = None,
) -> ClaimGrant:
    """Take the run if it is queued or its lease has expired; bump the epoch and mint
    the lease's token.

    One statement, with its `run.claimed` audit event, committed on its own: a claim is
    on every run's path, and a transaction around two statements would cost three more
    round trips. It is preceded by a read of the run's project and epoch, which the
    event's MAC covers; the claim holds only while the epoch is still the one read."""
    actor = Actor.worker(worker_id, key_id)
    token, token_digest = lease_tokens.mint()
    rid = request_id()
    async with pool.acquire() as conn:
        for _ in range(_CLAIM_ATTEMPTS):
            current = await conn.fetchrow(_CLAIMABLE, run_id)
            if current is None:
                raise NotFound(f"no run {run_id}")
            if not current["claimable"]:
                raise _not_claimable(current["status"])
            details = {"epoch": current["epoch"] + 1}
            sealed = seal(
                conn, current["project"], actor, "run.claimed", f"run:{run_id}", details, rid
            )
            row = await conn.fetchrow(
                _CLAIM,
                run_id,
                worker_id,
                lease_seconds,
                actor.audited,
                actor.kind.value,
                rid,
                key_id,
                token_digest,
                current["epoch"],
                details,
                sealed.created_at,
                sealed.key_id,
                sealed.mac,
            )
            if row is not None:
                break
        else:
            raise _not_claimable("running")
        run = to_run(row)
        agent = await get_version(conn, row["project"], run.agent, run.agent_version, cache=agents)
        assert agent is not None
        refusal = None if models is None else models.refusal(agent.model, row["project"])
        if refusal is not None:
            await _fail_withdrawn(conn, run_id, row["project"], refusal)
        earlier = [] if run.thread_id is None else await history(conn, run.thread_id, run.id)
    assert run.started_at is not None
    return ClaimGrant(
        run_id=run.id,
        project=row["project"],
        epoch=row["epoch"],
        lease_token=token,
        lease_expires_at=row["lease_expires_at"],
        agent=AgentSpec.model_validate(agent.model_dump()),
        input=run.input,
        messages=run.messages,
        steps=[PriorStep.model_validate(s) for s in row["prior_steps"]],
        spent=_spent(row),
        started_at=run.started_at,
        history=earlier,
        stream=run.stream,
    )


async def _fail_withdrawn(
    conn: asyncpg.Connection, run_id: uuid.UUID, project: str, refusal: str
) -> None:
    """Fail a just-claimed run whose agent's model its project may no longer use (the
    operator withdrew it since the agent was registered): with the reason, never run."""
    error = f"the agent's model is no longer allowed: {refusal}"
    async with conn.transaction():
        await conn.execute(
            """UPDATE runs SET status = 'failed', error = $2, finished_at = now(),
                               updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
                WHERE id = $1""",
            run_id,
            error,
        )
        await record(
            conn,
            project,
            Actor.system("model access"),
            "run.failed",
            f"run:{run_id}",
            {"error": error},
        )
    metrics.run_finished(RunStatus.FAILED)
    raise Conflict(error, code=ErrorCode.RUN_NOT_RUNNING, details={"status": "failed"})


async def lock_running(
    conn: asyncpg.Connection, run_id: uuid.UUID, holder: Holder
) -> asyncpg.Record:
    """Lock the run held by `holder` for the rest of the transaction, with what budget
    checks need; refuse if the lease is not theirs."""
    run = await conn.fetchrow(_LOCK_RUN, run_id)
    if run is None:
        raise NotFound(f"no run {run_id}")
    check_lease(locked(run), holder)
    return run


async def heartbeat(
    pool: asyncpg.Pool, run_id: uuid.UUID, holder: Holder, lease_seconds: float
) -> asyncpg.Record:
    """Extend the lease. One conditional statement, not a locked read: the database
    compares the token's SHA-256 digest, never the token, so the comparison's time says
    nothing about the token itself."""
    row = await pool.fetchrow(
        """UPDATE runs SET lease_expires_at = now() + make_interval(secs => $3)
            WHERE id = $1 AND epoch = $2 AND status = 'running' AND lease_key = $4
              AND lease_token_digest = $5
            RETURNING lease_expires_at""",
        run_id,
        holder.epoch,
        lease_seconds,
        holder.key_id,
        lease_tokens.digest(holder.token),
    )
    if row is None:
        raise await _refusal(pool, run_id, holder.epoch)
    return row


async def release(pool: asyncpg.Pool, run_id: uuid.UUID, holder: Holder, reason: str) -> None:
    """Hand a run held under `epoch` back: queued again with a fresh job, so another
    worker continues it from its recorded steps now rather than after the lease runs out.
    The epoch stays; the next claim raises it, which fences this worker's late calls."""
    async with pool.acquire() as conn, conn.transaction():
        run = await lock_running(conn, run_id, holder)
        await conn.execute(
            """UPDATE runs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                               updated_at = now()
                WHERE id = $1""",
            run_id,
        )
        await enqueue(conn, run_id, JobReason.REQUEUED)
        await record(
            conn,
            run["project"],
            lease_holder(run),
            "run.released",
            f"run:{run_id}",
            {"epoch": holder.epoch, "reason": reason},
        )


async def record_step(
    pool: asyncpg.Pool,
    run_id: uuid.UUID,
    report: StepReport,
    lease_seconds: float,
    key_id: uuid.UUID,
) -> StepAck:
    """Record (or finish) step `report.seq`, add its usage to the run, and check budgets.

    Steps are numbered without gaps. A step that already finished is never recorded
    again: the same report replayed after a lost response is acknowledged as it stands,
    including a final step whose run it completed. A step that breaches the budget ends
    the run `budget_exceeded` in the same transaction; the worker then hears
    `Conflict(budget_exceeded)` and stops. A step with `final_output` (the run's answer)
    within the budget completes the run in the same transaction.
    """
    async with pool.acquire() as conn, conn.transaction():
        ack, breach = await _record_step(conn, run_id, report, lease_seconds, key_id)
    if breach is not None:
        raise Conflict(breach, code=ErrorCode.BUDGET_EXCEEDED)
    assert ack is not None
    return ack


async def _record_step(
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    report: StepReport,
    lease_seconds: float,
    key_id: uuid.UUID,
) -> tuple[StepAck | None, str | None]:
    run = await conn.fetchrow(_LOCK_RUN_AND_STEP, run_id, report.seq)
    if run is None:
        raise NotFound(f"no run {run_id}")
    recorded = run["step_status"]
    if recorded is None and run["steps_count"] >= report.seq:
        # Written by a report that held the lock while this statement waited for it: the
        # locked row is read as it is now, the step as it was when the statement began.
        recorded = await conn.fetchval(
            "SELECT status FROM steps WHERE run_id = $1 AND seq = $2", run_id, report.seq
        )
    fenced = locked(run)
    verdict = fence_report(
        fenced, None if recorded is None else StepStatus(recorded), report, key_id
    )
    if verdict.action is Action.REPLAY:
        return _replayed(report, run, recorded), None
    if verdict.action is Action.END_OVER_BUDGET:
        assert verdict.breach is not None
        await end_run(conn, run_id, run, RunStatus.BUDGET_EXCEEDED, verdict.breach)
        return None, verdict.breach
    usage = report.usage
    worker = lease_holder(run)
    finished = report.status != StepStatus.STARTED
    counted = finished and usage is not None
    details = {"seq": report.seq, "kind": report.kind.value, "status": report.status.value}
    rid = request_id()
    sealed = seal(conn, run["project"], worker, "step.recorded", f"run:{run_id}", details, rid)
    totals = await conn.fetchrow(
        _RECORD_STEP.sql,
        *_RECORD_STEP.args(
            {
                "run_id": run_id,
                "seq": report.seq,
                "counted_prompt": usage.prompt_tokens if usage and counted else 0,
                "counted_completion": usage.completion_tokens if usage and counted else 0,
                "cost": usage.cost_usd if usage else None,
                "counted": counted,
                "lease_seconds": lease_seconds,
                "kind": report.kind.value,
                "status": report.status.value,
                "model": report.model,
                "tool": report.tool,
                "input": report.input,
                "output": report.output,
                "error": report.error,
                "prompt_tokens": usage.prompt_tokens if usage else None,
                "completion_tokens": usage.completion_tokens if usage else None,
                "epoch": report.epoch,
                "started_at": report.started_at,
                "finished_at": report.finished_at,
                "project": run["project"],
                "actor": worker.audited,
                "actor_kind": worker.kind.value,
                "details": details,
                "request_id": rid,
                "created_at": sealed.created_at,
                "mac_key_id": sealed.key_id,
                "mac": sealed.mac,
            }
        ),
    )
    spent = _spent(totals)
    over = overspent(fenced.budget, spent) if finished else None
    if over is not None:
        await end_run(conn, run_id, run, RunStatus.BUDGET_EXCEEDED, over)
        return None, over
    lease_expires_at = totals["lease_expires_at"]
    if report.final_output is not None:
        await end_run(conn, run_id, run, RunStatus.COMPLETED, None, output=report.final_output)
        lease_expires_at = None
    ack = StepAck(
        seq=report.seq,
        status=report.status,
        replayed=False,
        lease_expires_at=lease_expires_at,
        spent=spent,
    )
    return ack, None


def _replayed(report: StepReport, run: asyncpg.Record, status: str) -> StepAck:
    """The answer to a report of a step that had already finished: nothing recorded."""
    return StepAck(
        seq=report.seq,
        status=StepStatus(status),
        replayed=True,
        lease_expires_at=run["lease_expires_at"],
        spent=_spent(run),
    )


async def end_run(
    conn: asyncpg.Connection,
    run_id: uuid.UUID,
    run: asyncpg.Record,
    status: RunStatus,
    error: str | None,
    *,
    output: str | None = None,
) -> None:
    """End a run locked by `lock_running`, recording who ended it and why (one statement
    with its audit event: every run ends here)."""
    worker = lease_holder(run)
    details = {"error": error} if error else {}
    rid = request_id()
    sealed = seal(
        conn, run["project"], worker, f"run.{status.value}", f"run:{run_id}", details, rid
    )
    await conn.execute(
        f"""WITH ended AS (
               UPDATE runs SET status = $2, output = $3, error = $4, finished_at = now(),
                               updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
                WHERE id = $1
                RETURNING project, id
           )
           {APPEND}
           SELECT project, $5, $6, 'run.' || $2, 'run:' || id, $7::jsonb, $8, $9, $10, $11
             FROM ended""",
        run_id,
        status.value,
        output,
        error,
        worker.audited,
        worker.kind.value,
        details,
        rid,
        sealed.created_at,
        sealed.key_id,
        sealed.mac,
    )
    if run["thread_id"] is not None:
        await promote_next(conn, run["thread_id"])
    metrics.run_finished(status)


async def finish(
    pool: asyncpg.Pool,
    run_id: uuid.UUID,
    holder: Holder,
    status: RunStatus,
    *,
    output: str | None = None,
    error: str | None = None,
) -> None:
    """End a running run held by `holder`: completed, failed or over budget."""
    async with pool.acquire() as conn, conn.transaction():
        run = await lock_running(conn, run_id, holder)
        await end_run(conn, run_id, run, status, error, output=output)
