"""What a worker must ask before a tool call: may it be made at all.

The check runs in the transaction that holds the run's row lock, and the policy decision
is stored on the step it decided in the same commit.

Before policy, the tool must be offered to the run's project by the worker holding the
lease, as that worker's own listing says (its key and label, `store.tools.offers`): a
tool of an MCP server limited to other projects, or one the worker never listed, is
refused whatever the project's policy allows, and so is an approved call the next
worker does not offer. The worker builds its offer from the same configuration, so this
refuses only what a faulty or outdated worker, or one whose listing has not arrived yet,
would otherwise make. (Model calls are not asked about:
the worker holding the lease checks their budget itself, `services/contract/budget.py`,
from the figures the claim and each step's ack give it.)
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from fnmatch import fnmatchcase

import asyncpg

from services.contract.budget import steps_or_time_breach
from services.contract.errors import ErrorCode
from services.contract.ids import uuid7
from services.contract.policy import Effect, PolicyDecision
from services.contract.runs import Budget, RunStatus, StepStatus
from services.contract.worker_api import ToolAuthorization, ToolVerdict
from services.gateway.audit import record
from services.gateway.errors import Conflict
from services.gateway.policy import ToolCall
from services.gateway.step_fence import Action, DecidedCall, Holder, canonical, fence_ask
from services.gateway.store.leases import end_run, lease_holder, lock_running, locked
from services.gateway.store.policies import compiled_policy
from services.gateway.store.tools import offers

DEFAULT_APPROVAL_TTL = timedelta(hours=24)


class BudgetExceeded(Conflict):
    code = ErrorCode.BUDGET_EXCEEDED


async def authorize_tool(
    pool: asyncpg.Pool, run_id: uuid.UUID, ask: ToolAuthorization, key_id: uuid.UUID
) -> ToolVerdict:
    """Decide a tool call by policy and record it as a step in the same transaction."""
    async with pool.acquire() as conn, conn.transaction():
        run = await lock_running(conn, run_id, Holder.of(ask, key_id))
        existing = await conn.fetchrow(
            """SELECT status, epoch, decision, tool, idempotent, input FROM steps
                WHERE run_id = $1 AND seq = $2""",
            run_id,
            ask.seq,
        )
        decided = None if existing is None else _decided(existing)
        verdict = fence_ask(locked(run), decided, ask, key_id)
        if verdict.action is Action.DECIDE:
            decision = await _decide(conn, run, run_id, ask)
            return await _record_decision(conn, run, run_id, ask, decision)
        if verdict.action is not Action.END_OVER_BUDGET:
            assert existing is not None
            decision = PolicyDecision.model_validate(existing["decision"])
            return await _resume(conn, run, run_id, ask, decision, verdict.action)
        assert verdict.breach is not None
        await end_run(conn, run_id, run, RunStatus.BUDGET_EXCEEDED, verdict.breach)
    raise BudgetExceeded(verdict.breach)


def _decided(row: asyncpg.Record) -> DecidedCall:
    return DecidedCall(
        tool=row["tool"],
        status=StepStatus(row["status"]),
        epoch=row["epoch"],
        idempotent=row["idempotent"],
        arguments=row["input"],
    )


async def _decide(
    conn: asyncpg.Connection,
    run: asyncpg.Record,
    run_id: uuid.UUID,
    ask: ToolAuthorization,
) -> PolicyDecision:
    policy = await compiled_policy(conn, run["project"])
    if not any(fnmatchcase(ask.tool, allowed) for allowed in run["tools"]):
        return PolicyDecision(
            effect=Effect.DENY,
            rule=None,
            policy_version=policy.version,
            explanation=f"agent {run['agent_name']} is not configured to use {ask.tool}",
        )
    not_offered = await _not_offered(conn, run, ask.tool, policy.version)
    if not_offered is not None:
        return not_offered
    if ask.invalid_arguments is not None:
        return _refused_arguments(ask, policy.version)
    prior = await conn.fetch(
        """SELECT tool, input FROM steps
            WHERE run_id = $1 AND kind = 'tool_call' AND status <> 'outcome_unknown'
            ORDER BY seq DESC""",
        run_id,
    )
    # Canonical JSON, not Python's `==` (for which `1`, `1.0` and `true` are one value);
    # the worker dropped the arguments the tool's schema does not declare.
    arguments = canonical(ask.arguments)
    in_a_row = 1
    for step in prior:
        if step["tool"] != ask.tool or canonical(step["input"]) != arguments:
            break
        in_a_row += 1
    call = ToolCall(
        agent=run["agent_name"],
        tool=ask.tool,
        arguments=ask.arguments,
        calls_in_run=1 + sum(1 for step in prior if step["tool"] == ask.tool),
        identical_in_a_row=in_a_row,
    )
    return policy.evaluate(call)


async def _not_offered(
    conn: asyncpg.Connection, run: asyncpg.Record, tool: str, policy_version: int
) -> PolicyDecision | None:
    """The refusal of a tool the lease holder does not offer to the run's project, if so.
    It names neither the projects the tool is offered to nor whether it exists."""
    if await offers(conn, run["lease_key"], run["lease_owner"], tool, run["project"]):
        return None
    return PolicyDecision(
        effect=Effect.DENY,
        rule=None,
        policy_version=policy_version,
        explanation=f"{tool} is not offered to project {run['project']} by the worker "
        f"running this run ({run['lease_owner']}); no policy can allow it",
    )


def _refused_arguments(ask: ToolAuthorization, policy_version: int) -> PolicyDecision:
    """A call whose arguments the tool's input schema refuses (the worker said why): it is
    never made, so neither policy nor a human is asked about it."""
    return PolicyDecision(
        effect=Effect.DENY,
        rule=None,
        policy_version=policy_version,
        explanation=f"the arguments do not match the input schema of {ask.tool}: "
        f"{ask.invalid_arguments}; the call was not made",
    )


async def _record_decision(
    conn: asyncpg.Connection,
    run: asyncpg.Record,
    run_id: uuid.UUID,
    ask: ToolAuthorization,
    decision: PolicyDecision,
) -> ToolVerdict:
    status = {
        Effect.ALLOW: StepStatus.STARTED,
        Effect.DENY: StepStatus.DENIED,
        Effect.REQUIRE_APPROVAL: StepStatus.WAITING_APPROVAL,
    }[decision.effect]
    output = f"denied by policy: {decision.explanation}" if status == StepStatus.DENIED else None
    await _insert_tool_step(conn, run, run_id, ask, status, decision, output)
    verb = {
        Effect.ALLOW: "allowed",
        Effect.DENY: "denied",
        Effect.REQUIRE_APPROVAL: "approval_requested",
    }[decision.effect]
    await record(
        conn,
        run["project"],
        lease_holder(run),
        f"tool.{verb}",
        f"run:{run_id}",
        {
            "seq": ask.seq,
            "tool": ask.tool,
            "rule": decision.rule,
            "policy_version": decision.policy_version,
        },
    )
    if decision.effect == Effect.ALLOW:
        return ToolVerdict(verdict="execute", seq=ask.seq, decision=decision)
    if decision.effect == Effect.DENY:
        return ToolVerdict(verdict="denied", seq=ask.seq, decision=decision)
    approval_id = await _park(conn, run, run_id, ask, decision)
    return ToolVerdict(verdict="parked", seq=ask.seq, decision=decision, approval_id=approval_id)


async def _insert_tool_step(
    conn: asyncpg.Connection,
    run: asyncpg.Record,
    run_id: uuid.UUID,
    ask: ToolAuthorization,
    status: StepStatus,
    decision: PolicyDecision,
    output: str | None,
) -> None:
    settled = status == StepStatus.DENIED
    await conn.execute(
        """INSERT INTO steps (run_id, seq, kind, status, tool, tool_call_id, input, output,
                              idempotent, decision, epoch, worker, started_at, finished_at)
           VALUES ($1, $2, 'tool_call', $3, $4, $5, $6, $7, $8, $9, $10, $12, now(),
                   CASE WHEN $11 THEN now() END)""",
        run_id,
        ask.seq,
        status.value,
        ask.tool,
        ask.tool_call_id,
        ask.arguments,
        output,
        ask.idempotent,
        decision.model_dump(mode="json"),
        ask.epoch,
        settled,
        run["lease_owner"],
    )
    await conn.execute(
        "UPDATE runs SET steps_count = greatest(steps_count, $2), updated_at = now() WHERE id = $1",
        run_id,
        ask.seq,
    )


async def _park(
    conn: asyncpg.Connection,
    run: asyncpg.Record,
    run_id: uuid.UUID,
    ask: ToolAuthorization,
    decision: PolicyDecision,
) -> uuid.UUID:
    """Create the approval and set the run aside: no worker waits for a human."""
    policy = await compiled_policy(conn, run["project"])
    ttl = policy.approval_ttl(decision.rule) or DEFAULT_APPROVAL_TTL
    approval_id = uuid7()
    await conn.execute(
        """INSERT INTO approvals (id, run_id, step_seq, agent_name, tool, arguments, rule,
                                  policy_version, explanation, status, expires_at, project)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', now() + $10, $11)""",
        approval_id,
        run_id,
        ask.seq,
        run["agent_name"],
        ask.tool,
        ask.arguments,
        decision.rule,
        decision.policy_version,
        decision.explanation,
        ttl,
        run["project"],
    )
    await conn.execute(
        """UPDATE runs SET status = 'waiting_approval', lease_owner = NULL,
                           lease_expires_at = NULL, updated_at = now()
            WHERE id = $1""",
        run_id,
    )
    return approval_id


