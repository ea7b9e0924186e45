"""The fence every step report and tool-call authorisation passes, as pure decisions.

What a worker may do to a run is decided from the run's row, read under its lock:
whether the lease it presents is the run's current one — the epoch, the token the claim
returned, and the worker key that claimed it (a second worker key, or a second process
sharing the key, holds no lease it did not claim, whatever epoch it presents) — whether
the step it names was already recorded (a replay after a lost answer is acknowledged as
it stands, never recorded twice), whether steps come in order, whether a tool call was
authorised before it is reported, and whether the run's budget allows another step. The
store reads the facts and carries out the verdict; the rules themselves live here, with
no database, so each is tested on its own (`tests/unit/test_step_fence.py`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from services.contract.budget import steps_or_time_breach
from services.contract.errors import ErrorCode
from services.contract.runs import Budget, RunStatus, StepKind, StepStatus
from services.contract.worker_api import LeaseBody, StepReport, ToolAuthorization
from services.gateway.errors import Conflict
from services.gateway.lease_tokens import matches


@dataclass(frozen=True)
class LockedRun:
    """What the run's locked row says, as the fence needs it."""

    epoch: int
    status: RunStatus
    steps_count: int
    budget: Budget
    elapsed_seconds: float
    lease_key: uuid.UUID | None  # the worker key that claimed it (None: claimed by none)
    lease_token_digest: bytes | None  # of the token the claim returned
    notes: int = 0  # the run's note steps, which its step budget does not count


@dataclass(frozen=True)
class Holder:
    """Who a callback says holds the lease: the epoch and token it presents, and the
    worker key it was sent with."""

    epoch: int
    token: str
    key_id: uuid.UUID

    @classmethod
    def of(cls, body: LeaseBody, key_id: uuid.UUID) -> Holder:
        return cls(body.epoch, body.lease_token, key_id)


@dataclass(frozen=True)
class DecidedCall:
    """A tool-call step that was authorised (or refused) before."""

    tool: str
    status: StepStatus
    epoch: int
    idempotent: bool
    arguments: Any  # as decided: what a human approved, or what policy allowed


class Action(StrEnum):
    RECORD = "record"  # write the reported step
    REPLAY = "replay"  # already finished: acknowledge it as it stands
    DECIDE = "decide"  # a new tool call: policy decides
    EXECUTE = "execute"  # approved, or started under this lease or idempotent: make it
    DENY_AGAIN = "deny_again"  # denied before: the same answer
    OUTCOME_UNKNOWN = "outcome_unknown"  # a one-shot call an earlier lease started
    END_OVER_BUDGET = "end_over_budget"  # the run ends `budget_exceeded` with `breach`


@dataclass(frozen=True)
class Verdict:
    action: Action
    breach: str | None = None


def refusal(status: str, current_epoch: int, epoch: int) -> Conflict:
    """Why a callback under `epoch` is refused by a run at `current_epoch` in `status`
    (running at that epoch: then by another key or another claim). The live epoch is
    never told: it would be the one thing a caller without the lease lacks."""
    if current_epoch != epoch:
        return Conflict(
            f"lease epoch {epoch} is stale", code=ErrorCode.STALE_EPOCH, details={"status": status}
        )
    if status != RunStatus.RUNNING:
        return Conflict(
            f"run is {status}, not running",
            code=ErrorCode.RUN_NOT_RUNNING,
            details={"status": status},
        )
    return Conflict(
        "the run's lease is held by another claim",
        code=ErrorCode.LEASE_HELD,
        details={"status": status},
    )


def holds(run: LockedRun, holder: Holder) -> bool:
    return (
        run.epoch == holder.epoch
        and run.lease_key == holder.key_id
        and matches(run.lease_token_digest, holder.token)
    )


def check_lease(run: LockedRun, holder: Holder) -> None:
    """Refuse unless the run is running under the lease `holder` presents."""
    if run.status != RunStatus.RUNNING or not holds(run, holder):
        raise refusal(run.status, run.epoch, holder.epoch)


def _next_in_order(run: LockedRun, seq: int) -> None:
    if seq != run.steps_count + 1:
        raise Conflict(
            f"step {seq} out of order: the run has {run.steps_count} steps",
            code=ErrorCode.STEP_OUT_OF_ORDER,
        )


def canonical(arguments: Any) -> str:
    """One spelling of a JSON value: key order and spacing never matter, types do
    (`1`, `1.0`, `true` and `"1"` stay apart, unlike Python's `==`)."""
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fence_report(
    run: LockedRun, recorded: StepStatus | None, report: StepReport, key_id: uuid.UUID
) -> Verdict:
    """A step report from `key_id`, given the status of the step it names if recorded."""
    holder = Holder.of(report, key_id)
    if run.status != RunStatus.RUNNING or not holds(run, holder):
        if (
            report.final_output is not None
            and holds(run, holder)
            and run.status == RunStatus.COMPLETED
            and recorded == StepStatus.COMPLETED
        ):
            # This very lease recorded the step and completed the run with it: the
            # answer to the first report was lost.
            return Verdict(Action.REPLAY)
        raise refusal(run.status, run.epoch, report.epoch)
    if report.kind == StepKind.TOOL_CALL and recorded is None:
        raise Conflict(
            f"tool call step {report.seq} was never authorized",
            code=ErrorCode.TOOL_CALL_NOT_AUTHORIZED,
        )
    if recorded is not None and recorded != StepStatus.STARTED:
        return Verdict(Action.REPLAY)
    if recorded is None:
        _next_in_order(run, report.seq)
    if report.kind != StepKind.NOTE and report.seq - run.notes > run.budget.max_steps:
        return Verdict(
            Action.END_OVER_BUDGET, f"step budget exceeded: max_steps is {run.budget.max_steps}"
        )
    return Verdict(Action.RECORD)


def fence_ask(
    run: LockedRun, decided: DecidedCall | None, ask: ToolAuthorization, key_id: uuid.UUID
) -> Verdict:
    """A tool call `key_id` asks to make, given the step it names if decided before."""
    check_lease(run, Holder.of(ask, key_id))
    if decided is None:
        _next_in_order(run, ask.seq)
        breach = steps_or_time_breach(run.budget, ask.seq - run.notes, run.elapsed_seconds)
        return Verdict(Action.DECIDE if breach is None else Action.END_OVER_BUDGET, breach)
    if decided.tool != ask.tool:
        raise Conflict(f"step {ask.seq} is a call of {decided.tool}", code=ErrorCode.STEP_MISMATCH)
    if decided.status == StepStatus.APPROVED or (
        decided.status == StepStatus.STARTED and (decided.epoch == ask.epoch or decided.idempotent)
    ):
        if ask.invalid_arguments is not None:
            raise Conflict(
                f"step {ask.seq} was decided with arguments the tool's schema now refuses",
                code=ErrorCode.ARGUMENTS_CHANGED,
            )
        if canonical(decided.arguments) != canonical(ask.arguments):
            raise Conflict(
                f"step {ask.seq} was decided with other arguments; a call with these is a new step",
                code=ErrorCode.ARGUMENTS_CHANGED,
            )
        return Verdict(Action.EXECUTE)
    if decided.status == StepStatus.DENIED:
        return Verdict(Action.DENY_AGAIN)
    if decided.status == StepStatus.STARTED:
        return Verdict(Action.OUTCOME_UNKNOWN)
    raise Conflict(f"step {ask.seq} is already {decided.status.value}", code=ErrorCode.STEP_SETTLED)
