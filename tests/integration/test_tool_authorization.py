"""Every tool call is decided by policy before it is made, and recorded as a step."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from testbed.waiting import eventually
from tests.support.harness import ToolHarness, tool_spec

ALLOW_TIME = {"id": "time", "tool": "time.*", "effect": "allow"}
APPROVE_NOTES = {"id": "notes", "tool": "notes.write_note", "effect": "require_approval"}


async def test_an_allowed_call_is_recorded_with_its_decision_then_its_result(
    harness: ToolHarness,
) -> None:
    version = await harness.policy(ALLOW_TIME)
    run_id, epoch = await harness.running(tools=["time.*"])
    status, verdict = await harness.authorize(run_id, epoch, 1, "time.now", {"tz": "UTC"})
    assert status == 200
    assert verdict["verdict"] == "execute"
    assert verdict["decision"]["rule"] == "time"
    assert verdict["decision"]["policy_version"] == version
    (started,) = await harness.steps(run_id)
    assert (started["status"], started["tool"], started["input"]) == (
        "started",
        "time.now",
        {"tz": "UTC"},
    )
    status, _ = await harness.step(
        run_id, epoch, 1, kind="tool_call", tool="time.now", output="12:00", usage=None
    )
    assert status == 200
    (done,) = await harness.steps(run_id)
    assert (done["status"], done["output"]) == ("completed", "12:00")
    assert done["decision"]["effect"] == "allow"


async def test_a_call_no_rule_covers_is_denied_and_never_executable(harness: ToolHarness) -> None:
    await harness.policy(ALLOW_TIME)
    run_id, epoch = await harness.running(tools=["*"])
    status, verdict = await harness.authorize(run_id, epoch, 1, "shell.exec", {"cmd": "rm -rf /"})
    assert (status, verdict["verdict"], verdict["decision"]["rule"]) == (200, "denied", None)
    (step,) = await harness.steps(run_id)
    assert step["status"] == "denied"
    assert "denied by policy" in step["output"]
    status, ack = await harness.step(
        run_id, epoch, 1, kind="tool_call", tool="shell.exec", output="done"
    )
    assert (status, ack["replayed"], ack["status"]) == (200, True, "denied")


async def test_a_tool_outside_the_agents_list_is_denied_even_if_policy_allows(
    harness: ToolHarness,
) -> None:
    await harness.policy(ALLOW_TIME)
    run_id, epoch = await harness.running(tools=["notes.*"])
    _, verdict = await harness.authorize(run_id, epoch, 1, "time.now")
    assert verdict["verdict"] == "denied"
    assert "not configured to use time.now" in verdict["decision"]["explanation"]


async def test_reporting_an_unauthorized_tool_call_is_refused(harness: ToolHarness) -> None:
    run_id, epoch = await harness.running()
    status, body = await harness.step(run_id, epoch, 1, kind="tool_call", tool="time.now")
    assert (status, body["error"]["code"]) == (409, "tool_call_not_authorized")


async def test_loop_guard_denies_the_third_identical_call_in_a_row(harness: ToolHarness) -> None:
    await harness.policy(
        ALLOW_TIME,
        {"id": "loop", "tool": "*", "effect": "deny", "when": {"identical_in_a_row": {"gte": 3}}},
    )
    run_id, epoch = await harness.running(tools=["time.*"])
    verdicts = []
    for seq in (1, 2, 3):
        _, verdict = await harness.authorize(run_id, epoch, seq, "time.now", {"tz": "UTC"})
        verdicts.append(verdict["verdict"])
        if verdict["verdict"] == "execute":
            await harness.step(run_id, epoch, seq, kind="tool_call", tool="time.now", output="t")
    assert verdicts == ["execute", "execute", "denied"]
    _, other = await harness.authorize(run_id, epoch, 4, "time.now", {"tz": "CET"})
    assert other["verdict"] == "execute"


async def test_the_loop_guard_tells_true_and_1_apart(harness: ToolHarness) -> None:
    """Compared as canonical JSON: to Python's `==` the two are one value."""
    await harness.policy(
        ALLOW_TIME,
        {"id": "loop", "tool": "*", "effect": "deny", "when": {"identical_in_a_row": {"gte": 2}}},
    )
    run_id, epoch = await harness.running(tools=["time.*"])
    _, first = await harness.authorize(run_id, epoch, 1, "time.now", {"utc": 1})
    await harness.step(run_id, epoch, 1, kind="tool_call", tool="time.now", output="t")
    _, second = await harness.authorize(run_id, epoch, 2, "time.now", {"utc": True})
    assert (first["verdict"], second["verdict"]) == ("execute", "execute")