async def _resume(
    conn: asyncpg.Connection,
    run: asyncpg.Record,
    run_id: uuid.UUID,
    ask: ToolAuthorization,
    decision: PolicyDecision,
    action: Action,
) -> ToolVerdict:
    """The step was decided before: replay a lost answer, run an approved call, or deal
    with a call whose worker died before reporting how it ended."""
    if action is Action.EXECUTE:
        not_offered = await _not_offered(conn, run, ask.tool, decision.policy_version)
        if not_offered is not None:
            return await _settle_not_offered(conn, run, run_id, ask, not_offered)
        await conn.execute(
            "UPDATE steps SET status = 'started', epoch = $3, worker = $4, started_at = now() "
            "WHERE run_id = $1 AND seq = $2",
            run_id,
            ask.seq,
            ask.epoch,
            run["lease_owner"],
        )
        return ToolVerdict(verdict="execute", seq=ask.seq, decision=decision)
    if action is Action.DENY_AGAIN:
        return ToolVerdict(verdict="denied", seq=ask.seq, decision=decision)
    assert action is Action.OUTCOME_UNKNOWN, action
    return await _retry_unknown_outcome(conn, run, run_id, ask, decision)


async def _settle_not_offered(
    conn: asyncpg.Connection,
    run: asyncpg.Record,
    run_id: uuid.UUID,
    ask: ToolAuthorization,
    refusal: PolicyDecision,
) -> ToolVerdict:
    """A call decided before (approved by a human, or started idempotent) that the worker
    now holding the lease does not offer: settled as denied, so no later claim makes it
    either. The step keeps the decision it was made with; its output says why."""
    await conn.execute(
        """UPDATE steps SET status = 'denied', output = $3, finished_at = now()
            WHERE run_id = $1 AND seq = $2""",
        run_id,
        ask.seq,
        f"denied by policy: {refusal.explanation}",
    )
    await record(
        conn,
        run["project"],
        lease_holder(run),
        "tool.denied",
        f"run:{run_id}",
        {"seq": ask.seq, "tool": ask.tool, "rule": None, "policy_version": refusal.policy_version},
    )
    return ToolVerdict(verdict="denied", seq=ask.seq, decision=refusal)


