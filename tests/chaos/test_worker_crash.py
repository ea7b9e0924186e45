"""Workers killed with SIGKILL in the middle of runs: during a model call, during a
non-idempotent tool call, and between steps, with other runs in flight around them.

Another worker takes each run over (its stream entry reclaimed or the run re-published,
a new claim under a higher epoch), and nothing that was recorded happens twice: a model
answer is never recorded again, and a tool call that may have had its effect is never
made again without a human saying so. A worker that was only frozen (SIGSTOP) past its
lease comes back to find its run taken, and what it reports late is refused.
"""

from __future__ import annotations

from testbed.waiting import eventually
from tests.chaos.driving import decide_pending_approval, kill_holder_when, steps
from tests.chaos.invariants import assert_invariants
from tests.support.chaos_load import Integration, Workload
from tests.support.chaos_stack import ChaosStack, Slot


async def test_runs_survive_workers_killed_mid_model_call_mid_tool_call_and_between_steps(
    chaos: ChaosStack,
) -> None:
    await chaos.steady()
    agent = await chaos.agent("crash")
    work = Workload(chaos.llm, "crash")
    client = Integration(chaos.url, chaos.admin_key)
    try:
        for _ in range(4):
            await client.start_run(agent, work.mixed())
        mid_model = work.slow(6)
        in_model = await client.start_run(agent, mid_model)
        assert in_model is not None
        for _ in range(4):
            await client.start_run(agent, work.mixed())

        async def model_asked() -> bool:
            return chaos.llm.turn_calls[(mid_model, 0)] >= 1 and not await steps(chaos, in_model)

        await kill_holder_when(chaos, in_model, model_asked)

        mid_tool = work.slow_tool(8)
        in_tool = await client.start_run(agent, mid_tool)
        assert in_tool is not None

        async def tool_running() -> bool:
            recorded = await steps(chaos, in_tool)
            return (
                len(recorded) == 2
                and recorded[1]["status"] == "started"
                and chaos.notes()[work.notes[mid_tool]] == 1
            )

        await kill_holder_when(chaos, in_tool, tool_running)

        stepping = work.noting(answer_seconds=4)
        between = await client.start_run(agent, stepping)
        assert between is not None

        async def tool_done() -> bool:
            recorded = await steps(chaos, between)
            return len(recorded) == 2 and recorded[1]["status"] == "completed"

        await kill_holder_when(chaos, between, tool_done)
        for _ in range(4):
            await client.start_run(agent, work.mixed())

        # The call that may have written its note is not made again: it waits for a human.
        await decide_pending_approval(chaos, in_tool, "reject", "the note is already there")
        await assert_invariants(chaos, client.accepted, [agent])
    finally:
        await client.aclose()

    model_steps = await steps(chaos, in_model)
    assert [(s["kind"], s["status"]) for s in model_steps] == [("llm_call", "completed")]
    assert chaos.llm.turn_calls[(mid_model, 0)] == 2, "the lost answer is asked for again"
    assert model_steps[0]["epoch"] >= 2, "recorded under a new claim's higher epoch"

    tool_steps = await steps(chaos, in_tool)
    assert [(s["kind"], s["status"], s["tool"]) for s in tool_steps] == [
        ("llm_call", "completed", None),
        ("tool_call", "outcome_unknown", "notes.slow_note"),
        ("tool_call", "rejected", "notes.slow_note"),
        ("llm_call", "completed", None),
    ]
    assert chaos.notes()[work.notes[mid_tool]] == 1

    between_steps = await steps(chaos, between)
    assert [(s["kind"], s["status"]) for s in between_steps] == [
        ("llm_call", "completed"),
        ("tool_call", "completed"),
        ("llm_call", "completed"),
    ]
    assert chaos.notes()[work.notes[stepping]] == 1
    runs = await chaos.db.fetch(
        "SELECT status FROM runs WHERE agent_name = $1 AND status <> 'completed'", agent
    )
    assert not runs, "every run of the scenario completed"


async def test_a_worker_frozen_past_its_lease_finds_its_run_taken_and_its_late_report_refused(
    chaos: ChaosStack,
) -> None:
    agent = await chaos.agent("frozen")
    work = Workload(chaos.llm, "frozen")
    client = Integration(chaos.url, chaos.admin_key)
    try:
        text = work.slow(4)
        run_id = await client.start_run(agent, text)
        assert run_id is not None

        async def asked() -> Slot | None:
            return await chaos.holder(run_id) if chaos.llm.turn_calls[(text, 0)] else None

        frozen = await eventually(asked, lambda slot: slot is not None, within=30)
        assert frozen is not None
        assert frozen.current is not None
        proc = frozen.current
        frozen.freeze()
        try:
            # Its lease runs out; the run is taken over under a higher epoch and finished.
            await assert_invariants(chaos, client.accepted, [agent])
        finally:
            frozen.thaw()

        async def turned_away() -> bool:
            """Back, it reports what it got under the old epoch, and is refused."""
            return f"run {run_id} dropped: stale_epoch" in proc.log()

        await eventually(turned_away, bool, within=15)
    finally:
        await client.aclose()
    recorded = await steps(chaos, run_id)
    assert [(s["kind"], s["status"]) for s in recorded] == [("llm_call", "completed")]
    run = (await chaos.api.get(f"/v1/runs/{run_id}")).json()
    assert (run["status"], run["output"]) == ("completed", "ok"), "the second worker's answer"
    claims = await chaos.db.fetch(
        "SELECT actor, details FROM audit_events WHERE target = $1 AND action = 'run.claimed'"
        " ORDER BY id",
        f"run:{run_id}",
    )
    assert claims[0]["actor"].startswith(f"{frozen.ident} (")  # its label, then its key
    assert recorded[0]["epoch"] == claims[-1]["details"]["epoch"] > claims[0]["details"]["epoch"]