async def test_arguments_the_tools_schema_refuses_are_settled_without_policy_or_a_human(
    harness: ToolHarness,
) -> None:
    await harness.policy(ALLOW_TIME, APPROVE_NOTES)
    run_id, epoch = await harness.running(tools=["notes.*"])
    await harness.list_tools("w1", tool_spec("notes.write_note"))
    ask = {
        "epoch": epoch,
        "seq": 1,
        "tool": "notes.write_note",
        "tool_call_id": "call-1",
        "arguments": {"text": 5},
        "invalid_arguments": "$.text: expected string, got integer",
    }
    status, verdict = await harness.call(run_id, "tools/authorize", ask)
    assert (status, verdict["verdict"], verdict["decision"]["rule"]) == (200, "denied", None)
    explanation = verdict["decision"]["explanation"]
    assert explanation == (
        "the arguments do not match the input schema of notes.write_note: "
        "$.text: expected string, got integer; the call was not made"
    )
    assert await harness.approvals(run_id=run_id) == []
    assert (await harness.get(run_id))["status"] == "running"
    (step,) = await harness.steps(run_id)
    assert (step["status"], step["input"], step["output"]) == (
        "denied",
        {"text": 5},
        f"denied by policy: {explanation}",
    )
    status, again = await harness.call(run_id, "tools/authorize", ask)
    assert (status, again["verdict"], again["decision"]) == (200, "denied", verdict["decision"])


async def _parked(harness: ToolHarness, **rule: object) -> tuple[str, int, dict[str, Any]]:
    await harness.policy(ALLOW_TIME, {**APPROVE_NOTES, **rule})
    run_id, epoch = await harness.running(tools=["notes.*", "time.*"])
    _, verdict = await harness.authorize(run_id, epoch, 1, "notes.write_note", {"text": "hello"})
    assert verdict["verdict"] == "parked"
    (approval,) = await harness.approvals(run_id=run_id)
    assert approval["id"] == verdict["approval_id"]
    return run_id, epoch, approval


async def test_require_approval_parks_the_run_and_frees_the_worker(harness: ToolHarness) -> None:
    run_id, epoch, approval = await _parked(harness)
    assert (await harness.get(run_id))["status"] == "waiting_approval"
    assert approval["status"] == "pending"
    assert (approval["tool"], approval["arguments"], approval["rule"]) == (
        "notes.write_note",
        {"text": "hello"},
        "notes",
    )
    assert approval["agent"].startswith("agent-")
    pending = await harness.approvals(status="pending", limit="200")
    assert approval["id"] in [a["id"] for a in pending]
    status, body = await harness.call(run_id, "heartbeat", {"epoch": epoch})
    assert (status, body["error"]["code"]) == (409, "run_not_running")


async def test_an_approved_call_is_executed_by_the_next_claim(harness: ToolHarness) -> None:
    run_id, _, approval = await _parked(harness)
    status, decided = await harness.decide(approval["id"], "approve", "looks fine")
    assert (status, decided["status"], decided["reason"]) == (200, "approved", "looks fine")
    assert decided["decided_by"] == "test-admin"
    assert (await harness.get(run_id))["status"] == "queued"
    status, grant = await harness.claim(run_id)
    assert grant["steps"][0]["status"] == "approved"
    _, verdict = await harness.authorize(
        run_id, grant["epoch"], 1, "notes.write_note", {"text": "hello"}
    )
    assert (verdict["verdict"], verdict["seq"]) == ("execute", 1)
    await harness.step(
        run_id, grant["epoch"], 1, kind="tool_call", tool="notes.write_note", output="ok"
    )
    (step,) = await harness.steps(run_id)
    assert (step["status"], step["decision"]["approved_by"]) == ("completed", "test-admin")
    decided = {k: step["decision"][k] for k in ("approval_status", "decided_by", "reason")}
    assert decided == {
        "approval_status": "approved",
        "decided_by": "test-admin",
        "reason": "looks fine",
    }