async def _retry_unknown_outcome(
    conn: asyncpg.Connection,
    run: asyncpg.Record,
    run_id: uuid.UUID,
    ask: ToolAuthorization,
    original: PolicyDecision,
) -> ToolVerdict:
    """A non-idempotent call started under an earlier lease and never reported back: it
    may or may not have happened. Never repeat it blindly — mark it, and ask a human to
    allow a retry (unless policy now denies the tool outright)."""
    await conn.execute(
        """UPDATE steps SET status = 'outcome_unknown', finished_at = now(), error = $3
            WHERE run_id = $1 AND seq = $2""",
        run_id,
        ask.seq,
        "the worker stopped during this call; it may or may not have taken effect",
    )
    await record(
        conn,
        run["project"],
        lease_holder(run),
        "tool.outcome_unknown",
        f"run:{run_id}",
        {"seq": ask.seq, "tool": ask.tool},
    )
    retry_seq = run["steps_count"] + 1
    budget = Budget.model_validate(run["budget"])
    breach = steps_or_time_breach(budget, retry_seq - run["notes"], run["elapsed"])
    if breach is not None:
        await end_run(conn, run_id, run, RunStatus.BUDGET_EXCEEDED, breach)
        return ToolVerdict(verdict="denied", seq=ask.seq, decision=original)
    policy = await compiled_policy(conn, run["project"])
    not_offered = await _not_offered(conn, run, ask.tool, policy.version)
    if original.effect == Effect.DENY:
        decision = original
    elif not_offered is not None:
        decision = not_offered
    elif ask.invalid_arguments is not None:
        decision = _refused_arguments(ask, policy.version)
    else:
        decision = PolicyDecision(
            effect=Effect.REQUIRE_APPROVAL,
            rule=original.rule,
            policy_version=policy.version,
            explanation=f"step {ask.seq} ({ask.tool}) may or may not have run before its "
            "worker stopped; retrying it needs a human's approval",
        )
    retry = ask.model_copy(update={"seq": retry_seq})
    return await _record_decision(conn, run, run_id, retry, decision)
