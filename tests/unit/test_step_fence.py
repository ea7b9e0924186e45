"""Every rule of the step fence, with no database: what a worker's step report or tool
authorisation does to a run, from what the run's locked row says."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.contract.errors import ErrorCode
from services.contract.runs import Budget, RunStatus, StepKind, StepStatus
from services.contract.worker_api import StepReport, ToolAuthorization
from services.gateway.errors import Conflict
from services.gateway.lease_tokens import digest, mint
from services.gateway.step_fence import (
    Action,
    DecidedCall,
    Holder,
    LockedRun,
    Verdict,
    check_lease,
    fence_ask,
    fence_report,
)

KEY = uuid.UUID(int=7)
OTHER_KEY = uuid.UUID(int=8)
TOKEN, _ = mint()


def _run(**fields: Any) -> LockedRun:
    values: dict[str, Any] = {
        "epoch": 2,
        "status": RunStatus.RUNNING,
        "steps_count": 3,
        "budget": Budget(max_steps=10),
        "elapsed_seconds": 1.0,
        "lease_key": KEY,
        "lease_token_digest": digest(TOKEN),
    }
    return LockedRun(**(values | fields))


def _report(**fields: Any) -> StepReport:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "epoch": 2,
        "lease_token": TOKEN,
        "seq": 4,
        "kind": StepKind.LLM_CALL,
        "status": StepStatus.COMPLETED,
        "started_at": now,
        "finished_at": now,
    }
    return StepReport(**(values | fields))


def _ask(**fields: Any) -> ToolAuthorization:
    values: dict[str, Any] = {
        "epoch": 2,
        "lease_token": TOKEN,
        "seq": 4,
        "tool": "notes.add",
        "tool_call_id": "c4",
        "arguments": {"a": 1},
    }
    return ToolAuthorization(**(values | fields))


def _refused_with(code: ErrorCode, call: Any, *args: Any) -> Conflict:
    with pytest.raises(Conflict) as raised:
        call(*args)
    assert raised.value.code is code, raised.value.message
    return raised.value


# Step reports


def test_the_next_step_under_the_current_lease_is_recorded() -> None:
    assert fence_report(_run(), None, _report(), KEY) == Verdict(Action.RECORD)


def test_a_stale_epoch_is_refused_and_told_the_current_one() -> None:
    refused = _refused_with(
        ErrorCode.STALE_EPOCH, fence_report, _run(epoch=3), None, _report(), KEY
    )
    assert refused.details == {"status": RunStatus.RUNNING}


@pytest.mark.parametrize("status", [RunStatus.CANCELLED, RunStatus.QUEUED, RunStatus.FAILED])
def test_a_run_no_longer_running_refuses_its_lease_holder(status: RunStatus) -> None:
    _refused_with(
        ErrorCode.RUN_NOT_RUNNING, fence_report, _run(status=status), None, _report(), KEY
    )


def test_the_final_step_replayed_after_it_completed_the_run_is_acknowledged() -> None:
    completed = _run(status=RunStatus.COMPLETED, steps_count=4)
    final = _report(final_output="the answer")
    assert fence_report(completed, StepStatus.COMPLETED, final, KEY) == Verdict(Action.REPLAY)


def test_a_final_step_of_a_run_completed_under_another_epoch_is_refused() -> None:
    completed = _run(status=RunStatus.COMPLETED, epoch=3)
    final = _report(final_output="the answer")
    _refused_with(ErrorCode.STALE_EPOCH, fence_report, completed, StepStatus.COMPLETED, final, KEY)


def test_a_finished_step_reported_again_is_acknowledged_not_recorded_twice() -> None:
    for recorded in (StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.DENIED):
        assert fence_report(_run(), recorded, _report(seq=2), KEY) == Verdict(Action.REPLAY)


def test_a_started_step_is_finished_by_its_report() -> None:
    assert fence_report(_run(), StepStatus.STARTED, _report(seq=3), KEY) == Verdict(Action.RECORD)


def test_a_tool_call_that_was_never_authorized_is_refused() -> None:
    report = _report(kind=StepKind.TOOL_CALL, tool="notes.add")
    _refused_with(ErrorCode.TOOL_CALL_NOT_AUTHORIZED, fence_report, _run(), None, report, KEY)


@pytest.mark.parametrize("seq", [3, 5, 40])
def test_a_new_step_out_of_order_is_refused(seq: int) -> None:
    _refused_with(ErrorCode.STEP_OUT_OF_ORDER, fence_report, _run(), None, _report(seq=seq), KEY)


def test_a_step_past_the_step_budget_ends_the_run() -> None:
    run = _run(steps_count=10, budget=Budget(max_steps=10))
    assert fence_report(run, None, _report(seq=11), KEY) == Verdict(
        Action.END_OVER_BUDGET, "step budget exceeded: max_steps is 10"
    )


# Tool authorisations


def test_a_new_call_in_order_within_budget_goes_to_policy() -> None:
    assert fence_ask(_run(), None, _ask(), KEY) == Verdict(Action.DECIDE)


def test_a_call_under_a_stale_lease_is_refused_before_anything_else() -> None:
    decided = DecidedCall(
        "notes.add", StepStatus.APPROVED, epoch=1, idempotent=False, arguments={"a": 1}
    )
    _refused_with(ErrorCode.STALE_EPOCH, fence_ask, _run(epoch=3), decided, _ask(), KEY)


def test_a_new_call_out_of_order_is_refused() -> None:
    _refused_with(ErrorCode.STEP_OUT_OF_ORDER, fence_ask, _run(), None, _ask(seq=6), KEY)


def test_a_new_call_past_the_step_or_time_budget_ends_the_run() -> None:
    over_steps = fence_ask(_run(steps_count=10), None, _ask(seq=11), KEY)
    assert over_steps.action is Action.END_OVER_BUDGET
    assert over_steps.breach is not None
    assert "max_steps" in over_steps.breach
    late = _run(budget=Budget(max_steps=10, max_seconds=5), elapsed_seconds=6.0)
    over_time = fence_ask(late, None, _ask(), KEY)
    assert over_time.action is Action.END_OVER_BUDGET
    assert over_time.breach is not None
    assert "max_seconds" in over_time.breach


def test_a_step_decided_for_another_tool_is_refused() -> None:
    decided = DecidedCall(
        "notes.delete", StepStatus.APPROVED, epoch=2, idempotent=False, arguments={"a": 1}
    )
    _refused_with(ErrorCode.STEP_MISMATCH, fence_ask, _run(), decided, _ask(), KEY)


@pytest.mark.parametrize(
    "decided",
    [
        DecidedCall(
            "notes.add", StepStatus.APPROVED, epoch=1, idempotent=False, arguments={"a": 1}
        ),
        DecidedCall("notes.add", StepStatus.STARTED, epoch=2, idempotent=False, arguments={"a": 1}),
        DecidedCall("notes.add", StepStatus.STARTED, epoch=1, idempotent=True, arguments={"a": 1}),
    ],
    ids=["approved by a human", "started under this lease", "idempotent, earlier lease"],
)
def test_a_call_that_may_run_again_is_executed(decided: DecidedCall) -> None:
    assert fence_ask(_run(), decided, _ask(seq=3), KEY) == Verdict(Action.EXECUTE)


@pytest.mark.parametrize(
    "arguments",
    [{"a": 2}, {"a": 1, "b": 0}, {"a": True}, {"a": 1.0}, {"a": "1"}, {}],
)
def test_an_approved_call_runs_only_with_the_arguments_approved(arguments: Any) -> None:
    decided = DecidedCall(
        "notes.add", StepStatus.APPROVED, epoch=1, idempotent=False, arguments={"a": 1}
    )
    _refused_with(
        ErrorCode.ARGUMENTS_CHANGED,
        fence_ask,
        _run(),
        decided,
        _ask(seq=3, arguments=arguments),
        KEY,
    )


@pytest.mark.parametrize(
    "decided",
    [
        DecidedCall(
            "notes.add", StepStatus.APPROVED, epoch=1, idempotent=False, arguments={"a": 1}
        ),
        DecidedCall("notes.add", StepStatus.STARTED, epoch=1, idempotent=True, arguments={"a": 1}),
    ],
    ids=["approved by a human", "idempotent, earlier lease"],
)
def test_a_decided_call_whose_arguments_the_schema_now_refuses_is_not_made(
    decided: DecidedCall,
) -> None:
    """The tool's schema changed under a decided call: the same text no longer fits it."""
    refused = _ask(seq=3, invalid_arguments="$.a: expected string, got integer")
    _refused_with(ErrorCode.ARGUMENTS_CHANGED, fence_ask, _run(), decided, refused, KEY)