async def test_an_approved_call_runs_only_with_the_arguments_the_human_saw(
    harness: ToolHarness,
) -> None:
    run_id, _, approval = await _parked(harness)
    await harness.decide(approval["id"], "approve")
    _, grant = await harness.claim(run_id)
    for changed in ({"text": "rm -rf /"}, {"text": "hello", "also": "exfiltrate"}):
        status, body = await harness.authorize(
            run_id, grant["epoch"], 1, "notes.write_note", changed
        )
        assert (status, body["error"]["code"]) == (409, "arguments_changed"), body
    (step,) = await harness.steps(run_id)
    assert (step["status"], step["input"]) == ("approved", {"text": "hello"})


async def test_a_rejected_call_is_settled_with_the_reason_and_the_run_requeued(
    harness: ToolHarness,
) -> None:
    run_id, _, approval = await _parked(harness)
    status, decided = await harness.decide(approval["id"], "reject", "not today")
    assert (status, decided["status"]) == (200, "rejected")
    (step,) = await harness.steps(run_id)
    assert step["status"] == "rejected"
    assert "not today" in step["output"]
    assert (step["decision"]["decided_by"], step["decision"]["reason"]) == (
        "test-admin",
        "not today",
    )
    assert (await harness.get(run_id))["status"] == "queued"


async def test_deciding_twice_is_a_conflict(harness: ToolHarness) -> None:
    _, _, approval = await _parked(harness)
    await harness.decide(approval["id"], "approve")
    status, body = await harness.decide(approval["id"], "reject")
    assert (status, body["error"]["code"]) == (409, "approval_decided")
    assert body["error"]["details"]["status"] == "approved"


async def test_cancelling_a_parked_run_is_immediate_and_voids_its_approval(
    harness: ToolHarness,
) -> None:
    run_id, _, approval = await _parked(harness)
    cancelled = await harness.client.post(f"/v1/runs/{run_id}/cancel", headers=harness.admin)
    assert (await cancelled.get_json())["status"] == "cancelled"
    status, body = await harness.decide(approval["id"], "approve")
    assert (status, body["error"]["details"]["status"]) == (409, "cancelled")
    assert (await harness.get(run_id))["status"] == "cancelled"
    # The call that waited is settled as not made, not left waiting for ever.
    (step,) = [s for s in await harness.steps(run_id) if s["kind"] == "tool_call"]
    assert (step["status"], step["output"]) == (
        "rejected",
        "the call was not made: the run was cancelled",
    )
    assert step["finished_at"] is not None
    assert step["decision"]["decided_by"] == "system"
    assert step["decision"]["approval_status"] == "cancelled"


async def test_an_approval_nobody_decides_expires_and_its_step_says_so(
    harness: ToolHarness,
) -> None:
    run_id, _, approval = await _parked(harness, approval_ttl_seconds=1)
    expired = await eventually(
        lambda: harness.client.get(f"/v1/approvals/{approval['id']}", headers=harness.admin),
        lambda r: r.status_code == 200,
    )
    assert expired.status_code == 200

    async def status_of_approval() -> str:
        response = await harness.client.get(
            f"/v1/approvals/{approval['id']}", headers=harness.admin
        )
        return str((await response.get_json())["status"])

    assert await eventually(status_of_approval, lambda s: s == "expired", within=5) == "expired"
    (step,) = await harness.steps(run_id)
    assert step["status"] == "expired", "nobody rejected it"
    assert "expired" in step["output"]
    decided = {k: step["decision"][k] for k in ("approval_status", "decided_by", "reason")}
    assert decided == {
        "approval_status": "expired",
        "decided_by": "approval-expiry",
        "reason": "no decision in time",
    }
    assert (await harness.get(run_id))["status"] == "queued"
    _, grant = await harness.claim(run_id)
    # The worker is told the call was not made, as for a rejection.
    assert grant["steps"][0]["status"] == "rejected"
    status, body = await harness.decide(approval["id"], "approve")
    assert (status, body["error"]["details"]["status"]) == (409, "expired")


