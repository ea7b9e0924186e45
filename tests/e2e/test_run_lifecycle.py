"""A run travels API → PostgreSQL → outbox → stream → worker → LiteLLM → callbacks."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from services.contract.jobs import JobMessage, JobReason, StreamNames
from services.devstack.demo_llm import Reply
from testbed.streams import append
from testbed.waiting import eventually
from tests.conftest import PRICE_IN, PRICE_OUT
from tests.e2e.conftest import Stack
from tests.e2e.driving import (
    TERMINAL,
    get_run,
    list_steps,
    register_agent,
    start_run,
    unique_prompt,
    wait_finished,
)


async def test_a_run_completes_with_the_scripted_answer_tokens_cost_and_steps(
    stack: Stack,
) -> None:
    agent = await register_agent(
        stack, system_prompt="Answer with one word.", params={"temperature": 0.1}
    )
    prompt = unique_prompt("Capital of France?")
    stack.llm.script(
        prompt, Reply(content="Paris.", prompt_tokens=84, completion_tokens=34, delay_seconds=1.0)
    )
    created = await start_run(stack, agent, prompt)
    assert created["status"] == "queued"

    seen = [created["status"]]

    async def status() -> dict[str, Any]:
        run = await get_run(stack, created["id"])
        if run["status"] != seen[-1]:
            seen.append(run["status"])
        return run

    run = await eventually(status, lambda r: r["status"] in TERMINAL, within=20)
    assert seen == ["queued", "running", "completed"]
    assert run["output"] == "Paris."
    assert run["error"] is None
    assert run["usage"]["prompt_tokens"] == 84
    assert run["usage"]["completion_tokens"] == 34
    assert run["usage"]["total_tokens"] == 118
    assert run["usage"]["cost_usd"] == pytest.approx(84 * PRICE_IN + 34 * PRICE_OUT)
    assert run["steps_count"] == 1
    assert run["started_at"] <= run["finished_at"]

    (step,) = await list_steps(stack, created["id"])
    assert (step["seq"], step["kind"], step["status"]) == (1, "llm_call", "completed")
    assert step["model"] == "openai/scripted"
    assert step["input"]["messages"] == [
        {"role": "system", "content": "Answer with one word."},
        {"role": "user", "content": prompt},
    ]
    assert step["output"]["message"] == {"role": "assistant", "content": "Paris."}
    assert step["usage"]["total_tokens"] == 118
    assert stack.llm.calls[prompt] == 1
    sent = next(b for b in stack.llm.bodies if b["messages"][-1]["content"] == prompt)
    assert sent["temperature"] == 0.1


async def test_an_unpriced_model_records_cost_as_unknown(stack: Stack) -> None:
    agent = await register_agent(stack, model="unpriced")
    run = await wait_finished(stack, (await start_run(stack, agent, unique_prompt("hi")))["id"])
    assert run["status"] == "completed"
    assert run["usage"]["total_tokens"] > 0
    assert run["usage"]["cost_usd"] is None


async def test_a_known_model_is_priced_from_litellms_map(stack: Stack) -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    prices = litellm.model_cost["gpt-4o-mini"]
    agent = await register_agent(stack, model="mapped")
    prompt = unique_prompt("price me")
    stack.llm.script(prompt, Reply(content="ok", prompt_tokens=1000, completion_tokens=100))
    run = await wait_finished(stack, (await start_run(stack, agent, prompt))["id"])
    expected = 1000 * prices["input_cost_per_token"] + 100 * prices["output_cost_per_token"]
    assert run["usage"]["cost_usd"] == pytest.approx(expected)


async def test_a_provider_error_fails_the_run_with_its_message(stack: Stack) -> None:
    agent = await register_agent(stack)
    prompt = unique_prompt("break")
    stack.llm.script(prompt, Reply(content="the model is on fire", error_status=400))
    run = await wait_finished(stack, (await start_run(stack, agent, prompt))["id"])
    assert run["status"] == "failed"
    assert "the model is on fire" in run["error"]
    (step,) = await list_steps(stack, run["id"])
    assert step["status"] == "failed"
    assert "the model is on fire" in step["error"]


async def test_duplicate_stream_messages_execute_the_run_once(stack: Stack, redis: Redis) -> None:
    agent = await register_agent(stack)
    prompt = unique_prompt("once only")
    stack.llm.script(prompt, Reply(content="done", delay_seconds=1.0))
    run_id = (await start_run(stack, agent, prompt))["id"]
    streams = StreamNames(stack.prefix)
    duplicate = JobMessage(run_id=uuid.UUID(run_id), reason=JobReason.REQUEUED).to_fields()
    for _ in range(5):
        await append(redis, streams.runs, duplicate)
    run = await wait_finished(stack, run_id)
    for _ in range(3):
        await append(redis, streams.runs, duplicate)
    await eventually(
        lambda: redis.xpending(streams.runs, streams.group), lambda p: p["pending"] == 0
    )
    assert run["status"] == "completed"
    assert stack.llm.calls[prompt] == 1
    assert len(await list_steps(stack, run_id)) == 1


async def test_cancelling_a_running_run_stops_its_worker(stack: Stack) -> None:
    agent = await register_agent(stack)
    slow = unique_prompt("slow")
    stack.llm.script(slow, Reply(content="too late", delay_seconds=6.0))
    run_id = (await start_run(stack, agent, slow))["id"]
    await eventually(lambda: get_run(stack, run_id), lambda r: r["status"] == "running")
    response = await stack.api.post(f"/v1/runs/{run_id}/cancel")
    assert response.json()["status"] == "cancelled"
    await asyncio.sleep(2.5)
    run = await get_run(stack, run_id)
    assert (run["status"], run["output"], run["steps_count"]) == ("cancelled", None, 0)
    assert "dropped" in "".join(w.log() for w in stack.workers)


async def test_many_runs_in_flight_all_complete_once(stack: Stack) -> None:
    agent = await register_agent(stack)
    prompts = [unique_prompt(f"parallel {i}") for i in range(40)]
    for prompt in prompts:
        stack.llm.script(prompt, Reply(content=f"answer to {prompt}", delay_seconds=0.5))
    runs = await asyncio.gather(*(start_run(stack, agent, p) for p in prompts))
    finished = await asyncio.gather(*(wait_finished(stack, r["id"]) for r in runs))
    assert [r["output"] for r in finished] == [f"answer to {p}" for p in prompts]
    assert all(stack.llm.calls[p] == 1 for p in prompts)


async def test_the_model_is_asked_for_no_more_than_the_token_budget_leaves(stack: Stack) -> None:
    agent = await register_agent(stack, budget={"max_tokens": 300})
    prompt = unique_prompt("budgeted")
    stack.llm.script(prompt, Reply(content="short", prompt_tokens=100, completion_tokens=50))
    run = await wait_finished(stack, (await start_run(stack, agent, prompt))["id"])
    assert run["status"] == "completed"
    sent = next(b for b in stack.llm.bodies if b["messages"][-1]["content"] == prompt)
    assert 0 < sent["max_tokens"] < 300


async def test_a_run_over_its_token_budget_ends_budget_exceeded_naming_the_limit(
    stack: Stack,
) -> None:
    agent = await register_agent(stack, budget={"max_tokens": 50})
    prompt = unique_prompt("greedy")
    stack.llm.script(prompt, Reply(content="way too long", prompt_tokens=40, completion_tokens=40))
    run = await wait_finished(stack, (await start_run(stack, agent, prompt))["id"])
    assert run["status"] == "budget_exceeded"
    assert "max_tokens" in run["error"]
