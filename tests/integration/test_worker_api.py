"""The worker callback API: claims, fencing epochs, idempotent steps, budgets, and the
final step that completes its run."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from services.contract.events import RunChanged
from tests.support.harness import Harness, usage


async def test_claim_grants_epoch_one_and_the_run_context(harness: Harness) -> None:
    run_id = await harness.run(system_prompt="Be brief.", budget={"max_steps": 3})
    status, grant = await harness.claim(run_id)
    assert status == 200
    assert grant["epoch"] == 1
    assert grant["input"] == "hello"
    assert grant["agent"]["system_prompt"] == "Be brief."
    assert grant["agent"]["budget"]["max_steps"] == 3
    assert grant["steps"] == []
    assert grant["spent"]["usage"] == usage(0, 0, 0.0)
    assert 0 <= grant["spent"]["elapsed_seconds"] < 5
    run = await harness.get(run_id)
    assert run["status"] == "running"
    assert run["started_at"] is not None


async def test_a_live_lease_cannot_be_claimed_twice(harness: Harness) -> None:
    run_id = await harness.run()
    await harness.claim(run_id, "w1")
    status, body = await harness.claim(run_id, "w2")
    assert status == 409
    assert body["error"]["code"] == "lease_held"


async def test_finished_and_unknown_runs_are_not_claimable(harness: Harness) -> None:
    run_id = await harness.run()
    await harness.client.post(f"/v1/runs/{run_id}/cancel", headers=harness.admin)
    status, body = await harness.claim(run_id)
    assert (status, body["error"]["code"]) == (409, "run_not_claimable")
    status, _ = await harness.claim(str(uuid.uuid4()))
    assert status == 404


async def test_expired_lease_is_reclaimed_with_a_higher_epoch_and_the_old_one_is_fenced(
    harness: Harness, db: asyncpg.Pool
) -> None:
    run_id = await harness.run()
    _, first = await harness.claim(run_id, "w1")
    assert (await harness.step(run_id, first["epoch"], 1, usage=usage(5, 5, 0.1)))[0] == 200
    await db.execute(
        "UPDATE runs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(run_id),
    )
    status, second = await harness.claim(run_id, "w2")
    assert status == 200
    assert second["epoch"] == first["epoch"] + 1
    assert [(s["seq"], s["status"]) for s in second["steps"]] == [(1, "completed")]
    assert second["steps"][0]["output"] == {"message": {"role": "assistant", "content": "step 1"}}
    assert second["spent"]["usage"] == usage(5, 5, 0.1)
    for action, body in [
        ("heartbeat", {"epoch": first["epoch"]}),
        ("complete", {"epoch": first["epoch"], "output": "late"}),
        ("fail", {"epoch": first["epoch"], "error": "late"}),
    ]:
        status, refused = await harness.call(run_id, action, body)
        assert (status, refused["error"]["code"]) == (409, "stale_epoch"), action
    status, refused = await harness.step(run_id, first["epoch"], 2)
    assert (status, refused["error"]["code"]) == (409, "stale_epoch")
    assert (await harness.get(run_id))["status"] == "running"


async def test_steps_add_usage_once_even_when_replayed(harness: Harness) -> None:
    run_id = await harness.run()
    _, grant = await harness.claim(run_id)
    epoch = grant["epoch"]
    _, first = await harness.step(run_id, epoch, 1, usage=usage(10, 5, 0.25))
    assert first["replayed"] is False
    assert first["spent"]["usage"] == usage(10, 5, 0.25)
    status, ack = await harness.step(run_id, epoch, 1, usage=usage(10, 5, 0.25))
    assert (status, ack["replayed"]) == (200, True)
    assert ack["spent"]["usage"] == usage(10, 5, 0.25)
    _, second = await harness.step(run_id, epoch, 2, usage=usage(1, 2, 0.5))
    assert second["spent"]["usage"] == usage(11, 7, 0.75)
    assert second["spent"]["elapsed_seconds"] >= first["spent"]["elapsed_seconds"]
    run = await harness.get(run_id)
    assert run["steps_count"] == 2
    assert run["usage"] == usage(11, 7, 0.75)


async def test_a_started_step_is_finished_in_place(harness: Harness) -> None:
    run_id = await harness.run()
    _, grant = await harness.claim(run_id)
    await harness.step(run_id, grant["epoch"], 1, status="started", output=None, finished_at=None)
    await harness.step(run_id, grant["epoch"], 1, usage=usage(3, 4, None))
    steps = await (
        await harness.client.get(f"/v1/runs/{run_id}/steps", headers=harness.admin)
    ).get_json()
    assert [(s["seq"], s["status"]) for s in steps["items"]] == [(1, "completed")]
    assert steps["items"][0]["usage"] == usage(3, 4, None)


async def test_steps_must_come_in_order(harness: Harness) -> None:
    run_id = await harness.run()
    _, grant = await harness.claim(run_id)
    status, body = await harness.step(run_id, grant["epoch"], 2)
    assert (status, body["error"]["code"]) == (409, "step_out_of_order")


async def test_an_unpriced_step_makes_the_run_cost_unknown(harness: Harness) -> None:
    run_id = await harness.run()
    _, grant = await harness.claim(run_id)
    await harness.step(run_id, grant["epoch"], 1, usage=usage(1, 1, 0.5))
    await harness.step(run_id, grant["epoch"], 2, usage=usage(1, 1, None))
    await harness.step(run_id, grant["epoch"], 3, usage=usage(1, 1, 0.5))
    assert (await harness.get(run_id))["usage"]["cost_usd"] is None


async def test_a_run_has_no_cost_until_a_model_call_is_counted(harness: Harness) -> None:
    """Never a silent 0: a queued or just-claimed run shows `null`, as does its feed event,
    and the first counted call gives it a cost."""
    run_id = await harness.run()
    assert (await harness.get(run_id))["usage"]["cost_usd"] is None
    _, grant = await harness.claim(run_id)
    assert (await harness.get(run_id))["usage"]["cost_usd"] is None
    await harness.step(run_id, grant["epoch"], 1, usage=usage(3, 4, 0.25))
    assert (await harness.get(run_id))["usage"]["cost_usd"] == 0.25
    queued = {"project": "p", "run_id": run_id, "agent": "a", "status": "queued", "steps": 0}
    assert RunChanged.model_validate({**queued, "cost_usd": 0}).cost_usd is None
    counted = {**queued, "prompt_tokens": 3, "completion_tokens": 4, "cost_usd": 0.25}
    assert RunChanged.model_validate(counted).cost_usd == 0.25


async def test_the_step_budget_is_enforced_by_the_gateway(harness: Harness) -> None:
    run_id = await harness.run(budget={"max_steps": 1})
    _, grant = await harness.claim(run_id)
    assert (await harness.step(run_id, grant["epoch"], 1))[0] == 200
    status, body = await harness.step(run_id, grant["epoch"], 2)
    assert (status, body["error"]["code"]) == (409, "budget_exceeded")
    run = await harness.get(run_id)
    assert run["status"] == "budget_exceeded"
    assert "max_steps" in run["error"]
    assert run["steps_count"] == 1


async def test_a_step_over_the_token_budget_is_kept_and_ends_the_run(harness: Harness) -> None:
    run_id = await harness.run(budget={"max_tokens": 10})
    _, grant = await harness.claim(run_id)
    status, body = await harness.step(run_id, grant["epoch"], 1, usage=usage(8, 8, None))
    assert (status, body["error"]["code"]) == (409, "budget_exceeded")
    run = await harness.get(run_id)
    assert (run["status"], run["steps_count"]) == ("budget_exceeded", 1)
    assert run["usage"]["total_tokens"] == 16


async def _audit(harness: Harness, run_id: str) -> list[str]:
    response = await harness.client.get(
        f"/v1/audit?limit=500&target=run:{run_id}", headers=harness.admin
    )
    return [event["action"] for event in reversed((await response.get_json())["items"])]


async def test_the_final_step_records_the_answer_and_completes_the_run(harness: Harness) -> None:
    run_id = await harness.run()
    _, grant = await harness.claim(run_id)
    status, ack = await harness.step(
        run_id, grant["epoch"], 1, usage=usage(3, 4, 0.5), final_output="the answer"
    )
    assert status == 200
    assert (ack["seq"], ack["status"], ack["replayed"]) == (1, "completed", False)
    assert ack["lease_expires_at"] is None
    assert ack["spent"]["usage"] == usage(3, 4, 0.5)
    run = await harness.get(run_id)
    assert (run["status"], run["output"], run["error"]) == ("completed", "the answer", None)
    assert run["finished_at"] is not None
    assert (run["steps_count"], run["usage"]) == (1, usage(3, 4, 0.5))
    # The relay may dispatch the job after the test's own claim: that event's place varies.
    lease = [action for action in await _audit(harness, run_id) if action != "run.dispatched"]
    assert lease[-3:] == ["run.claimed", "step.recorded", "run.completed"]


async def test_a_replayed_final_step_is_acknowledged_and_changes_nothing(harness: Harness) -> None:
    run_id = await harness.run()
    _, grant = await harness.claim(run_id)
    epoch = grant["epoch"]
    await harness.step(run_id, epoch, 1, usage=usage(3, 4, 0.5), final_output="the answer")
    finished = (await harness.get(run_id))["finished_at"]
    status, ack = await harness.step(run_id, epoch, 1, usage=usage(3, 4, 0.5), final_output="again")
    assert status == 200
    assert (ack["status"], ack["replayed"], ack["lease_expires_at"]) == ("completed", True, None)
    assert ack["spent"]["usage"] == usage(3, 4, 0.5)
    run = await harness.get(run_id)
    assert (run["status"], run["output"], run["finished_at"]) == (
        "completed",
        "the answer",
        finished,
    )
    assert run["usage"] == usage(3, 4, 0.5)
    assert (await _audit(harness, run_id)).count("run.completed") == 1
    # Anything else for the finished run is still refused.
    for seq, fields in [(2, {"final_output": "more"}), (1, {})]:
        status, body = await harness.step(run_id, epoch, seq, **fields)
        assert (status, body["error"]["code"]) == (409, "run_not_running"), (seq, fields)
    status, body = await harness.call(run_id, "complete", {"epoch": epoch, "output": "43"})
    assert (status, body["error"]["code"]) == (409, "run_not_running")


async def test_a_final_step_from_a_stale_lease_is_refused(
    harness: Harness, db: asyncpg.Pool
) -> None:
    run_id = await harness.run()
    _, first = await harness.claim(run_id, "w1")
    await db.execute(
        "UPDATE runs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(run_id),
    )
    _, second = await harness.claim(run_id, "w2")
    await harness.step(run_id, second["epoch"], 1, final_output="from w2")
    status, body = await harness.step(run_id, first["epoch"], 1, final_output="from w1")
    assert (status, body["error"]["code"]) == (409, "stale_epoch")
    assert (await harness.get(run_id))["output"] == "from w2"


async def test_a_final_step_over_the_budget_ends_the_run_over_budget(harness: Harness) -> None:
    run_id = await harness.run(budget={"max_tokens": 10})
    _, grant = await harness.claim(run_id)
    status, body = await harness.step(
        run_id, grant["epoch"], 1, usage=usage(8, 8, None), final_output="too dear"
    )
    assert (status, body["error"]["code"]) == (409, "budget_exceeded")
    run = await harness.get(run_id)
    assert (run["status"], run["output"]) == ("budget_exceeded", None)
    assert "max_tokens is 10" in run["error"]
    assert "run.completed" not in await _audit(harness, run_id)


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "tool_call", "tool": "time.now", "output": "12:00"},
        {"status": "failed", "error": "provider said no"},
        {"status": "started", "finished_at": None},
    ],
)
async def test_only_a_completed_model_call_can_be_final(
    harness: Harness, fields: dict[str, Any]
) -> None:
    run_id = await harness.run()
    _, grant = await harness.claim(run_id)
    status, _ = await harness.step(run_id, grant["epoch"], 1, final_output="answer", **fields)
    assert status == 400
    assert (await harness.get(run_id))["status"] == "running"


async def test_complete_records_the_answer_once(harness: Harness) -> None:
    run_id = await harness.run()
    _, grant = await harness.claim(run_id)
    assert (await harness.call(run_id, "complete", {"epoch": grant["epoch"], "output": "42"}))[
        0
    ] == 204
    run = await harness.get(run_id)
    assert (run["status"], run["output"]) == ("completed", "42")
    assert run["finished_at"] is not None
    status, body = await harness.call(run_id, "complete", {"epoch": grant["epoch"], "output": "43"})
    assert (status, body["error"]["code"]) == (409, "run_not_running")
    assert (await harness.get(run_id))["output"] == "42"


async def test_fail_records_the_reason(harness: Harness) -> None:
    run_id = await harness.run()
    _, grant = await harness.claim(run_id)
    await harness.call(run_id, "fail", {"epoch": grant["epoch"], "error": "provider said no"})
    run = await harness.get(run_id)
    assert (run["status"], run["error"]) == ("failed", "provider said no")


async def test_cancelling_a_running_run_refuses_its_worker(harness: Harness) -> None:
    run_id = await harness.run()
    _, grant = await harness.claim(run_id)
    cancelled = await harness.client.post(f"/v1/runs/{run_id}/cancel", headers=harness.admin)
    assert (await cancelled.get_json())["status"] == "cancelled"
    status, body = await harness.call(run_id, "heartbeat", {"epoch": grant["epoch"]})
    assert (status, body["error"]["code"]) == (409, "run_not_running")
    assert body["error"]["details"]["status"] == "cancelled"


async def test_only_worker_keys_reach_the_worker_api(harness: Harness) -> None:
    run_id = await harness.run()
    response = await harness.client.post(
        f"/v1/worker/runs/{run_id}/claim", json={"worker_id": "x"}, headers=harness.admin
    )
    assert response.status_code == 401


async def test_a_report_repeated_while_the_first_is_written_is_a_replay(
    harness: Harness,
) -> None:
    """A worker that repeats a callback after a 502 or a dropped connection may send it
    while the first is still being written: the second waits for the run's lock and must
    then see the step the first recorded, not refuse it as out of order."""
    for final in (None, "the answer"):
        run_id = await harness.run()
        _, grant = await harness.claim(run_id)
        fields = {"usage": usage(5, 5, 0.1), "final_output": final}
        answers = await asyncio.gather(
            *(harness.step(run_id, grant["epoch"], 1, **fields) for _ in range(2))
        )
        assert sorted(status for status, _ in answers) == [200, 200], answers
        assert sorted(body["replayed"] for _, body in answers) == [False, True]
        assert (await harness.get(run_id))["usage"] == usage(5, 5, 0.1)