def test_the_same_arguments_in_another_key_order_are_the_same_call() -> None:
    approved = {"b": [1, {"y": 2, "x": 1}], "a": "é"}
    decided = DecidedCall(
        "notes.add", StepStatus.APPROVED, epoch=1, idempotent=False, arguments=approved
    )
    same = {"a": "é", "b": [1, {"x": 1, "y": 2}]}
    assert fence_ask(_run(), decided, _ask(seq=3, arguments=same), KEY) == Verdict(Action.EXECUTE)


def test_a_denied_call_asked_again_is_denied_again() -> None:
    decided = DecidedCall(
        "notes.add", StepStatus.DENIED, epoch=1, idempotent=False, arguments={"a": 1}
    )
    assert fence_ask(_run(), decided, _ask(seq=3), KEY) == Verdict(Action.DENY_AGAIN)


def test_a_one_shot_call_an_earlier_lease_started_has_an_unknown_outcome() -> None:
    decided = DecidedCall(
        "notes.add", StepStatus.STARTED, epoch=1, idempotent=False, arguments={"a": 1}
    )
    assert fence_ask(_run(), decided, _ask(seq=3), KEY) == Verdict(Action.OUTCOME_UNKNOWN)


@pytest.mark.parametrize(
    "status", [StepStatus.COMPLETED, StepStatus.WAITING_APPROVAL, StepStatus.OUTCOME_UNKNOWN]
)
def test_a_settled_or_parked_call_is_not_made(status: StepStatus) -> None:
    decided = DecidedCall("notes.add", status, epoch=2, idempotent=True, arguments={"a": 1})
    _refused_with(ErrorCode.STEP_SETTLED, fence_ask, _run(), decided, _ask(seq=3), KEY)


