"""The model provider failing: a passing failure (overloaded, rate limited) is retried
with backoff and the run goes on as if nothing happened; a permanent one (a bad request)
fails the step and the run at once, with the provider's message."""

from __future__ import annotations

import uuid

from services.devstack.demo_llm import Reply
from tests.chaos.driving import steps
from tests.chaos.invariants import assert_invariants
from tests.support.chaos_load import Integration
from tests.support.chaos_stack import ChaosStack


async def test_transient_model_errors_are_retried_and_a_permanent_one_fails_with_its_message(
    chaos: ChaosStack,
) -> None:
    agent = await chaos.agent("flaky-model")
    flaky = f"flaky {uuid.uuid4().hex[:8]}"
    chaos.llm.script(
        flaky,
        [
            Reply(content="the model is overloaded", error_status=503),
            Reply(content="rate limited", error_status=429),
            Reply(content="fine after all"),
        ],
    )
    broken = f"broken {uuid.uuid4().hex[:8]}"
    chaos.llm.script(broken, Reply(content="unknown parameter: temperature2", error_status=400))
    client = Integration(chaos.url, chaos.admin_key)
    try:
        flaky_id = await client.start_run(agent, flaky)
        broken_id = await client.start_run(agent, broken)
        assert flaky_id is not None
        assert broken_id is not None
        await assert_invariants(chaos, client.accepted, [agent])
    finally:
        await client.aclose()

    flaky_run = (await chaos.api.get(f"/v1/runs/{flaky_id}")).json()
    assert (flaky_run["status"], flaky_run["output"]) == ("completed", "fine after all")
    assert [(s["kind"], s["status"]) for s in await steps(chaos, flaky_id)] == [
        ("llm_call", "completed")
    ]
    assert chaos.llm.turn_calls[(flaky, 0)] == 3

    broken_run = (await chaos.api.get(f"/v1/runs/{broken_id}")).json()
    assert broken_run["status"] == "failed"
    assert "unknown parameter: temperature2" in broken_run["error"]
    assert [(s["kind"], s["status"]) for s in await steps(chaos, broken_id)] == [
        ("llm_call", "failed")
    ]
    assert chaos.llm.turn_calls[(broken, 0)] == 1, "a bad request is not retried"