async def test_a_non_idempotent_call_interrupted_by_a_crash_is_not_repeated_blindly(
    harness: ToolHarness, db: asyncpg.Pool
) -> None:
    await harness.policy({"id": "notes", "tool": "notes.*", "effect": "allow"})
    run_id, epoch = await harness.running(tools=["notes.*"])
    _, verdict = await harness.authorize(run_id, epoch, 1, "notes.write_note", {"text": "x"})
    assert verdict["verdict"] == "execute"
    await db.execute(
        "UPDATE runs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(run_id),
    )
    _, grant = await harness.claim(run_id, "w2")
    _, retry = await harness.authorize(run_id, grant["epoch"], 1, "notes.write_note", {"text": "x"})
    assert (retry["verdict"], retry["seq"]) == ("parked", 2)
    first, second = await harness.steps(run_id)
    assert first["status"] == "outcome_unknown"
    assert second["status"] == "waiting_approval"
    (approval,) = await harness.approvals(run_id=run_id)
    assert "may or may not" in approval["explanation"]


async def test_an_idempotent_call_interrupted_by_a_crash_is_simply_made_again(
    harness: ToolHarness, db: asyncpg.Pool
) -> None:
    await harness.policy(ALLOW_TIME)
    run_id, epoch = await harness.running(tools=["time.*"])
    await harness.authorize(run_id, epoch, 1, "time.now", idempotent=True)
    await db.execute(
        "UPDATE runs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(run_id),
    )
    _, grant = await harness.claim(run_id, "w2")
    _, again = await harness.authorize(run_id, grant["epoch"], 1, "time.now", idempotent=True)
    assert (again["verdict"], again["seq"]) == ("execute", 1)


async def test_step_and_time_budgets_are_checked_before_each_tool_call(
    harness: ToolHarness,
) -> None:
    await harness.policy(ALLOW_TIME)
    run_id, epoch = await harness.running(budget={"max_steps": 1}, tools=["time.*"])
    await harness.step(run_id, epoch, 1)
    status, body = await harness.authorize(run_id, epoch, 2, "time.now")
    assert (status, body["error"]["code"]) == (409, "budget_exceeded")
    assert (await harness.get(run_id))["error"] == "step budget exceeded: max_steps is 1"

    slow_id, slow_epoch = await harness.running(budget={"max_seconds": 0.3}, tools=["time.*"])
    await asyncio.sleep(0.4)
    status, body = await harness.authorize(slow_id, slow_epoch, 1, "time.now")
    assert (status, body["error"]["code"]) == (409, "budget_exceeded")
    slow = await harness.get(slow_id)
    assert slow["status"] == "budget_exceeded"
    assert "> max_seconds 0.3" in slow["error"]


async def test_the_worker_ends_a_run_over_budget_before_a_model_call(harness: ToolHarness) -> None:
    run_id, epoch = await harness.running(budget={"max_cost_usd": 1.0})
    error = "cost budget cannot be enforced: max_cost_usd is 1.0 but this model's price is unknown"
    body = {"epoch": epoch, "status": "budget_exceeded", "error": error}
    assert (await harness.call(run_id, "fail", body))[0] == 204
    run = await harness.get(run_id)
    assert (run["status"], run["error"], run["steps_count"]) == ("budget_exceeded", error, 0)


async def test_asking_to_call_a_tool_at_a_model_call_step_is_a_mismatch(
    harness: ToolHarness,
) -> None:
    await harness.policy({"id": "notes", "tool": "notes.*", "effect": "allow"})
    run_id, epoch = await harness.running(tools=["notes.*"])
    assert (await harness.step(run_id, epoch, 1))[0] == 200
    status, body = await harness.authorize(run_id, epoch, 1, "notes.write_note", {"text": "x"})
    assert (status, body["error"]["code"]) == (409, "step_mismatch"), body
