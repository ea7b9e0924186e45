"""Approvals: a human's yes or no on one parked tool call.

Deciding (or expiring) an approval settles its step and re-queues the run through the
outbox in one transaction; the next worker to claim the run carries on from there. A
decision is taken once: the approval row is locked and must still be pending. Under
separation of duties (`services/gateway/separation_of_duties.py`) the same statement
reads who started the run and the setting of the versions that have a say, so the
check costs no round trip.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.contract.api import Approval, ApprovalStatus, Role
from services.contract.errors import ErrorCode
from services.contract.jobs import JobReason
from services.contract.policy import DistinctApprover
from services.gateway.audit import Actor, record
from services.gateway.errors import Conflict, Forbidden, NotFound
from services.gateway.outbox import enqueue
from services.gateway.separation_of_duties import Party, refusal, strictest

_EXPIRY = Actor.system("approval-expiry")
# What a step's decision records of the approval it waited for ($3 who, $4 why, $5 how it
# ended): the step answers for itself, in the API and `runs show`, without a join.
_STEP_DECIDED = """coalesce(decision, '{}') || jsonb_build_object(
    'decided_by', $3::text, 'reason', $4::text, 'approval_status', $5::text)"""
_COLUMNS = """id, run_id, step_seq, agent_name AS agent, tool, arguments, rule, policy_version,
    explanation, status, reason, decided_by, expires_at, created_at, decided_at"""


def _approval(row: asyncpg.Record) -> Approval:
    return Approval.model_validate(dict(row))


async def get_approval(
    conn: asyncpg.Pool | asyncpg.Connection, project: str, approval_id: uuid.UUID
) -> Approval:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM approvals WHERE project = $1 AND id = $2", project, approval_id
    )
    if row is None:
        raise NotFound(f"no approval {approval_id}")
    return _approval(row)


async def list_approvals(
    pool: asyncpg.Pool,
    project: str,
    *,
    status: ApprovalStatus | None,
    run_id: uuid.UUID | None,
    before: uuid.UUID | None,
    limit: int,
) -> list[Approval]:
    rows = await pool.fetch(
        f"""SELECT {_COLUMNS} FROM approvals
             WHERE project = $5
               AND ($1::text IS NULL OR status = $1)
               AND ($2::uuid IS NULL OR run_id = $2)
               AND ($3::uuid IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4""",
        status.value if status else None,
        run_id,
        before,
        limit,
        project,
    )
    return [_approval(r) for r in rows]


async def decide(
    pool: asyncpg.Pool,
    project: str,
    approval_id: uuid.UUID,
    *,
    approve: bool,
    reason: str,
    actor: Actor,
    role: Role,
) -> Approval:
    """Settle a pending approval as `actor` (a key of `role`) decides. One found expired
    is settled as expired (that stands) and refused."""
    async with pool.acquire() as conn, conn.transaction():
        expired = await _decide_locked(conn, project, approval_id, approve, reason, actor, role)
    if expired:
        raise _expired(approval_id)
    return await get_approval(pool, project, approval_id)


async def decide_many(
    pool: asyncpg.Pool,
    project: str,
    approval_ids: list[uuid.UUID],
    *,
    approve: bool,
    reason: str,
    actor: Actor,
    role: Role,
) -> list[Approval]:
    """Settle every one of `approval_ids` alike in one transaction, each audited as if
    decided alone — or none: one not found, decided, expired or refused by separation of
    duties refuses the lot, so an operator never wonders which half went through. Rows
    are locked in id order, so two overlapping batches cannot deadlock."""
    ordered = sorted(set(approval_ids))
    async with pool.acquire() as conn, conn.transaction():
        for approval_id in ordered:
            if await _decide_locked(conn, project, approval_id, approve, reason, actor, role):
                raise _expired(approval_id)
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM approvals WHERE project = $1 AND id = ANY($2::uuid[]) "
            "ORDER BY id DESC",
            project,
            ordered,
        )
    return [_approval(r) for r in rows]


async def _decide_locked(
    conn: asyncpg.Connection,
    project: str,
    approval_id: uuid.UUID,
    approve: bool,
    reason: str,
    actor: Actor,
    role: Role,
) -> bool:
    """Lock and settle one pending approval; whether it was found expired instead."""
    row = await conn.fetchrow(
        """SELECT a.status, a.expires_at < now() AS expired,
                  r.created_by_key, k.role AS creator_role,
                  (SELECT p.distinct_approver FROM policies p
                    WHERE p.project = a.project AND p.version = a.policy_version)
                      AS asked_under,
                  (SELECT p.distinct_approver FROM policies p
                    WHERE p.project = a.project ORDER BY p.version DESC LIMIT 1)
                      AS in_force
             FROM approvals a JOIN runs r ON r.id = a.run_id
             LEFT JOIN api_keys k ON k.id = r.created_by_key
            WHERE a.project = $1 AND a.id = $2 FOR UPDATE OF a""",
        project,
        approval_id,
    )
    if row is None:
        raise NotFound(f"no approval {approval_id}")
    if row["status"] != ApprovalStatus.PENDING:
        raise Conflict(
            f"approval {approval_id} is already {row['status']}",
            code=ErrorCode.APPROVAL_DECIDED,
            details={"status": row["status"], "approval_id": str(approval_id)},
        )
    if row["expired"]:
        await _settle(conn, approval_id, ApprovalStatus.EXPIRED, "the approval expired", _EXPIRY)
        return True
    if approve:
        _check_duties(row, actor, role)
    status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
    await _settle(conn, approval_id, status, reason, actor)
    return False


def _expired(approval_id: uuid.UUID) -> Conflict:
    return Conflict(
        f"approval {approval_id} expired before it was decided",
        code=ErrorCode.APPROVAL_DECIDED,
        details={"status": ApprovalStatus.EXPIRED.value, "approval_id": str(approval_id)},
    )


def _check_duties(row: asyncpg.Record, actor: Actor, role: Role) -> None:
    setting = strictest(
        *(DistinctApprover(s) if s else None for s in (row["asked_under"], row["in_force"]))
    )
    creator_role = Role(row["creator_role"]) if row["creator_role"] else None
    why = refusal(setting, Party(row["created_by_key"], creator_role), Party(actor.key_id, role))
    if why is not None:
        assert setting is not None
        raise Forbidden(
            f"separation of duties: {why}",
            code=ErrorCode.SEPARATION_OF_DUTIES,
            details={
                "distinct_approver": setting.value,
                "creator_role": creator_role.value if creator_role else None,
            },
        )


async def _settle(
    conn: asyncpg.Connection,
    approval_id: uuid.UUID,
    status: ApprovalStatus,
    reason: str,
    actor: Actor,
) -> None:
    decided_by = actor.name
    approval = await conn.fetchrow(
        """UPDATE approvals SET status = $2, reason = $3, decided_by = $4, decided_at = now()
            WHERE id = $1 RETURNING run_id, step_seq, project, tool""",
        approval_id,
        status.value,
        reason,
        decided_by,
    )
    assert approval is not None
    run_id, seq = approval["run_id"], approval["step_seq"]
    await record(
        conn,
        approval["project"],
        actor,
        f"approval.{status.value}",
        f"approval:{approval_id}",
        {"run": str(run_id), "seq": seq, "tool": approval["tool"], "reason": reason},
    )
    if status == ApprovalStatus.APPROVED:
        await conn.execute(
            f"""UPDATE steps SET status = 'approved',
                       decision = {_STEP_DECIDED} || jsonb_build_object('approved_by', $3::text)
                 WHERE run_id = $1 AND seq = $2""",
            run_id,
            seq,
            decided_by,
            reason,
            status.value,
        )
    else:
        verb = "expired" if status == ApprovalStatus.EXPIRED else f"rejected by {decided_by}"
        await conn.execute(
            f"""UPDATE steps SET status = 'rejected', output = to_jsonb($6::text),
                                 finished_at = now(), decision = {_STEP_DECIDED}
                 WHERE run_id = $1 AND seq = $2""",
            run_id,
            seq,
            decided_by,
            reason,
            status.value,
            f"the call was not made: approval {verb}: {reason}",
        )
    requeued = await conn.fetchval(
        """UPDATE runs SET status = 'queued', updated_at = now()
            WHERE id = $1 AND status = 'waiting_approval' RETURNING id""",
        run_id,
    )
    if requeued is not None:
        await enqueue(conn, run_id, JobReason.REQUEUED)


async def expire_due(pool: asyncpg.Pool, *, batch: int = 100) -> int:
    """Expire pending approvals past their deadline; safe to run on every gateway at once."""
    async with pool.acquire() as conn, conn.transaction():
        due = await conn.fetch(
            """SELECT id FROM approvals WHERE status = 'pending' AND expires_at < now()
                ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED""",
            batch,
        )
        for row in due:
            await _settle(conn, row["id"], ApprovalStatus.EXPIRED, "no decision in time", _EXPIRY)
    return len(due)


async def cancel_for_run(conn: asyncpg.Connection, run_id: uuid.UUID) -> None:
    """A cancelled run's pending approvals can no longer be decided, and the calls that
    waited for them are settled as not made (a step left `waiting_approval` with no end
    would say a human may still decide it)."""
    await conn.execute(
        """UPDATE approvals SET status = 'cancelled', reason = 'the run was cancelled',
                                decided_by = 'system', decided_at = now()
            WHERE run_id = $1 AND status = 'pending'""",
        run_id,
    )
    await conn.execute(
        """UPDATE steps SET status = 'rejected', finished_at = now(),
                            output = to_jsonb('the call was not made: the run was cancelled'::text),
                            decision = coalesce(decision, '{}') || jsonb_build_object(
                                'decided_by', 'system', 'reason', 'the run was cancelled',
                                'approval_status', 'cancelled')
            WHERE run_id = $1 AND status = 'waiting_approval'""",
        run_id,
    )