def test_the_lease_check_alone() -> None:
    check_lease(_run(), Holder(2, TOKEN, KEY))
    _refused_with(ErrorCode.STALE_EPOCH, check_lease, _run(), Holder(1, TOKEN, KEY))
    _refused_with(
        ErrorCode.RUN_NOT_RUNNING,
        check_lease,
        _run(status=RunStatus.CANCELLED),
        Holder(2, TOKEN, KEY),
    )


def test_another_worker_key_holds_no_lease_even_with_the_right_epoch() -> None:
    refused = _refused_with(ErrorCode.LEASE_HELD, check_lease, _run(), Holder(2, TOKEN, OTHER_KEY))
    assert "2" not in refused.message
    _refused_with(ErrorCode.LEASE_HELD, fence_report, _run(), None, _report(), OTHER_KEY)
    _refused_with(ErrorCode.LEASE_HELD, fence_ask, _run(), None, _ask(), OTHER_KEY)
    completed = _run(status=RunStatus.COMPLETED, steps_count=4)
    final = _report(final_output="a forged answer")
    _refused_with(
        ErrorCode.RUN_NOT_RUNNING, fence_report, completed, StepStatus.COMPLETED, final, OTHER_KEY
    )


def test_a_lease_claimed_by_no_key_is_held_by_none() -> None:
    _refused_with(ErrorCode.LEASE_HELD, check_lease, _run(lease_key=None), Holder(2, TOKEN, KEY))


def test_the_right_key_and_epoch_without_the_claim_s_token_hold_no_lease() -> None:
    """Workers of a fleet share a key: the token is what tells the claiming one apart."""
    guessed, _ = mint()
    refused = _refused_with(ErrorCode.LEASE_HELD, check_lease, _run(), Holder(2, guessed, KEY))
    assert TOKEN not in refused.message
    assert "2" not in refused.message
    other = _report(lease_token=guessed)
    _refused_with(ErrorCode.LEASE_HELD, fence_report, _run(), None, other, KEY)
    _refused_with(ErrorCode.LEASE_HELD, fence_ask, _run(), None, _ask(lease_token=guessed), KEY)
    completed = _run(status=RunStatus.COMPLETED, steps_count=4)
    replayed = _report(final_output="an answer", lease_token=guessed)
    _refused_with(
        ErrorCode.RUN_NOT_RUNNING, fence_report, completed, StepStatus.COMPLETED, replayed, KEY
    )


def test_a_lease_claimed_before_tokens_existed_is_held_by_none() -> None:
    legacy = _run(lease_token_digest=None)
    _refused_with(ErrorCode.LEASE_HELD, check_lease, legacy, Holder(2, TOKEN, KEY))


def test_a_refusal_never_tells_the_live_epoch() -> None:
    refused = _refused_with(
        ErrorCode.STALE_EPOCH, check_lease, _run(epoch=41), Holder(2, TOKEN, KEY)
    )
    assert "41" not in refused.message
    assert refused.details == {"status": RunStatus.RUNNING}
